"""Service-wide job statistics for monitoring (all tenants), read when Prometheus scrapes.

Computed from the record of truth, so every API process answers the same numbers and nothing
is lost when a process restarts. Each function is one aggregate query.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Float, case, cast, func, select
from sqlalchemy.orm import Session

from ganft.db.tables import TERMINAL_STATUSES, Job


@dataclass(frozen=True)
class QueueSummary:
    depth: int  # jobs waiting in `queued`
    oldest_created_at: dt.datetime | None  # when the longest-waiting one was created (None: empty queue)


@dataclass(frozen=True)
class DurationHistogram:
    """Run times (finished_at - started_at) of finished jobs of one method and final status."""

    method: str
    status: str
    bucket_counts: tuple[int, ...]  # cumulative: jobs with a run time <= each bound, in the bounds' order
    count: int
    sum_seconds: float


@dataclass(frozen=True)
class RunningRate:
    job_id: str
    method: str
    steps_per_second: float


def queue_summary(session: Session) -> QueueSummary:
    depth, oldest = session.execute(select(func.count(), func.min(Job.created_at)).where(Job.status == "queued")).one()
    return QueueSummary(depth=int(depth), oldest_created_at=oldest)


def _run_seconds(session: Session) -> ColumnElement[float]:
    """finished_at - started_at in seconds, in the session's SQL dialect."""
    if session.get_bind().dialect.name == "sqlite":
        return cast((func.julianday(Job.finished_at) - func.julianday(Job.started_at)) * 86400.0, Float)
    return cast(func.extract("epoch", Job.finished_at - Job.started_at), Float)


def duration_histograms(session: Session, *, bounds: Sequence[float]) -> list[DurationHistogram]:
    """Cumulative run-time histograms of every finished job that ran, by (method, status).

    Over all finished jobs ever (terminal states never change), so the counts only grow and
    Prometheus can take `rate()`s of them. A job cancelled while queued never ran: not counted.
    """
    seconds = _run_seconds(session)
    buckets = [func.count(case((seconds <= bound, 1))) for bound in bounds]
    rows = session.execute(
        select(Job.method, Job.status, func.count(), func.coalesce(func.sum(seconds), 0.0), *buckets)
        .where(Job.status.in_(TERMINAL_STATUSES), Job.started_at.is_not(None), Job.finished_at.is_not(None))
        .group_by(Job.method, Job.status)
        .order_by(Job.method, Job.status)
    ).all()
    return [
        DurationHistogram(
            method=method,
            status=status,
            count=int(count),
            sum_seconds=float(total),
            bucket_counts=tuple(int(n) for n in counts),
        )
        for method, status, count, total, *counts in rows
    ]


def running_rates(session: Session) -> list[RunningRate]:
    """The measured training speed of each running (or cancelling) job that reported one."""
    rows = session.execute(
        select(Job.id, Job.method, Job.steps_per_second)
        .where(Job.status.in_(("running", "cancelling")), Job.steps_per_second.is_not(None))
        .order_by(Job.id)
    ).all()
    return [RunningRate(job_id=i, method=m, steps_per_second=float(r)) for i, m, r in rows if r is not None]
