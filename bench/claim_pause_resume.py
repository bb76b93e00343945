"""Pause and resume latency: `POST /pause` until the worker is free, `POST /resume` until the job is `running`.

    python bench/claim_pause_resume.py [--cycles 8] [--record]

Runs the production commands on 127.0.0.1 (`uvicorn api.main:app --workers 1`, one
`celery -A worker.app worker -Q gpu --pool solo` (worker.app.worker_command), Redis broker, a private
Postgres database) and one long ssgan job on a tiny feature dataset (it never finishes by itself; periodic
checkpoints are off, so each pause writes the checkpoint). Each cycle waits until the trainer reports
progress, then:
- pause: `POST /v1/jobs/{id}/pause` sent -> the job is `paused` in the database (its worker has let go:
  the trainer wrote its checkpoint, the runner stored and listed it, and the worker is free);
- resume: `POST /v1/jobs/{id}/resume` sent -> `running` (a worker claimed it), and -> the trainer's first
  progress report after that claim (the training child started again and loaded the checkpoint).
The job row is read every 5 ms. The alternative for scale, in the same run: `POST /cancel` of the
running job -> `cancelled` at the end (the same stop path without keeping the job), once.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import common
import httpx

POLL_S = 0.005
HP = {"steps": 1_000_000, "checkpoint_every": 1_000_000, "eval_every": 1_000_000, "log_every": 20,
      "batch_size": 16, "unlabeled_batch_size": 16, "run_control": False}  # fmt: skip


def job_state(stack: common.Stack, job_id: str) -> tuple[str, int]:
    from sqlalchemy import select

    from ganft.db.session import session_scope
    from ganft.db.tables import Job

    with session_scope(stack.engine()) as session:
        status, step = session.execute(select(Job.status, Job.step).where(Job.id == job_id)).one()
    return status, step


def wait(stack: common.Stack, job_id: str, done: Any, timeout_s: float, what: str) -> float:
    """Seconds until `done(status, step)`, polling every POLL_S."""
    started = time.perf_counter()
    while True:
        status, step = job_state(stack, job_id)
        if done(status, step):
            return time.perf_counter() - started
        if status in ("failed", "succeeded", "cancelled") or time.perf_counter() - started > timeout_s:
            raise RuntimeError(f"{what}: the job is {status} at step {step}")
        time.sleep(POLL_S)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": common.machine().__dict__, "load_before": common.load_average(), "cycles": []}
    with common.service_stack() as stack:
        key = stack.create_keys("bench", 1)[0]
        with common.api_server(stack, workers=1) as api, common.celery_worker(stack):
            client = httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
            dataset = common.upload_small_dataset(api.url, key)
            job = client.post("/v1/jobs", json={"method": "ssgan", "dataset_id": dataset, "hyperparameters": HP})
            job.raise_for_status()
            job_id = job.json()["id"]
            for _ in range(args.cycles):
                _, step = job_state(stack, job_id)
                wait(stack, job_id, lambda s, n, at=step: s == "running" and n > at, 600, "training to progress")
                started = time.perf_counter()
                client.post(f"/v1/jobs/{job_id}/pause").raise_for_status()
                wait(stack, job_id, lambda s, n: s == "paused", 600, "the pause")
                pause_s = time.perf_counter() - started  # from sending the POST
                _, paused_at = job_state(stack, job_id)
                started = time.perf_counter()
                client.post(f"/v1/jobs/{job_id}/resume").raise_for_status()
                wait(stack, job_id, lambda s, n: s == "running", 600, "the resume's claim")
                running_s = time.perf_counter() - started
                wait(stack, job_id, lambda s, n, at=paused_at: s == "running" and n > at, 600, "training again")
                training_s = time.perf_counter() - started
                results["cycles"].append({"pause_s": pause_s, "resume_running_s": running_s,
                                          "resume_training_s": training_s})  # fmt: skip
                print(f"cycle {len(results['cycles'])}: {results['cycles'][-1]}", flush=True)
            _, step = job_state(stack, job_id)
            wait(stack, job_id, lambda s, n, at=step: s == "running" and n > at, 600, "training to progress")
            started = time.perf_counter()
            client.post(f"/v1/jobs/{job_id}/cancel").raise_for_status()
            wait(stack, job_id, lambda s, n: s == "cancelled", 600, "the cancel")
            results["cancel_s"] = time.perf_counter() - started
    results["load_after"] = common.load_average()
    return results


def _stats(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"{statistics.median(ordered):.2f} | {p90:.2f} | {ordered[-1]:.2f}"


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    m = common.Machine(**results["machine"])
    cycles = results["cycles"]
    rows = [
        "| measure (s) | p50 | p90 | max |",
        "| --- | --- | --- | --- |",
        f"| `POST pause` -> `paused` (checkpoint stored, worker free) | {_stats([c['pause_s'] for c in cycles])} |",
        f"| `POST resume` -> `running` (claimed) | {_stats([c['resume_running_s'] for c in cycles])} |",
        f"| `POST resume` -> training again (first progress after the claim) "
        f"| {_stats([c['resume_training_s'] for c in cycles])} |",
        f"| alternative: `POST cancel` -> `cancelled` (once) | {results['cancel_s']:.2f} | - | - |",
    ]
    return (
        f"`python bench/claim_pause_resume.py {' '.join(args.argv)}` ({m.describe()}; load average "
        f"{results['load_before']} before, {results['load_after']} after). One long ssgan job (tiny features, "
        f"no periodic checkpoints), {len(cycles)} pause/resume cycles through the API with one worker; the job "
        "row polled every 5 ms.\n\n" + "\n".join(rows) + "\n"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=8, help="pause/resume cycles")
    return common.parse_bench_args(parser, section="service: pause and resume", argv=argv)


def main() -> None:
    args = parse_args()
    results = measure(args)
    common.publish("claim_pause_resume", results, report(results, args), args)


if __name__ == "__main__":
    main()
