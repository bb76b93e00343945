"""Throttled progress recording against the real Postgres: bounded writes, nothing lost."""

from __future__ import annotations

from sqlalchemy import Engine, func, select

from ganft.db.session import session_scope
from ganft.db.tables import JobMetric
from ganft.repo import lifecycle
from ganft.store import Store
from tests.worker.helpers import job_events, job_row, make_job
from worker.progress import ProgressBatch, ProgressRecorder


class Clock:
    """Simulated time, so the test does not depend on how fast the machine is."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_many_updates_make_few_writes_and_lose_nothing(engine: Engine, store: Store) -> None:
    job_id = make_job(engine, store)
    with session_scope(engine) as session:
        assert lifecycle.claim_job(session, job_id=job_id, worker_id="w1", lease_s=60) is not None

    def write(batch: ProgressBatch) -> str | None:
        with session_scope(engine) as session:
            return lifecycle.record_progress(
                session,
                job_id=job_id,
                worker_id="w1",
                step=batch.step,
                total_steps=batch.total_steps,
                steps_per_second=batch.steps_per_second,
                metrics=batch.metrics,
                events=batch.events,
            )

    clock = Clock()
    recorder = ProgressRecorder(write, interval_s=0.5, clock=clock)
    updates = 2000
    for step in range(1, updates + 1):  # 2000 reports, 1 ms apart: 2 s of training
        clock.now = step * 0.001
        kind = "evaluation" if step % 500 == 0 else "step"
        metrics = {"accuracy": 0.5} if kind == "evaluation" else {"loss_d": 1.0 / step, "loss_g": float("nan")}
        recorder.add({"kind": kind, "step": step, "total_steps": updates, "metrics": metrics})
        if recorder.due():
            assert recorder.flush() == "running"
    if recorder.pending:  # the final flush (the last evaluation may have been written at once)
        assert recorder.flush() == "running"

    # 2 s at one write per 0.5 s: the first write, one per interval, and the final one.
    assert recorder.writes <= 2 / 0.5 + 2
    with session_scope(engine) as session:
        names = dict(
            session.execute(
                select(JobMetric.name, func.count()).where(JobMetric.job_id == job_id).group_by(JobMetric.name)
            ).all()
        )
    assert names == {"loss_d": updates - 4, "accuracy": 4}  # every finite point kept, NaN dropped
    events = job_events(engine, job_id)
    types = [t for _, t, _ in events]
    assert types.count("progress") == recorder.writes
    assert types.count("evaluation") == 4  # evaluation events are never coalesced
    assert [seq for seq, _, _ in events] == list(range(1, len(events) + 1))
    last_progress = [d for _, t, d in events if t == "progress"][-1]
    assert last_progress["step"] == updates and last_progress["steps_per_second"] > 0
    row = job_row(engine, job_id)
    assert (row.step, row.total_steps) == (updates, updates)


def test_write_to_a_lost_job_reports_it(engine: Engine, store: Store) -> None:
    """After the job was reaped or taken over, a write changes nothing and says so (None)."""
    job_id = make_job(engine, store)
    with session_scope(engine) as session:
        assert lifecycle.claim_job(session, job_id=job_id, worker_id="w1", lease_s=60) is not None
    with session_scope(engine) as session:
        status = lifecycle.record_progress(
            session, job_id=job_id, worker_id="someone-else", step=5, total_steps=10, steps_per_second=None
        )
    assert status is None
    assert job_row(engine, job_id).step == 0
