"""API load: `GET /v1/jobs/{id}`, `GET /v1/jobs` and `POST /v1/jobs` under 64 concurrent clients.

Target (GET one job): at least 1,500 requests/s with p99 under 50 ms on loopback, worker idle.

    python bench/api_load.py [--workers 1 2] [--duration 10] [--connections 64] [--record]
                             [--profile get]            # py-spy the first API process during that run

The server runs as in production (`uvicorn api.main:app --workers N`, uvloop + httptools,
access log on) against a private Postgres database; the load comes from `wrk` (C, 2 threads,
keep-alive connections; `apt-get install -y wrk`) through bench/api_load.lua, which rotates
64 API keys of one tenant (the per-key rate limit, 200/s by default, stays in force) and 64
job ids. wrk shares the 2 CPUs with the server, so the figures are a lower bound of what the
server does on a machine of its own.

Alternatives measured in the same run: `GET /healthz` through the same app (FastAPI's floor:
routing, one middleware, a sync route in the threadpool, pydantic serialisation) and a bare
Starlette async route on the same uvicorn (`--bare`, the server's floor).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import common
import procfs
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

LUA = Path(__file__).with_name("api_load.lua")
TARGET_RPS, TARGET_P99_MS = 1500.0, 50.0
SEED_JOBS = 1000  # jobs in the tenant's table before the runs (list pages and lookups see a real index)
KEYS = 64
CASES = ("healthz", "get", "list", "post")


async def _bare(_: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


# `uvicorn --app-dir bench api_load:bare_app`: the floor of uvicorn + Starlette on this machine.
bare_app = Starlette(routes=[Route("/healthz", _bare)])


# ---------------------------------------------------------------- setup


def seed_jobs(stack: common.Stack, dataset_id: str, n: int) -> list[str]:
    """`n` queued jobs of the dataset's tenant, inserted directly (as POST would, minus the broker)."""
    from ganft.db.session import session_scope
    from ganft.db.tables import Dataset
    from ganft.repo import jobs
    from ganft_core.config import HYPERPARAMETERS

    hp = HYPERPARAMETERS["ssgan"].model_validate({"steps": 100}).model_dump(mode="json")
    ids = []
    with session_scope(stack.engine()) as session:
        tenant_id = session.get_one(Dataset, dataset_id).tenant_id
        for i in range(n):
            job = jobs.create(
                session, tenant_id=tenant_id, method="ssgan", dataset_id=dataset_id, validation_dataset_id=None,
                base_model_id=None, evaluator_model_id=None, hyperparameters=hp, seed=i, max_runtime_s=None,
                metadata={"bench": str(i)}, total_steps=100, max_attempts=3, idempotency_key=None,
                request_hash="0" * 64,
            )  # fmt: skip
            ids.append(job.id)
    return ids


# ---------------------------------------------------------------- wrk


