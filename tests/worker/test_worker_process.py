"""A real Celery worker process (prefork, -c 1) on real Redis and Postgres runs real training children."""

from __future__ import annotations

import hashlib
import io
import os
import re
import signal

import numpy as np
from celery import Celery
from sqlalchemy import Engine, select, update

from ganft.db.session import session_scope
from ganft.db.tables import Artifact, Job, Model
from ganft.repo import jobs
from ganft.settings import Settings
from ganft.store import Store
from tests.worker.conftest import REDIS_URL
from tests.worker.helpers import WorkerProcess, job_events, job_row, make_job, wait_for

TINY_ADAPT = {"batch_size": 8, "eval_every": 1000, "eval_samples": 16, "log_every": 5, "ada": False, "r1_gamma": 0.0}


def images_npz(n: int = 64, seed: int = 0) -> bytes:
    """n unlabeled 8×8 grey images (blurry blobs), values in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:8, 0:8]
    centers = rng.uniform(2, 6, size=(n, 2))
    x = np.exp(-((yy[None] - centers[:, :1, None]) ** 2 + (xx[None] - centers[:, 1:, None]) ** 2) / 4.0)
    buf = io.BytesIO()
    np.savez(buf, x=x.astype(np.float32), y=np.full(n, -1))
    return buf.getvalue()


def _ended(engine: Engine, job_id: str) -> Job | None:
    """The job's row once it is in a terminal state, else None."""
    row = job_row(engine, job_id)
    return row if row.status in ("succeeded", "failed", "cancelled") else None


def _send(job_id: str) -> None:
    app = Celery("test-producer", set_as_current=False)
    app.conf.update(broker_url=REDIS_URL, task_serializer="json")
    app.send_task("ganft.run_job", args=[job_id], queue="gpu")
    app.close()


def test_job_runs_to_success_and_registers_its_outputs(
    engine: Engine, store: Store, start_worker: WorkerProcess.Factory
) -> None:
    job_id = make_job(engine, store, method="adapt", data=images_npz(), hyperparameters={**TINY_ADAPT, "steps": 10})
    worker = start_worker()
    _send(job_id)
    _send(job_id)  # a duplicate message: claimed once, the second finds nothing to do
    row = wait_for(lambda: _ended(engine, job_id), timeout=180, what="the job to finish", logs=worker.logs)
    assert row.status == "succeeded", (row.error_code, row.error_message, worker.logs())
    assert (row.attempt, row.step, row.total_steps) == (1, 10, 10)
    assert row.result is not None and row.result["steps"] == 10
    with session_scope(engine) as session:
        artifacts = session.scalars(select(Artifact).where(Artifact.job_id == job_id)).all()
        model = session.scalars(select(Model).where(Model.id == row.output_model_id)).one()
    names = {a.name for a in artifacts}
    assert {"model.safetensors", "model.json", "model.pt2", "discriminator.safetensors", "samples.png"} <= names
    for artifact in artifacts:  # what the DB says is what the store holds
        assert hashlib.sha256(store.read_bytes(artifact.storage_key)).hexdigest() == artifact.sha256
        assert store.size(artifact.storage_key) == artifact.size_bytes
    assert (model.role, model.source_job_id, model.config["role"]) == ("gan", job_id, "generator")
    assert store.exists(f"{model.storage_prefix}/model.safetensors")
    events = job_events(engine, job_id)
    statuses = [d["status"] for _, t, d in events if t == "status"]
    assert statuses == ["queued", "running", "succeeded"]
    assert [seq for seq, _, _ in events] == list(range(1, len(events) + 1))
    # The duplicate waited in the queue while the job ran (one job per worker), then found it taken.
    wait_for(lambda: "nothing to do" in worker.logs(), timeout=30, what="the duplicate message", logs=worker.logs)


def test_cancel_stops_the_trainer_and_keeps_the_checkpoint(
    engine: Engine, store: Store, start_worker: WorkerProcess.Factory
) -> None:
    hp = {**TINY_ADAPT, "steps": 100_000, "checkpoint_every": 5}
    job_id = make_job(engine, store, method="adapt", data=images_npz(), hyperparameters=hp)
    worker = start_worker()
    _send(job_id)
    wait_for(lambda: job_row(engine, job_id).checkpoint_key, timeout=120, what="a checkpoint", logs=worker.logs)
    with session_scope(engine) as session:
        assert jobs.request_cancel(session, job_id=job_id).status == "cancelling"
    row = wait_for(lambda: _ended(engine, job_id), timeout=60, what="the cancel to finish", logs=worker.logs)
    assert row.status == "cancelled", (row.error_code, row.error_message)
    assert row.checkpoint_key and store.exists(row.checkpoint_key)
    assert row.checkpoint_step is not None and 0 < row.checkpoint_step < 100_000
    assert row.finished_at is not None and row.output_model_id is None
    assert "stopping the trainer (cancel)" in worker.logs()
    assert "killing" not in worker.logs()  # the trainer stopped by itself, within the grace period


