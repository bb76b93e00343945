"""Service overhead: the same small ssgan job through the service and through `python -m ganft_core train`.

Target: the service under 5% slower.

    python bench/service_overhead.py [--steps 300] [--rounds 2] [--store file|s3] [--record]

Data: scikit-learn's bundled digits as 64 features in [0, 1], 10 labels per class, the rest
unlabeled (one npz file). Spec: ssgan, `steps` steps, batches of 32, seed 0, everything else
default. The rounds alternate (CLI, service, CLI, service ...) so that a change in the machine's
load hits both about equally.

- CLI: wall time of `python -m ganft_core train SPEC --data digits.npz --out DIR` (process start,
  torch import, data load, training, evaluation, export, artifacts). Both paths train with the
  same number of torch threads (`--threads`, default the worker's: half the CPUs).
- Service: the dataset is uploaded once beforehand; wall time from `POST /v1/jobs` until the job
  is seen `succeeded` in the database (polled every 20 ms), with `uvicorn api.main:app` and
  `celery -A worker.app worker -Q gpu --pool solo` (worker.app.worker_command) running on 127.0.0.1. Its parts, from
  the job row: queued (created -> started) and run (started -> finished: staging, the spawned
  training child, progress writes, artifact upload, output model).
- `--store s3`: the service's artifact store is `s3://` on a private SeaweedFS (tests/s3_server.py,
  on the same CPUs), so the job's input, checkpoints, live pictures and outputs go through S3
  (section "service: overhead (S3 store)").
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import common
import httpx
import numpy as np

TARGET_OVERHEAD = 0.05
POLL_S = 0.02


def digits_npz() -> bytes:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    rng = np.random.RandomState(0)
    keep = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:10] for c in range(10)])
    labels = np.full(len(y), -1)
    labels[keep] = y[keep]
    buffer = io.BytesIO()
    np.savez(buffer, x=(x / 16.0).astype(np.float32), y=labels)
    return buffer.getvalue()


def run_cli(spec_path: Path, data: Path, out: Path, threads: int) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "ganft_core",
        "train",
        str(spec_path),
        "--data",
        str(data),
        "--out",
        str(out),
        "--json",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}  # torch's intra-op threads, as the worker's child sets
    load = common.load_average()
    start = time.perf_counter()
    done = subprocess.run(command, cwd=common.ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"the CLI failed ({done.returncode}): {done.stdout[-500:]} {done.stderr[-2000:]}")
    accuracy = json.loads(done.stdout)["metrics"]["ssgan"]["accuracy"]
    return {"path": "cli", "wall_s": wall, "accuracy": accuracy, "load_before": load}


def run_service(stack: common.Stack, client: httpx.Client, spec: dict[str, Any], dataset_id: str) -> dict[str, Any]:
    from sqlalchemy import select

    from ganft.db.session import session_scope
    from ganft.db.tables import Job

    load = common.load_average()
    start = time.perf_counter()
    response = client.post("/v1/jobs", json={**spec, "dataset_id": dataset_id})
    response.raise_for_status()
    job_id = response.json()["id"]
    deadline = start + 900
    while True:
        with session_scope(stack.engine()) as session:
            row = session.execute(
                select(Job.status, Job.created_at, Job.started_at, Job.finished_at, Job.result, Job.error_message)
                .where(Job.id == job_id)
            ).one()  # fmt: skip
        if row.status in ("succeeded", "failed", "cancelled"):
            break
        if time.perf_counter() > deadline:
            raise TimeoutError(f"job {job_id} still {row.status} after 900 s")
        time.sleep(POLL_S)
    wall = time.perf_counter() - start
    if row.status != "succeeded":
        raise RuntimeError(f"job {job_id} ended {row.status}: {row.error_message}")
    return {
        "path": "service",
        "wall_s": wall,
        "queued_s": (row.started_at - row.created_at).total_seconds(),
        "run_s": (row.finished_at - row.started_at).total_seconds(),
        "accuracy": (row.result or {}).get("ssgan", {}).get("accuracy"),
        "load_before": load,
    }


@contextlib.contextmanager
def s3_store_env() -> Iterator[dict[str, str]]:
    """A private SeaweedFS for the run; the GANFT_STORE_* variables that point the service at it."""
    import tempfile

    from store_transfer import SeaweedS3, s3_env

    with tempfile.TemporaryDirectory(prefix="ganft-s3bench-") as folder:
        server = SeaweedS3(Path(folder))
        server.start()
        try:
            yield s3_env(server, presign=False)
        finally:
            server.stop()


def measure(args: argparse.Namespace) -> dict[str, Any]:
    spec = {
        "method": "ssgan",
        "hyperparameters": {"steps": args.steps, "batch_size": 32, "unlabeled_batch_size": 32},
        "seed": 0,
    }
    results: dict[str, Any] = {
        "machine": common.machine().__dict__, "spec": spec, "threads": args.threads, "store": args.store, "runs": [],
    }  # fmt: skip
    with contextlib.ExitStack() as stacks:
        env = {"GANFT_TORCH_THREADS": str(args.threads)}
        if args.store == "s3":
            env |= stacks.enter_context(s3_store_env())
        stack = stacks.enter_context(common.service_stack(None, **env))
        data = stack.data_dir / "digits.npz"
        data.write_bytes(digits_npz())
        spec_path = stack.data_dir / "spec.json"
        spec_path.write_text(json.dumps(spec))
        key = stack.create_keys("bench", 1)[0]
        with common.api_server(stack, workers=1) as api, common.celery_worker(stack) as worker:
            headers = {"Authorization": f"Bearer {key}"}
            with httpx.Client(base_url=api.url, headers=headers, timeout=60) as client:
                upload = client.post(
                    "/v1/datasets",
                    params={"name": "digits.npz", "format": "npz"},
                    content=data.read_bytes(),
                    headers={"Content-Type": "application/octet-stream"},
                )
                upload.raise_for_status()
                dataset_id = upload.json()["id"]
                try:
                    for i in range(args.rounds):
                        for path in ("cli", "service"):
                            if path == "cli":
                                run = run_cli(spec_path, data, stack.data_dir / f"cli-run-{i}", args.threads)
                            else:
                                run = run_service(stack, client, spec, dataset_id)
                            results["runs"].append(run)
                            print(f"round {i + 1} {path}: {run['wall_s']:.1f} s (load before {run['load_before']})",
                                  flush=True)  # fmt: skip
                except Exception:
                    sys.stderr.write(f"---- worker log ----\n{worker.logs()}\n")
                    raise
    return results


def _accuracy(run: dict[str, Any]) -> str:
    return "?" if run["accuracy"] is None else f"{run['accuracy']:.3f}"


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    m = common.Machine(**results["machine"])
    cli = [r["wall_s"] for r in results["runs"] if r["path"] == "cli"]
    service = [r["wall_s"] for r in results["runs"] if r["path"] == "service"]
    rows = [
        "| round | path | wall s | parts (service) | accuracy | load before |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for i, r in enumerate(results["runs"]):
        parts = f"queued {r['queued_s']:.2f} s + run {r['run_s']:.1f} s" if r["path"] == "service" else ""
        rows.append(
            f"| {i // 2 + 1} | {r['path']} | {r['wall_s']:.2f} | {parts} | {_accuracy(r)} | {r['load_before']} |"
        )
    ratio = statistics.mean(service) / statistics.mean(cli)
    pairs = ", ".join(f"{s / c:.3f}" for c, s in zip(cli, service, strict=True))
    return (
        f"`python bench/service_overhead.py {' '.join(args.argv)}` ({m.describe()}). Spec "
        f"`{json.dumps(results['spec'])}` on digits (64 features, 10 labels per class); artifact store "
        f"{results.get('store', 'file')}://; CPU training with "
        f"{results['threads']} torch thread(s) in both paths (GANFT_TORCH_THREADS for the worker's child, "
        "OMP_NUM_THREADS for the CLI).\n\n" + "\n".join(rows) + "\n\n"
        f"Mean wall time: CLI {statistics.mean(cli):.2f} s, service {statistics.mean(service):.2f} s "
        f"(+{statistics.mean(service) - statistics.mean(cli):.2f} s); service / CLI "
        f"= {ratio:.3f} (per round: {pairs}). Target < {1 + TARGET_OVERHEAD:.2f}: "
        f"{'met' if ratio < 1 + TARGET_OVERHEAD else 'missed'}.\n"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="ssgan steps of the job")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of (CLI, service)")
    parser.add_argument(
        "--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2),
        help="torch CPU threads in both paths (default: half the CPUs, the worker's default)",
    )  # fmt: skip
    parser.add_argument("--store", choices=("file", "s3"), default="file", help="the service's artifact store")
    args = common.parse_bench_args(parser, section="service: overhead", argv=argv)
    if args.store == "s3" and args.section == "service: overhead":
        args.section = "service: overhead (S3 store)"
    return args


def main() -> None:
    args = parse_args()
    results = measure(args)
    name = "service_overhead" if args.store == "file" else "service_overhead_s3"
    common.publish(name, results, report(results, args), args)


if __name__ == "__main__":
    main()