def run_wrk(
    url: str, *, paths: list[str], keys: list[str], duration_s: int, connections: int, threads: int,
    method: str = "GET", body_file: Path | None = None, server_pids: list[int] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """One wrk run; with `server_pids`, also the server's CPU time per request (robust to a busy machine)."""
    env = {
        "WRK_METHOD": method,
        "WRK_PATHS": ",".join(paths),
        "WRK_KEYS": ",".join(keys),
        "WRK_BODY_FILE": str(body_file or ""),
        "PATH": "/usr/bin:/bin",
    }
    load = common.load_average()
    command = [
        "wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration_s}s", "--timeout", "10s",
        "-s", str(LUA), url,
    ]  # fmt: skip
    pids = server_pids or []
    cpu_before, everyone_before = sum(procfs.cpu_seconds(p) for p in pids), procfs.cpu_by_process()
    busy_before, children_before = procfs.machine_busy_seconds(), _children_cpu()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    cpu = sum(procfs.cpu_seconds(p) for p in pids) - cpu_before
    split = procfs.cpu_split(everyone_before, procfs.cpu_by_process(), {"server": set(pids), "postgres": "postgres"})
    split["wrk"] = _children_cpu() - children_before  # wrk has exited: its time is in our children's rusage
    # `other`: the machine's busy time not spent by the three (other processes, short-lived ones, the kernel)
    split["other"] = procfs.machine_busy_seconds() - busy_before - split["server"] - split["postgres"] - split["wrk"]
    line = next(x for x in done.stdout.splitlines() if x.startswith("WRK_JSON "))
    raw = json.loads(line.removeprefix("WRK_JSON "))
    errors = sum(raw[k] for k in raw if k.startswith("errors_"))
    return {
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "requests": raw["requests"],
        "server_cpu_ms_per_request": 1000 * cpu / max(raw["requests"], 1) if pids else None,
        "errors": errors,
        # CPU seconds per second of the run, by who used them ("other": the rest of the machine's work)
        "cores_used": {group: round(seconds / (raw["duration_us"] / 1e6), 2) for group, seconds in split.items()},
        "load_before": load,
        "raw": raw,
    }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def db_sessions(stack: common.Stack) -> int:
    """Connections ever opened to the stack's database (pg_stat_database.sessions, Postgres >= 14)."""
    from sqlalchemy import text

    with stack.engine().connect() as connection:
        connection.execute(text("SELECT pg_stat_clear_snapshot()"))
        query = "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
        return int(connection.execute(text(query)).scalar_one())


def profile(pid: int, seconds: int, out: Path) -> subprocess.Popen[bytes] | None:
    """Start `py-spy record` (collapsed stacks) on `pid` for `seconds`; None when py-spy is absent."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        print("py-spy not found (pip install py-spy): no profile", file=sys.stderr)
        return None
    command = [py_spy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "250",
               "--gil", "--format", "raw", "--nonblocking", "--output", str(out)]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarise_profile(path: Path, top: int = 30) -> str:
    """Inclusive share of samples per function (each function counted once per stack)."""
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        for frame in set(stack.split(";")):
            inclusive[frame.split(" (")[0] + " " + frame.rsplit("/", 1)[-1].split(":")[0]] += count
    rows = [f"{100 * n / max(total, 1):5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    return f"{total} samples\n" + "\n".join(rows)


# ---------------------------------------------------------------- runs


def measure(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": common.machine().__dict__, "runs": []}
    with common.service_stack() as stack, tempfile.TemporaryDirectory() as tmp:
        keys = stack.create_keys("bench", KEYS)
        stack.create_keys("other-tenant", 1)
        with common.api_server(stack, workers=1) as api:
            dataset_id = common.upload_small_dataset(api.url, keys[0])
        job_ids = seed_jobs(stack, dataset_id, max(args.seed_jobs, KEYS))
        body = Path(tmp) / "job.json"
        body.write_text(json.dumps({"method": "ssgan", "dataset_id": dataset_id, "hyperparameters": {"steps": 100}}))
        cases: dict[str, tuple[str, list[str], dict[str, Any]]] = {
            "healthz": ("GET /healthz", ["/healthz"], {}),
            "get": ("GET /v1/jobs/{id}", [f"/v1/jobs/{j}" for j in job_ids[-KEYS:]], {}),
            "list": ("GET /v1/jobs (50 per page)", ["/v1/jobs"], {}),
            "post": ("POST /v1/jobs", ["/v1/jobs"], {"method": "POST", "body_file": body}),
        }

        def load(api: common.ApiServer, case: str, *, duration_s: int) -> dict[str, Any]:
            _, paths, kw = cases[case]
            opened = db_sessions(stack)
            run = run_wrk(
                api.url, paths=paths, keys=keys, duration_s=duration_s, connections=args.connections,
                threads=args.threads, server_pids=api.worker_pids(), **kw,
            )  # fmt: skip
            time.sleep(1)  # closed connections reach the statistics
            run["db_connections_opened"] = db_sessions(stack) - opened
            return run

        def record(run: dict[str, Any]) -> None:
            results["runs"].append(run)
            print(_line(run), flush=True)

        variants: list[tuple[str, Path | None]] = [("this tree", None)]
        if args.baseline is not None:
            variants.insert(0, ("baseline", args.baseline))
        for workers in args.workers:
            if args.bare:
                extra = ("--app-dir", str(Path(__file__).parent))
                with common.api_server(stack, workers=workers, app="api_load:bare_app", extra_args=extra) as bare:
                    load(bare, "healthz", duration_s=min(3, args.duration))  # warm-up
                    record({"endpoint": "bare Starlette route", "server": "bare", "workers": workers,
                            **load(bare, "healthz", duration_s=args.duration)})  # fmt: skip
            for label, source in variants:
                with common.api_server(
                    stack, workers=workers, extra_args=tuple(args.server_args), source=source
                ) as api:
                    load(api, "get", duration_s=min(3, args.duration))  # warm-up: connections, pools, caches
                    for case in args.cases:
                        spy, out = None, common.OUT / f"api_load_profile_{case}_w{workers}.txt"
                        if case == args.profile and source is None:
                            common.OUT.mkdir(exist_ok=True)
                            spy = profile(api.worker_pids()[0], max(args.duration - 2, 1), out)
                        run = load(api, case, duration_s=args.duration)
                        if spy is not None:
                            spy.wait()
                            print(summarise_profile(out), flush=True)
                        record({"endpoint": cases[case][0], "server": label, "workers": workers, **run})
                        time.sleep(1)
    return results


def _line(run: dict[str, Any]) -> str:
    return (
        f"{run['endpoint']:<28} {run['server']:<10} workers={run['workers']}  {run['rps']:7.0f} req/s  "
        f"p50 {run['p50_ms']:6.1f} ms  p99 {run['p99_ms']:6.1f} ms  CPU {run['server_cpu_ms_per_request']:.2f} ms/req  "
        f"new DB connections {run['db_connections_opened']}  errors {run['errors']}  cores {run['cores_used']}  "
        f"(load before: {run['load_before']})"
    )


def _cores(run: dict[str, Any]) -> str:
    cores = run.get("cores_used") or {}
    return " / ".join(f"{cores.get(g, 0):.2f}" for g in ("server", "postgres", "wrk", "other"))


def table(results: dict[str, Any], args: argparse.Namespace) -> str:
    m = common.Machine(**results["machine"])
    floors = {(r["server"], r["workers"]): r["rps"] for r in results["runs"] if r["endpoint"] == "GET /healthz"}
    rows = [
        "| endpoint | server | uvicorn workers | requests/s | p50 ms | p90 ms | p99 ms | vs /healthz "
        "| server CPU ms/request | cores: server / postgres / wrk / other | new DB connections | errors "
        "| load before |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results["runs"]:
        floor = floors.get((r["server"], r["workers"]))
        ratio = f"{r['rps'] / floor:.2f}" if floor else ""
        rows.append(
            f"| {r['endpoint']} | {r['server']} | {r['workers']} | {r['rps']:.0f} | {r['p50_ms']:.1f} | "
            f"{r['p90_ms']:.1f} | {r['p99_ms']:.1f} | {ratio} | {r['server_cpu_ms_per_request']:.2f} | {_cores(r)} | "
            f"{r['db_connections_opened']} | {r['errors']} | {r['load_before']} |"
        )
    get = [r for r in results["runs"] if r["endpoint"] == "GET /v1/jobs/{id}" and r["server"] == "this tree"]
    verdict = "; ".join(
        f"{r['workers']} worker(s): {r['rps']:.0f} req/s, p99 {r['p99_ms']:.1f} ms -> "
        + ("met" if r["rps"] >= TARGET_RPS and r["p99_ms"] < TARGET_P99_MS else "missed")
        for r in get
    )
    baseline = f" `baseline` = the same server run from {args.baseline_name or args.baseline}." if args.baseline else ""
    return (
        f"`python bench/api_load.py {' '.join(args.argv)}` ({m.describe()}). "
        f"`wrk -t{args.threads} -c{args.connections} -d{args.duration}s` on the same 2 CPUs, {KEYS} API keys "
        f"of one tenant in turn, {max(args.seed_jobs, KEYS)} jobs in the table, worker idle (none running); server "
        "`uvicorn api.main:app --workers N` (uvloop, httptools, access log on) on a private Postgres database. "
        "`vs /healthz` = requests/s over the same server's `/healthz` in the same run; server CPU = user + "
        f"system time of the uvicorn process(es) per request (steadier than requests/s on a shared machine); "
        "cores = CPU seconds per second of the run used by the server, Postgres, wrk and everything else on "
        f"the machine (`other`: work that is not the benchmark's, which the 2 cores also ran).{baseline}"
        "\n\n"
        + "\n".join(rows)
        + f"\n\nTarget for `GET /v1/jobs/{{id}}` (>= {TARGET_RPS:.0f} req/s, p99 < {TARGET_P99_MS:.0f} ms): "
        + f"{verdict}.\n"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="uvicorn --workers values to try")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=64, help="concurrent clients (keep-alive connections)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--seed-jobs", type=int, default=SEED_JOBS, help="jobs in the table before the runs")
    parser.add_argument("--no-bare", dest="bare", action="store_false", help="skip the bare Starlette route")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES), help="which requests to load")
    parser.add_argument("--profile", choices=CASES, help="py-spy (GIL samples) the first API process in this case")
    parser.add_argument(
        "--server-args", nargs="*", default=[], help="more uvicorn options for the API server (e.g. --no-access-log)"
    )
    parser.add_argument("--baseline", type=Path, help="also run the server from this checkout (e.g. git archive HEAD)")
    parser.add_argument("--baseline-name", help="what the baseline is, for the report (e.g. `commit abc1234`)")
    return common.parse_bench_args(parser, section="service: API load", argv=argv)


def main() -> None:
    args = parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian: apt-get install -y wrk)")
    results = measure(args)
    common.publish("api_load", results, table(results, args), args)


if __name__ == "__main__":
    main()
