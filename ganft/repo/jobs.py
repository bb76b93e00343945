"""Jobs, API side: create, read, list, cancel, pause, resume; events, metrics and artifacts reads.

The worker side (claim, heartbeat, progress, finish, reap, dispatch sweep) lives in
`ganft/repo/lifecycle.py`. Both allocate event numbers the same way: `jobs.next_event_seq`
is the seq the next event gets, bumped by a single UPDATE ... RETURNING.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, bindparam, func, select, tuple_, update
from sqlalchemy.orm import Session

from ganft.db.notify import CHANNEL
from ganft.db.reads import Reader, detached, first
from ganft.db.tables import Artifact, Job, JobEvent, JobMetric, utcnow
from ganft.repo.pages import Page, decode_cursor, page_of
from ganft.states import InvalidTransition, is_terminal


def create(
    session: Session,
    *,
    tenant_id: str,
    method: str,
    dataset_id: str,
    validation_dataset_id: str | None,
    base_model_id: str | None,
    evaluator_model_id: str | None,
    hyperparameters: dict[str, Any],
    seed: int,
    max_runtime_s: int | None,
    metadata: dict[str, str],
    total_steps: int,
    priority: int = 1,  # 0 low, 1 normal, 2 high (ganft/repo/claims.py)
    max_attempts: int,
    idempotency_key: str | None,
    request_hash: str,
) -> Job:
    """A `queued` job with its first event (`status: queued`, seq 1)."""
    job = Job(
        tenant_id=tenant_id,
        method=method,
        status="queued",
        dataset_id=dataset_id,
        validation_dataset_id=validation_dataset_id,
        base_model_id=base_model_id,
        evaluator_model_id=evaluator_model_id,
        hyperparameters=hyperparameters,
        seed=seed,
        max_runtime_s=max_runtime_s,
        priority=priority,
        metadata_=metadata,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        total_steps=total_steps,
        max_attempts=max_attempts,
        next_event_seq=1,
    )
    session.add(job)
    session.flush()
    append_event(session, job_id=job.id, type="status", data={"status": "queued"})
    return job


# Built once: SQLAlchemy memoizes a statement object's cache key and compiled form, which makes
# this hot lookup (every /v1/jobs/{id}/... request) about a third cheaper than a fresh select().
_GET = select(Job).where(Job.id == bindparam("job_id"), Job.tenant_id == bindparam("tenant_id"))


def get(session: Session, *, tenant_id: str, job_id: str) -> Job | None:
    """The tenant's job, None when absent or another tenant's."""
    return session.scalars(_GET, {"job_id": job_id, "tenant_id": tenant_id}).one_or_none()


def find_by_idempotency_key(session: Session, *, tenant_id: str, key: str) -> Job | None:
    return session.scalars(select(Job).where(Job.tenant_id == tenant_id, Job.idempotency_key == key)).one_or_none()


# ---------------------------------------------------------------- reads without a session (api hot path)

# Every column, labelled as the ORM attribute (`metadata` -> `metadata_`): rows become detached Jobs.
_COLUMNS = [prop.columns[0].label(prop.key) for prop in Job.__mapper__.column_attrs]
_READ = select(*_COLUMNS).where(Job.id == bindparam("job_id"), Job.tenant_id == bindparam("tenant_id"))


def _page_statement(*, by_status: bool, after: bool) -> Select[Any]:
    query = select(*_COLUMNS).where(Job.tenant_id == bindparam("tenant_id"))
    if by_status:
        query = query.where(Job.status == bindparam("status"))
    if after:
        # Typed: an untyped datetime parameter reaches SQLite in another text format than the column's.
        at, last_id = bindparam("at", type_=Job.created_at.type), bindparam("last_id", type_=Job.id.type)
        query = query.where(tuple_(Job.created_at, Job.id) < tuple_(at, last_id))
    return query.order_by(Job.created_at.desc(), Job.id.desc()).limit(bindparam("limit"))


# Built once (a Reader compiles each statement once): with and without a status filter and a cursor.
_PAGES = {(s, a): _page_statement(by_status=s, after=a) for s in (False, True) for a in (False, True)}


async def read(reader: Reader, *, tenant_id: str, job_id: str) -> Job | None:
    """`get` without a session: a detached Job, None when absent or another tenant's."""
    row = await first(reader, _READ, {"job_id": job_id, "tenant_id": tenant_id})
    return None if row is None else detached(Job, row)


async def read_page(reader: Reader, *, tenant_id: str, status: str | None, limit: int, after: str | None) -> Page[Job]:
    """The tenant's jobs newest first (keyset pages, see ganft/repo/pages.py), as detached Jobs.

    Raises InvalidCursor for an `after` this service did not make."""
    params: dict[str, Any] = {"tenant_id": tenant_id, "limit": limit + 1, "status": status}
    if after:
        params["at"], params["last_id"] = decode_cursor(after)
    rows = await reader.all(_PAGES[(status is not None, bool(after))], params)
    return page_of([detached(Job, row) for row in rows], limit)


def mark_dispatched(session: Session, *, job_id: str) -> None:
    """Record that a broker message was sent (the dispatch sweep re-sends undispatched jobs)."""
    session.execute(update(Job).where(Job.id == job_id, Job.status == "queued").values(dispatched_at=utcnow()))


