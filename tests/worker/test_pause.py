"""Pause and resume with a real worker process: the trainer checkpoints and stops, the worker is free for
other work, and the resumed job ends with the same weights as an uninterrupted run (deterministic CPU)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, select

from ganft.db.migrate import upgrade
from ganft.db.session import make_engine, session_scope
from ganft.db.tables import Artifact, Job, JobCheckpoint
from ganft.repo import jobs, lifecycle
from ganft.store import Store
from tests.worker.helpers import WorkerProcess, job_events, job_row, make_job, wait_for
from tests.worker.test_worker_process import _send

# About 70 steps/s on one CPU thread: long enough to pause well before the end, short enough for a test.
HP = {
    "steps": 600,
    "deterministic": True,
    "batch_size": 16,
    "unlabeled_batch_size": 16,
    "eval_every": 200,
    "checkpoint_every": 100,
    "log_every": 20,
    "run_control": False,
}


def _in(engine: Engine, job_id: str, *statuses: str) -> Job | None:
    """The job's row once it is in one of `statuses`, else None (a wait_for check)."""
    row = job_row(engine, job_id)
    return row if row.status in statuses else None


def _model_sha(engine: Engine, job_id: str) -> str:
    with session_scope(engine) as session:
        return session.scalars(
            select(Artifact.sha256).where(Artifact.job_id == job_id, Artifact.name == "model.safetensors")
        ).one()


def test_pause_frees_the_worker_and_resume_ends_as_an_uninterrupted_run(
    engine: Engine, store: Store, start_worker: WorkerProcess.Factory
) -> None:
    paused_job = make_job(engine, store, hyperparameters=HP, seed=3)
    straight_job = make_job(engine, store, hyperparameters=HP, seed=3)
    worker = start_worker()
    _send(paused_job)
    wait_for(lambda: job_row(engine, paused_job).checkpoint_key, timeout=120, what="a checkpoint", logs=worker.logs)
    with session_scope(engine) as session:
        assert jobs.request_pause(session, job_id=paused_job).status == "pausing"
    row = wait_for(lambda: _in(engine, paused_job, "paused"), timeout=60, what="the pause", logs=worker.logs)
    assert row.worker_id is None and row.lease_expires_at is None and row.attempt == 0
    paused_at = row.checkpoint_step
    assert paused_at is not None and 0 < paused_at < 600
    assert store.exists(row.checkpoint_key or "")
    assert "stopping the trainer (pause)" in worker.logs() and "killing" not in worker.logs()
    with session_scope(engine) as session:  # the checkpoint written on stopping is a kept one
        steps = list(session.scalars(select(JobCheckpoint.step).where(JobCheckpoint.job_id == paused_job)))
    assert paused_at in steps and len(steps) <= 3

    # The worker is free: another job runs on it to the end while the first stays paused.
    _send(straight_job)
    done = wait_for(
        lambda: _in(engine, straight_job, "succeeded", "failed"), timeout=180, what="the other job", logs=worker.logs
    )
    assert done.status == "succeeded", (done.error_code, done.error_message)
    assert job_row(engine, paused_job).status == "paused"

    with session_scope(engine) as session:
        job, requeued = jobs.request_resume(session, job_id=paused_job)
    assert (job.status, requeued) == ("queued", True)
    _send(paused_job)
    ended = ("succeeded", "failed", "cancelled")
    resumed = wait_for(lambda: _in(engine, paused_job, *ended), timeout=180, what="the resumed job", logs=worker.logs)
    assert resumed.status == "succeeded", (resumed.error_code, resumed.error_message)
    assert resumed.attempt == 1  # the pause gave its attempt back
    events = job_events(engine, paused_job)
    statuses = [d["status"] for _, t, d in events if t == "status"]
    assert statuses == ["queued", "running", "pausing", "paused", "queued", "running", "succeeded"]
    second_claim = [seq for seq, t, d in events if t == "status" and d["status"] == "running"][1]
    assert min(d["step"] for seq, t, d in events if t == "progress" and seq > second_claim) >= paused_at
    # Continued from the exact state: the same weights as the run that was never paused.
    assert _model_sha(engine, paused_job) == _model_sha(engine, straight_job)
    assert resumed.result is not None and resumed.result["best_step"] in (200, 400, 600)


