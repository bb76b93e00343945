"""Preemption on the real Postgres and on SQLite: which job is stopped for which, one at a time, and
where the stopped job goes (queued, not paused; a user's pause wins; a lost worker's job is queued)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine, select, update

from ganft.db.session import session_scope
from ganft.db.tables import Job, JobEvent, utcnow
from ganft.repo import jobs, lifecycle
from ganft.repo.preemption import Preemption, preempt_once
from tests.db import test_claims
from tests.db.test_claims import add_job, claim, set_quota

db = test_claims.db  # the fixture: each test on Postgres and on SQLite

WAIT_S = 30.0


def preempt(engine: Engine) -> Preemption | None:
    with session_scope(engine) as session:
        return preempt_once(session, waited_s=WAIT_S)


def rung_ago(engine: Engine, job_id: str, seconds: float) -> None:
    with session_scope(engine) as session:
        at = utcnow() - dt.timedelta(seconds=seconds)
        session.execute(update(Job).where(Job.id == job_id).values(dispatched_at=at))


def running(engine: Engine, tenant: str, priority: str, minute: int, started_s_ago: float) -> str:
    job_id = add_job(engine, tenant, priority=priority, minute=minute)
    assert claim(engine, worker=f"w-{job_id}") == job_id
    with session_scope(engine) as session:
        at = utcnow() - dt.timedelta(seconds=started_s_ago)
        session.execute(update(Job).where(Job.id == job_id).values(started_at=at))
    return job_id


def row(engine: Engine, job_id: str) -> Job:
    with session_scope(engine) as session:
        return session.execute(select(Job).where(Job.id == job_id)).scalar_one()


def last_status_event(engine: Engine, job_id: str) -> dict[str, object]:
    with session_scope(engine) as session:
        return (
            session.scalars(
                select(JobEvent.data)
                .where(JobEvent.job_id == job_id, JobEvent.type == "status")
                .order_by(JobEvent.seq.desc())
            ).first()
            or {}
        )


def test_a_waiting_high_job_stops_the_newest_low_job_only(db: Engine) -> None:
    """Tried: low jobs started 300 s and 60 s ago and a normal one 10 s ago, all running; a high job rung
    10 s ago, then 40 s ago. Expect: nothing at 10 s (it has not waited long enough); at 40 s the low job
    started 60 s ago (the newest low one: least work lost) is pausing, preempted_by the high job, with a
    `pausing` event saying why; nothing more while that preemption is in flight."""
    old_low = running(db, "a", "low", 0, started_s_ago=300)
    new_low = running(db, "b", "low", 1, started_s_ago=60)
    normal = running(db, "c", "normal", 2, started_s_ago=10)
    high = add_job(db, "d", priority="high", minute=3)
    rung_ago(db, high, 10)
    assert preempt(db) is None
    rung_ago(db, high, 40)
    assert preempt(db) == Preemption(stopped=new_low, for_job=high)
    assert (row(db, new_low).status, row(db, new_low).preempted_by) == ("pausing", high)
    assert last_status_event(db, new_low) == {"status": "pausing", "reason": "preempted", "by": high}
    assert [row(db, j).status for j in (old_low, normal)] == ["running", "running"]
    assert preempt(db) is None  # one in flight at a time


def test_no_preemption_without_a_low_job_or_for_a_tenant_at_its_quota(db: Engine) -> None:
    """Tried: a normal job running and a high job waiting; then a low job running and the high job's tenant
    at its quota of 0. Expect: nothing is stopped either time (normal jobs are never preempted; a high job
    that could not run anyway stops no one)."""
    running(db, "a", "normal", 0, started_s_ago=60)
    high = add_job(db, "q", priority="high", minute=1)
    rung_ago(db, high, 60)
    assert preempt(db) is None
    set_quota(db, "q", 0)  # the high job waits for its tenant's quota now, and the low job can start
    running(db, "b", "low", 2, started_s_ago=60)
    rung_ago(db, high, 60)  # set_quota re-rings the tenant's queued jobs
    assert preempt(db) is None


def test_the_stopped_job_is_queued_again_with_its_attempt_given_back(db: Engine) -> None:
    """Tried: the worker of a preempted job records the trainer's stop (`pause_job`). Expect: `queued`
    (not `paused`), attempt given back, preempted_by cleared, a `queued` event with reason and checkpoint
    step; the next claim takes the high job, the one after it the preempted job."""
    low = running(db, "a", "low", 0, started_s_ago=60)
    high = add_job(db, "b", priority="high", minute=1)
    rung_ago(db, high, 60)
    assert preempt(db) is not None
    with session_scope(db) as session:
        session.execute(update(Job).where(Job.id == low).values(checkpoint_step=40))
        assert lifecycle.pause_job(session, job_id=low, worker_id=f"w-{low}") == "queued"
    stopped = row(db, low)
    assert (stopped.status, stopped.attempt, stopped.preempted_by, stopped.worker_id) == ("queued", 0, None, None)
    assert last_status_event(db, low) == {"status": "queued", "reason": "preempted", "by": high, "checkpoint_step": 40}
    assert [claim(db), claim(db)] == [high, low]


def test_a_users_pause_during_a_preemption_ends_paused(db: Engine) -> None:
    """Tried: a user pauses a job while it is pausing for a preemption. Expect: it ends `paused` (the user
    asked for that), not queued."""
    low = running(db, "a", "low", 0, started_s_ago=60)
    high = add_job(db, "b", priority="high", minute=1)
    rung_ago(db, high, 60)
    assert preempt(db) is not None
    with session_scope(db) as session:
        assert jobs.request_pause(session, job_id=low).status == "pausing"
    with session_scope(db) as session:
        assert lifecycle.pause_job(session, job_id=low, worker_id=f"w-{low}") == "paused"
    assert row(db, low).status == "paused"


def test_a_worker_lost_while_preempting_leaves_the_job_queued(db: Engine) -> None:
    """Tried: the lease of a job pausing for a preemption expires (its worker died). Expect: the reaper puts
    it back to `queued` (a user's pause would have left it `paused`)."""
    low = running(db, "a", "low", 0, started_s_ago=60)
    high = add_job(db, "b", priority="high", minute=1)
    rung_ago(db, high, 60)
    assert preempt(db) is not None
    with session_scope(db) as session:
        session.execute(update(Job).where(Job.id == low).values(lease_expires_at=utcnow() - dt.timedelta(seconds=1)))
    with session_scope(db) as session:
        assert lifecycle.reap_expired_leases(session) == [(low, "queued")]
    assert (row(db, low).status, row(db, low).preempted_by) == ("queued", None)