def test_lost_worker_is_reaped_and_the_next_attempt_resumes(
    engine: Engine, store: Store, settings: Settings, start_worker: WorkerProcess.Factory
) -> None:
    """SIGKILL the worker (and its trainer) mid-job: the lease expires, the reaper requeues the job,
    another worker claims attempt 2 and resumes from the newest checkpoint instead of step 0."""
    hp = {**TINY_ADAPT, "steps": 100_000, "checkpoint_every": 5}
    job_id = make_job(engine, store, method="adapt", data=images_npz(), hyperparameters=hp)
    first = start_worker("w1")
    _send(job_id)
    wait_for(lambda: job_row(engine, job_id).checkpoint_key, timeout=120, what="a checkpoint", logs=first.logs)
    first.kill()
    lost = job_row(engine, job_id)
    resumed_from = lost.checkpoint_step
    second = start_worker("w2")
    logs = lambda: first.logs() + second.logs()  # noqa: E731

    def progress_of_attempt_2() -> list[int]:
        events = job_events(engine, job_id)
        claims = [seq for seq, t, d in events if t == "status" and d["status"] == "running" and d["attempt"] == 2]
        return claims and [d["step"] for seq, t, d in events if t == "progress" and seq > claims[0]]

    steps = wait_for(progress_of_attempt_2, timeout=120, what="progress of attempt 2", logs=logs)
    assert resumed_from and min(steps) >= resumed_from  # resumed from the checkpoint, not from step 0
    row = job_row(engine, job_id)
    assert (row.status, row.attempt) == ("running", 2) and row.worker_id != lost.worker_id
    statuses = [(d["status"], d.get("reason")) for _, t, d in job_events(engine, job_id) if t == "status"]
    assert statuses == [("queued", None), ("running", None), ("queued", "lease expired"), ("running", None)]
    with session_scope(engine) as session:  # and the new attempt still obeys a cancel
        jobs.request_cancel(session, job_id=job_id)
    wait_for(lambda: job_row(engine, job_id).status == "cancelled", timeout=60, what="the cancel", logs=logs)


def test_failures_end_with_their_codes(engine: Engine, store: Store, start_worker: WorkerProcess.Factory) -> None:
    """A trainer error keeps its code; an exceeded max_runtime_s and a trainer killed by the system
    (as the OOM killer does) are told apart from bugs."""
    bad = io.BytesIO()
    np.savez(bad, x=np.zeros(10, dtype=np.float32), y=np.zeros(10, dtype=np.int64))  # 1-D x: not a dataset
    invalid = make_job(engine, store, method="adapt", data=bad.getvalue())
    slow = make_job(engine, store, method="adapt", data=images_npz(), hyperparameters={**TINY_ADAPT, "steps": 100_000})
    with session_scope(engine) as session:
        session.execute(update(Job).where(Job.id == slow).values(max_runtime_s=1))
    killed = make_job(
        engine, store, method="adapt", data=images_npz(), hyperparameters={**TINY_ADAPT, "steps": 100_000}
    )
    worker = start_worker()
    for job_id in (invalid, slow, killed):
        _send(job_id)

    row = wait_for(lambda: _ended(engine, invalid), timeout=60, what="the invalid dataset job", logs=worker.logs)
    assert (row.status, row.error_code) == ("failed", "invalid_dataset") and row.error_message
    row = wait_for(lambda: _ended(engine, slow), timeout=60, what="the max_runtime_s job", logs=worker.logs)
    assert (row.status, row.error_code) == ("failed", "max_runtime_exceeded")

    pid = wait_for(lambda: re.search(rf"job {killed}: attempt 1, training in pid (\d+)", worker.logs()),
                   timeout=60, what="the third trainer", logs=worker.logs)  # fmt: skip
    os.kill(int(pid.group(1)), signal.SIGKILL)
    row = wait_for(lambda: _ended(engine, killed), timeout=60, what="the killed job", logs=worker.logs)
    assert (row.status, row.error_code) == ("failed", "out_of_memory")
