"""Dispatch latency: `POST /v1/jobs` until a warm worker has claimed the job (status `running`).

Target: p50 under 200 ms.

    python bench/dispatch.py [--jobs 10] [--store file|s3] [--record]

Runs the production commands on 127.0.0.1: `uvicorn api.main:app --workers 1` and
`celery -A worker.app worker -Q gpu --pool solo ...` (worker.app.worker_command), Redis database 14 as the broker, a
private Postgres database. One warm-up job first (the worker's first task imports the runner);
then, one after another, each job is created through the API, watched in the database every
5 ms until it is `running`, and cancelled through the API; the next one is posted once the
worker has let go of it (terminal status).

Reported: the client's view (POST sent -> `running` seen in the database), the server's
timestamps (created_at -> started_at: the claim), and, as the alternative for scale, the
`POST /v1/jobs` round trip itself. `--store s3` runs the service over a private SeaweedFS
(`s3://`, as bench/service_overhead.py does): the claim then stages the dataset from S3.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from typing import Any

import common
import httpx

TARGET_P50_MS = 200.0
POLL_S = 0.005  # how often the job row is read while waiting for the claim


def job_row(stack: common.Stack, job_id: str) -> Any:
    from sqlalchemy import select

    from ganft.db.session import session_scope
    from ganft.db.tables import Job

    with session_scope(stack.engine()) as session:
        return session.execute(select(Job.status, Job.created_at, Job.started_at).where(Job.id == job_id)).one()


def wait_until(stack: common.Stack, job_id: str, statuses: set[str], timeout_s: float) -> tuple[Any, float]:
    """Poll the job row until its status is one of `statuses`; (row, perf_counter when seen)."""
    deadline = time.perf_counter() + timeout_s
    while True:
        row = job_row(stack, job_id)
        if row.status in statuses:
            return row, time.perf_counter()
        if time.perf_counter() > deadline:
            raise TimeoutError(f"job {job_id} still {row.status} after {timeout_s:g} s")
        time.sleep(POLL_S)


def one_job(stack: common.Stack, client: httpx.Client, dataset_id: str, seed: int) -> dict[str, Any]:
    body = {"method": "ssgan", "dataset_id": dataset_id, "hyperparameters": {"steps": 5000}, "seed": seed}
    sent = time.perf_counter()
    response = client.post("/v1/jobs", json=body)
    answered = time.perf_counter()
    response.raise_for_status()
    job_id = response.json()["id"]
    row, seen = wait_until(stack, job_id, {"running", "succeeded", "failed", "cancelled"}, 60)
    if row.status != "running":
        raise RuntimeError(f"job {job_id} ended {row.status} before it was seen running")
    client.post(f"/v1/jobs/{job_id}/cancel").raise_for_status()
    wait_until(stack, job_id, {"cancelled", "succeeded", "failed"}, 120)
    return {
        "job_id": job_id,
        "post_ms": (answered - sent) * 1000,
        "client_ms": (seen - sent) * 1000,
        "claim_ms": (row.started_at - row.created_at).total_seconds() * 1000,
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": common.machine().__dict__, "jobs": []}
    results["store"] = args.store
    with contextlib.ExitStack() as stacks:
        env = {"GANFT_CANCEL_GRACE_S": "1"}  # a cancelled child not yet in its training loop is killed sooner
        if args.store == "s3":
            from service_overhead import s3_store_env

            env |= stacks.enter_context(s3_store_env())
        stack = stacks.enter_context(common.service_stack(None, **env))
        key = stack.create_keys("bench", 1)[0]
        with common.api_server(stack, workers=1) as api, common.celery_worker(stack) as worker:
            dataset_id = common.upload_small_dataset(api.url, key)
            with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
                try:
                    warm = one_job(stack, client, dataset_id, seed=0)
                    print(f"warm-up: claimed {warm['client_ms']:.0f} ms after the POST", flush=True)
                    for i in range(args.jobs):
                        results["load_before"] = results.get("load_before") or common.load_average()
                        run = one_job(stack, client, dataset_id, seed=i + 1)
                        results["jobs"].append(run)
                        print(f"job {i + 1}: POST {run['post_ms']:.0f} ms, running after {run['client_ms']:.0f} ms "
                              f"(claim at +{run['claim_ms']:.0f} ms)", flush=True)  # fmt: skip
                except Exception:
                    sys.stderr.write(f"---- worker log ----\n{worker.logs()}\n")
                    raise
            results["load_after"] = common.load_average()
    return results


def _stats(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return f"{statistics.median(ordered):.0f} | {p90:.0f} | {ordered[-1]:.0f}"


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    m = common.Machine(**results["machine"])
    jobs = results["jobs"]
    p50 = statistics.median(j["client_ms"] for j in jobs)
    rows = [
        "| measure (ms) | p50 | p90 | max |",
        "| --- | --- | --- | --- |",
        f"| client: POST sent -> `running` seen (5 ms polls) | {_stats([j['client_ms'] for j in jobs])} |",
        f"| server: created_at -> started_at (the claim) | {_stats([j['claim_ms'] for j in jobs])} |",
        f"| alternative: the `POST /v1/jobs` round trip | {_stats([j['post_ms'] for j in jobs])} |",
    ]
    return (
        f"`python bench/dispatch.py {' '.join(args.argv)}` ({m.describe()}). {len(jobs)} jobs one after another "
        "after a warm-up job; `uvicorn api.main:app --workers 1` + `celery -A worker.app worker -Q gpu --pool solo` "
        f"(worker.app.worker_command), Redis broker, Postgres, artifact store {results.get('store', 'file')}://; "
        f"load average {results['load_before']} before, {results['load_after']} after.\n\n" + "\n".join(rows) + "\n\n"
        f"Target p50 < {TARGET_P50_MS:.0f} ms: {p50:.0f} ms -> {'met' if p50 < TARGET_P50_MS else 'missed'}.\n"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10, help="measured jobs (after one warm-up job)")
    parser.add_argument("--store", choices=("file", "s3"), default="file", help="the service's artifact store")
    args = common.parse_bench_args(parser, section="service: dispatch", argv=argv)
    if args.store == "s3" and args.section == "service: dispatch":
        args.section = "service: dispatch (S3 store)"
    return args


def main() -> None:
    args = parse_args()
    results = measure(args)
    common.publish("dispatch" if args.store == "file" else "dispatch_s3", results, report(results, args), args)


if __name__ == "__main__":
    main()
