"""Which queued job a free worker takes: the highest priority first, first come first served within a
priority, and none of a tenant already running its `max_running_jobs`.

The order is decided here, from the database, at claim time. A broker message is only a doorbell: the
worker that receives one claims the best eligible job, whichever job the message named, so lost or
duplicate messages and broker restarts cannot change the order. A job handed back to the queue (its
worker was lost or stopped) keeps its `created_at` and so its place: retries keep their head start.

Postgres: one `SELECT ... ORDER BY priority DESC, created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED` (a
backward scan of `ix_jobs_status_priority_created`), so concurrent workers never wait on each other's
candidate. A tenant with a quota is then locked (`FOR NO KEY UPDATE`: job inserts, which take `FOR KEY
SHARE` on the tenant, are not blocked) and its running jobs counted again, so two workers claiming for
the same tenant at once cannot both pass its limit.

SQLite (the embedded default; one writer at a time, no `SKIP LOCKED`): one `UPDATE ... WHERE id =
(SELECT ... ORDER BY ... LIMIT 1)`, which SQLite runs atomically under its write lock.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session, aliased

from ganft.db.tables import Job, Tenant
from ganft.repo.lifecycle import HELD, ClaimedJob, claimed_snapshot, claimed_values

PRIORITIES: dict[str, int] = {"low": 0, "normal": 1, "high": 2}  # the wire name -> jobs.priority
PRIORITY_NAMES: dict[int, str] = {v: k for k, v in PRIORITIES.items()}
# The queue's order; `ix_jobs_status_priority_created` (status, priority, created_at DESC, id DESC) read
# backwards within `status = 'queued'` gives exactly this, so the first eligible row ends the scan.
QUEUE_ORDER = (Job.priority.desc(), Job.created_at, Job.id)


def tenants_at_quota() -> Select[Any]:
    """Ids of the tenants whose held (running, cancelling, pausing) jobs reach their `max_running_jobs`."""
    # Aliases of their own: the claim's query also reads `jobs` and `tenants`, which must not correlate in here.
    tenant, held = aliased(Tenant), aliased(Job)
    running = (
        select(func.count())
        .select_from(held)
        .where(held.tenant_id == tenant.id, held.status.in_(HELD))
        .correlate(tenant)
        .scalar_subquery()
    )
    return select(tenant.id).where(tenant.max_running_jobs.is_not(None), tenant.max_running_jobs <= running)


# Built once (aliases and subqueries cost more to build than the query takes to run; SQLAlchemy caches
# a statement object's compiled form): the Postgres pick, and SQLite's best job as a scalar subquery.
_PICK = (
    select(Job.id, Job.tenant_id, Job.dispatched_at, Tenant.max_running_jobs)
    .join(Tenant, Tenant.id == Job.tenant_id)
    .where(Job.status == "queued", Job.tenant_id.not_in(tenants_at_quota()))
    .order_by(*QUEUE_ORDER)
    .limit(1)
    .with_for_update(of=Job, skip_locked=True)
)
_queued = aliased(Job)
_BEST = (
    select(_queued.id)
    .where(_queued.status == "queued", _queued.tenant_id.not_in(tenants_at_quota()))
    .order_by(_queued.priority.desc(), _queued.created_at, _queued.id)  # QUEUE_ORDER, on the alias
    .limit(1)
    .scalar_subquery()
)


def claim_next(session: Session, *, worker_id: str, lease_s: float, doorbell: str | None = None) -> ClaimedJob | None:
    """Claim the best eligible queued job for `worker_id` (see the module docstring); None when none is.

    `doorbell` is the job named by the broker message that woke this worker (None when a worker that
    finished a job looks for the next). When another job is claimed in its place and that job had no
    message of its own, the doorbell's job is marked unsent, so the dispatch sweep rings for it again
    (worker/sweeper.py) rather than count its spent message as one the broker lost.
    """
    if session.get_bind().dialect.name == "postgresql":
        picked = _claim_postgres(session, worker_id=worker_id, lease_s=lease_s)
    else:
        picked = _claim_single_statement(session, worker_id=worker_id, lease_s=lease_s)
    if picked is None:
        return None
    job_id, had_message = picked
    if doorbell is not None and doorbell != job_id and not had_message:
        session.execute(
            update(Job)
            .where(Job.id == doorbell, Job.status == "queued")
            .values(dispatched_at=None)
            .execution_options(synchronize_session=False)
        )
    return claimed_snapshot(session, job_id=job_id, worker_id=worker_id)


def _claim_postgres(session: Session, *, worker_id: str, lease_s: float) -> tuple[str, bool] | None:
    full: set[str] = set()  # tenants found at their quota under their lock in this claim
    while True:
        query = _PICK.where(Job.tenant_id.not_in(full)) if full else _PICK
        row = session.execute(query).first()
        if row is None:
            return None
        job_id, tenant_id, dispatched_at, quota = row
        if quota is not None and not _below_quota(session, tenant_id=tenant_id):
            full.add(tenant_id)  # a concurrent claim took its last slot; the job row stays locked till commit
            continue
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "queued")
            .values(**claimed_values(worker_id, lease_s))
            .execution_options(synchronize_session=False)
        )
        return job_id, dispatched_at is not None


def _below_quota(session: Session, *, tenant_id: str) -> bool:
    """Lock the tenant (until commit) and count its held jobs again: True while it may start one more."""
    quota = session.execute(
        select(Tenant.max_running_jobs).where(Tenant.id == tenant_id).with_for_update(key_share=True)
    ).scalar_one()
    if quota is None:
        return True
    running = session.scalar(
        select(func.count()).select_from(Job).where(Job.tenant_id == tenant_id, Job.status.in_(HELD))
    )
    return int(running or 0) < quota


def _claim_single_statement(session: Session, *, worker_id: str, lease_s: float) -> tuple[str, bool] | None:
    row = session.execute(
        update(Job)
        .where(Job.id == _BEST, Job.status == "queued")
        .values(**claimed_values(worker_id, lease_s))
        .returning(Job.id, Job.dispatched_at)
        .execution_options(synchronize_session=False)
    ).first()
    return None if row is None else (row[0], row[1] is not None)