def request_cancel(session: Session, *, job_id: str) -> Job:
    """Cancel: queued or paused -> cancelled at once, running or pausing -> cancelling (the worker
    stops the trainer).

    Each step is a compare-and-set, so a job claimed meanwhile is handled as running.
    A job already cancelling is returned as is; a terminal job raises InvalidTransition.
    """
    now = utcnow()
    cancelled = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(("queued", "paused")))
        .values(status="cancelled", cancel_requested_at=now, finished_at=now)
        .returning(Job.id)
    ).first()
    if cancelled is not None:
        append_event(session, job_id=job_id, type="status", data={"status": "cancelled"})
    else:
        cancelling = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status.in_(("running", "pausing")))
            .values(status="cancelling", cancel_requested_at=now)
            .returning(Job.id)
        ).first()
        if cancelling is not None:
            append_event(session, job_id=job_id, type="status", data={"status": "cancelling"})
    job = session.get_one(Job, job_id, populate_existing=True)
    if is_terminal(job.status) and cancelled is None:
        raise InvalidTransition(job.status, "cancelled")
    return job


def request_pause(session: Session, *, job_id: str) -> Job:
    """Pause: queued -> paused at once, running -> pausing (the worker has the trainer checkpoint and
    stop, then records `paused`). A job already pausing (a preempted one too: it now ends `paused`)
    or paused is returned as is; any other status raises InvalidTransition. Compare-and-set, like
    `request_cancel`."""
    paused = session.execute(
        update(Job).where(Job.id == job_id, Job.status == "queued").values(status="paused").returning(Job.id)
    ).first()
    if paused is not None:
        append_event(session, job_id=job_id, type="status", data={"status": "paused"})
    elif not start_pausing(session, job_id=job_id):
        # Already pausing: if for a preemption, the user's pause wins (it ends paused, not queued).
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "pausing", Job.preempted_by.is_not(None))
            .values(preempted_by=None)
        )
    job = session.get_one(Job, job_id, populate_existing=True)
    if job.status not in ("pausing", "paused"):
        raise InvalidTransition(job.status, "paused")
    return job


def start_pausing(session: Session, *, job_id: str, preempted_by: str | None = None) -> bool:
    """running -> pausing (compare-and-set) and its status event; False when the job was not running.
    `preempted_by`: the `high` job a preemption makes room for (ganft/repo/preemption.py), said in the event."""
    moved = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "running")
        .values(status="pausing", preempted_by=preempted_by)
        .returning(Job.id)
    ).first()
    if moved is None:
        return False
    why = {} if preempted_by is None else {"reason": "preempted", "by": preempted_by}
    append_event(session, job_id=job_id, type="status", data={"status": "pausing", **why})
    return True


def request_resume(session: Session, *, job_id: str) -> tuple[Job, bool]:
    """Resume: paused -> queued (the next claim continues from the newest checkpoint). A job that is
    queued or running already is returned as is; any other status (pausing included: it has not
    stopped yet) raises InvalidTransition. Returns the job and whether it was requeued now (then
    the caller sends its broker message)."""
    resumed = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "paused")
        .values(status="queued", dispatched_at=None)
        .returning(Job.id)
    ).first()
    if resumed is not None:
        append_event(session, job_id=job_id, type="status", data={"status": "queued", "reason": "resumed"})
    job = session.get_one(Job, job_id, populate_existing=True)
    if job.status not in ("queued", "running"):
        raise InvalidTransition(job.status, "queued")
    return job, resumed is not None


def append_event(session: Session, *, job_id: str, type: str, data: dict[str, Any]) -> JobEvent:
    """Append an event with the job's next seq (1, 2, 3 ...; the SSE event id), and announce it.

    Every event insert goes through here, so every transaction that appends events wakes the job's
    event streams when it commits (`_announce`).
    """
    seq = (
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(next_event_seq=Job.next_event_seq + 1)
            .returning(Job.next_event_seq)
        ).scalar_one()
        - 1
    )
    event = JobEvent(job_id=job_id, seq=seq, type=type, data=data)
    session.add(event)
    session.flush()
    _announce(session, job_id=job_id)
    return event


def _announce(session: Session, *, job_id: str) -> None:
    """Postgres: NOTIFY the API processes' event listeners (ganft/db/notify.py) that `job_id` has new
    events. Delivered only if and when this transaction commits; the same job announced twice in one
    transaction is delivered once. Elsewhere (SQLite) nothing: the streams poll."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_notify(CHANNEL, job_id)))


def list_events(session: Session, *, job_id: str, after: int, limit: int) -> list[JobEvent]:
    return list(
        session.scalars(
            select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.seq > after).order_by(JobEvent.seq).limit(limit)
        )
    )


def job_status(session: Session, *, job_id: str) -> str | None:
    return session.scalar(select(Job.status).where(Job.id == job_id))


def list_metrics(session: Session, *, job_id: str, name: str | None, after: int, limit: int) -> list[JobMetric]:
    """Metric points in write order (step, then insertion); `after` is the last point's id."""
    query = select(JobMetric).where(JobMetric.job_id == job_id, JobMetric.id > after)
    if name is not None:
        query = query.where(JobMetric.name == name)
    return list(session.scalars(query.order_by(JobMetric.id).limit(limit)))


def list_artifacts(session: Session, *, job_id: str) -> list[Artifact]:
    return list(session.scalars(select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.name)))


def get_artifact(session: Session, *, job_id: str, name: str) -> Artifact | None:
    return session.scalars(select(Artifact).where(Artifact.job_id == job_id, Artifact.name == name)).one_or_none()


def count_by_status(session: Session) -> dict[str, int]:
    """Jobs per status over all tenants (the Prometheus gauge)."""
    return {status: count for status, count in session.execute(select(Job.status, func.count()).group_by(Job.status))}