def test_a_worker_lost_while_pausing_leaves_the_job_paused_and_resumable(
    engine: Engine, store: Store, start_worker: WorkerProcess.Factory
) -> None:
    """The machine dies with a pause pending: the reaper (on another worker node) makes the job `paused`, not
    queued or failed; resumed, it continues from its newest stored checkpoint on the other worker."""
    job_id = make_job(engine, store, hyperparameters={**HP, "steps": 100_000})
    first = start_worker("w1")
    _send(job_id)
    wait_for(lambda: job_row(engine, job_id).checkpoint_key, timeout=120, what="a checkpoint", logs=first.logs)
    first.kill()
    with session_scope(engine) as session:
        assert jobs.request_pause(session, job_id=job_id).status == "pausing"
    stored_step = job_row(engine, job_id).checkpoint_step
    second = start_worker("w2")
    logs = lambda: first.logs() + second.logs()  # noqa: E731
    row = wait_for(lambda: _in(engine, job_id, "paused", "queued", "failed"), timeout=60, what="the reaper")
    assert (row.status, row.worker_id, row.checkpoint_step) == ("paused", None, stored_step), logs()
    with session_scope(engine) as session:
        assert jobs.request_resume(session, job_id=job_id)[0].status == "queued"
    _send(job_id)

    def progress_after_resume() -> list[int] | None:
        events = job_events(engine, job_id)
        claims = [seq for seq, t, d in events if t == "status" and d["status"] == "running"]
        if len(claims) < 2:
            return None
        return [d["step"] for seq, t, d in events if t == "progress" and seq > claims[1]]

    steps = wait_for(progress_after_resume, timeout=120, what="progress after the resume", logs=logs)
    assert stored_step is not None and min(steps) >= stored_step
    assert job_row(engine, job_id).status == "running"
    with session_scope(engine) as session:
        jobs.request_cancel(session, job_id=job_id)
    wait_for(lambda: job_row(engine, job_id).status == "cancelled", timeout=60, what="the cancel", logs=logs)


def test_pause_and_kept_checkpoints_on_sqlite(tmp_path: Path, store: Store) -> None:
    """The embedded default (SQLite): the status CHECK takes the new states; checkpoints are recorded and pruned."""
    url = f"sqlite:///{tmp_path / 'ganft.db'}"
    upgrade(url)
    engine = make_engine(url)
    job_id = make_job(engine, store, hyperparameters={**HP, "keep_checkpoints": 1})
    with session_scope(engine) as session:
        assert lifecycle.claim_job(session, job_id=job_id, worker_id="w1", lease_s=60) is not None
    dropped = []
    for step in (100, 200):
        with session_scope(engine) as session:
            key = f"jobs/{job_id}/checkpoints/ckpt-{step:08d}.pt"
            recorded = lifecycle.record_checkpoint(
                session, job_id=job_id, worker_id="w1", key=key, step=step, size_bytes=1, sha256="0" * 64
            )
            assert recorded is not None
            dropped += recorded
    assert dropped == [f"jobs/{job_id}/checkpoints/ckpt-00000100.pt"]
    with session_scope(engine) as session:
        assert jobs.request_pause(session, job_id=job_id).status == "pausing"
    with session_scope(engine) as session:
        assert lifecycle.pause_job(session, job_id=job_id, worker_id="w1") == "paused"
    with session_scope(engine) as session:
        job, requeued = jobs.request_resume(session, job_id=job_id)
        assert (job.status, job.checkpoint_step, requeued) == ("queued", 200, True)
    engine.dispose()
