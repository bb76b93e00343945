"""The progress throttle holds back steps, not events: an evaluation or log is written at once (real Postgres;
simulated time, so the test does not depend on how fast the machine is)."""

from __future__ import annotations

from sqlalchemy import Engine

from ganft.db.session import session_scope
from ganft.repo import lifecycle
from ganft.store import Store
from tests.worker.helpers import job_events, make_job
from tests.worker.test_progress import Clock
from worker.progress import EVENT_GAP_S, ProgressBatch, ProgressRecorder

INTERVAL_S = 0.5


def test_evaluations_skip_the_progress_throttle_and_steps_do_not(engine: Engine, store: Store) -> None:
    job_id = make_job(engine, store)
    with session_scope(engine) as session:
        assert lifecycle.claim_job(session, job_id=job_id, worker_id="w1", lease_s=60) is not None

    def write(batch: ProgressBatch) -> str | None:
        with session_scope(engine) as session:
            return lifecycle.record_progress(
                session, job_id=job_id, worker_id="w1", step=batch.step, total_steps=batch.total_steps,
                steps_per_second=batch.steps_per_second, metrics=batch.metrics, events=batch.events,
            )  # fmt: skip

    clock = Clock()
    recorder = ProgressRecorder(write, interval_s=INTERVAL_S, clock=clock)

    def report(at: float, kind: str, step: int, **extra: object) -> bool:
        """Report one update at time `at`; write if due, as the supervisor's loop does. True if it wrote."""
        clock.now = at
        recorder.add({"kind": kind, "step": step, "total_steps": 100, "metrics": {"accuracy": 0.5}, **extra})
        if not recorder.due():
            return False
        assert recorder.flush() == "running"
        return True

    gap, at = EVENT_GAP_S, 2 * EVENT_GAP_S
    assert gap < INTERVAL_S
    assert report(0.0, "step", 1)  # the first report is written at once
    assert not report(gap / 2, "step", 2)  # steps wait for the interval
    assert report(at, "evaluation", 2)  # an evaluation does not
    assert not report(at + gap / 2, "evaluation", 3)  # but two writes are EVENT_GAP_S apart at least
    assert report(at + 1.5 * gap, "step", 4)  # ... and then the buffered evaluation goes
    assert report(at + 3 * gap, "log", 4, message="head replaced")  # a log line is an event too
    assert not report(at + 4 * gap, "step", 5)  # steps alone still wait for the interval
    assert report(at + 3 * gap + 1.5 * INTERVAL_S, "step", 6)

    written = [(t, d.get("step")) for _, t, d in job_events(engine, job_id) if t != "status"]
    assert written == [
        ("progress", 1),
        ("evaluation", 2),
        ("progress", 2),
        ("evaluation", 3),
        ("progress", 4),
        ("log", 4),
        ("progress", 4),
        ("progress", 6),
    ]
