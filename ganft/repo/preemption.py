"""Preemption (GANFT_PREEMPTION, off by default): a `high` job that no worker has taken stops a `low` one.

A queued `high` job that was rung `preempt_after_s` ago and is still queued (so every worker is busy;
an idle one claims within milliseconds) has the newest running `low` job, the one with the least work
to lose, set to `pausing` with `preempted_by`. Its worker has the trainer checkpoint and stop, as for a
user's pause (worker/runner.py); `lifecycle.pause_job` then puts it back to `queued` rather than
`paused`, with its attempt given back, and the freed worker claims the best queued job: the `high` one
(ganft/repo/claims.py). The preempted job keeps its place by `created_at` and resumes from the checkpoint
it wrote on stopping, so no work is lost beyond the steps since that checkpoint, which is none.

One preemption is in flight at a time: a job already pausing for one holds the rest back, so a burst of
`high` jobs stops workers one by one as each preemption completes, not all `low` jobs at once.
Every worker's sweep runs this; the row locks (`SKIP LOCKED`) and the compare-and-set on `running` keep
two sweeps from stopping two jobs for the same `high` one.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ganft.db.tables import Job, utcnow
from ganft.repo.claims import PRIORITIES, QUEUE_ORDER, tenants_at_quota
from ganft.repo.jobs import start_pausing


@dataclass(frozen=True)
class Preemption:
    stopped: str  # the running `low` job now pausing
    for_job: str  # the queued `high` job it makes room for


def preempt_once(session: Session, *, waited_s: float) -> Preemption | None:
    """Stop the newest running `low` job for the oldest `high` job waiting over `waited_s`; None when
    no `high` job waits that long, none may run (its tenant at quota), no `low` job runs, or another
    preemption is still in flight."""
    in_flight = session.scalar(
        select(func.count()).select_from(Job).where(Job.status == "pausing", Job.preempted_by.is_not(None))
    )
    if in_flight:
        return None
    rung_before = utcnow() - dt.timedelta(seconds=waited_s)
    waiting = session.scalar(
        select(Job.id)
        .where(
            Job.status == "queued",
            Job.priority == PRIORITIES["high"],
            Job.dispatched_at < rung_before,
            Job.tenant_id.not_in(tenants_at_quota()),
        )
        .order_by(*QUEUE_ORDER)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    if waiting is None:
        return None
    victim = session.scalar(
        select(Job.id)
        .where(Job.status == "running", Job.priority == PRIORITIES["low"])
        .order_by(Job.started_at.desc(), Job.id.desc())
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    if victim is None:
        return None
    if not start_pausing(session, job_id=victim, preempted_by=waiting):
        return None
    return Preemption(stopped=victim, for_job=waiting)
