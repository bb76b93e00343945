"""Preemption with a real worker process (GANFT_PREEMPTION=1): a `high` job waiting for the only worker
stops the running `low` job, runs, and the stopped job then resumes and ends as if never stopped."""

from __future__ import annotations

import functools

from sqlalchemy import Engine, select, update

from ganft.db.session import session_scope
from ganft.db.tables import Job, JobEvent
from ganft.repo import claims
from ganft.store import Store
from tests.worker.helpers import WorkerProcess, job_events, job_row, make_job, wait_for
from tests.worker.test_pause import HP, _in, _model_sha


def _status_event_ids(engine: Engine, job_id: str) -> list[int]:
    with session_scope(engine) as session:
        return list(
            session.scalars(
                select(JobEvent.id).where(JobEvent.job_id == job_id, JobEvent.type == "status").order_by(JobEvent.seq)
            )
        )


def _with_priority(engine: Engine, job_id: str, priority: str) -> str:
    with session_scope(engine) as session:
        session.execute(update(Job).where(Job.id == job_id).values(priority=claims.PRIORITIES[priority]))
    return job_id


def test_a_high_job_preempts_the_low_one_which_loses_no_work(
    engine: Engine, store: Store, start_worker: WorkerProcess.Factory
) -> None:
    """Tried: one worker busy with a `low` job (800 deterministic steps) once it stored a checkpoint, then a
    `high` job queued. Expect: within `preempt_after_s` + a sweep the low job is `pausing` (reason
    preempted, by the high job), then `queued` with its attempt given back; the worker runs the high job
    next, then the low job from its checkpoint; the low job's weights equal those of the same job run
    without a stop (queued behind it, low too)."""
    low = _with_priority(engine, make_job(engine, store, hyperparameters={**HP, "steps": 800}, seed=3), "low")
    straight = _with_priority(engine, make_job(engine, store, hyperparameters={**HP, "steps": 800}, seed=3), "low")
    worker = start_worker(GANFT_PREEMPTION="1", GANFT_PREEMPT_AFTER_S="1")
    wait_for(lambda: job_row(engine, low).checkpoint_key, timeout=120, what="a checkpoint", logs=worker.logs)
    high = _with_priority(engine, make_job(engine, store, hyperparameters=HP, seed=4), "high")

    ended = ("succeeded", "failed", "cancelled")
    for job_id in (low, high, straight):
        done = wait_for(functools.partial(_in, engine, job_id, *ended), timeout=240, what=job_id, logs=worker.logs)
        assert done.status == "succeeded", (job_id, done.error_code, done.error_message)
    assert f"job {low}: preempted for high-priority job {high}" in worker.logs()

    events = job_events(engine, low)
    status_events = [(seq, d) for seq, t, d in events if t == "status"]
    assert [d["status"] for _, d in status_events] == ["queued", "running", "pausing", "queued", "running", "succeeded"]
    pausing, requeued = status_events[2][1], status_events[3][1]
    assert (pausing.get("reason"), pausing.get("by")) == ("preempted", high)
    assert (requeued.get("reason"), requeued.get("by")) == ("preempted", high)
    assert job_row(engine, low).attempt == 1  # the stop gave its attempt back
    second_claim = status_events[4][0]
    assert (
        min(d["step"] for seq, t, d in events if t == "progress" and seq > second_claim) >= requeued["checkpoint_step"]
    )

    # The worker took the high job between the low job's two runs (event ids count up across jobs).
    low_ids, high_ids, straight_ids = (_status_event_ids(engine, j) for j in (low, high, straight))
    assert low_ids[3] < high_ids[1] < low_ids[4]  # high's `running` after low's requeue, before its resume
    assert straight_ids[1] > low_ids[5]  # FIFO within low: the preempted job kept its place
    assert _model_sha(engine, low) == _model_sha(engine, straight)  # no work lost or changed by the stop
