"""Worker-side data access for a job's life: claim, heartbeat, progress, checkpoint, finish, reap, dispatch.

Every state change is a compare-and-set: the UPDATE names the state it expects (and, for a
running job, the worker that holds it), so a duplicate broker message, a reaped lease or a
second finalize finds nothing to change. Terminal states never change. Like the other repo
modules these functions never commit: the caller runs each in its own `session_scope()`,
one short transaction each; the worker never holds a transaction open while training. When
a compare-and-set finds nothing to change they write nothing at all.

Times are Python-side UTC (`utcnow`); leases assume the workers' clocks agree to well under
`lease_s` (NTP), which is what a 60 s lease allows for.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import and_, delete, func, insert, literal, select, update
from sqlalchemy.orm import Session

from ganft.db.tables import Artifact, Dataset, Job, JobMetric, Model, utcnow
from ganft.repo import checkpoints
from ganft.repo.jobs import append_event

HELD = ("running", "cancelling", "pausing")  # the statuses of a job a worker holds (claimed, lease renewed)


# ---------------------------------------------------------------- what the worker reads and writes


@dataclass(frozen=True)
class StoredDataset:
    id: str
    format: str  # imagefolder | npz | csv
    storage_key: str | None  # None: the upload never completed (the job cannot run)


@dataclass(frozen=True)
class StoredModel:
    id: str
    kind: str  # weights | program
    role: str  # classifier | generator | gan
    storage_prefix: str  # folder in the store holding model.* (and generator.* / discriminator.*)


@dataclass(frozen=True)
class ClaimedJob:
    """A snapshot of everything the runner needs, taken when the job is claimed."""

    id: str
    tenant_id: str
    method: str
    hyperparameters: dict[str, Any]
    seed: int
    max_runtime_s: int | None
    attempt: int
    worker_id: str
    dataset: StoredDataset
    validation: StoredDataset | None
    base_model: StoredModel | None
    evaluator: StoredModel | None
    checkpoint_key: str | None  # newest checkpoint of an earlier attempt: resume from it
    checkpoint_step: int | None


@dataclass(frozen=True)
class MetricPoint:
    step: int
    name: str
    value: float


@dataclass(frozen=True)
class EventRecord:
    type: str  # status | progress | evaluation | checkpoint | log | artifact
    data: dict[str, Any]


@dataclass(frozen=True)
class ArtifactRecord:
    name: str
    size_bytes: int
    sha256: str
    content_type: str
    storage_key: str


@dataclass(frozen=True)
class OutputModel:
    """The model a succeeded job registers (its `output_model_id`)."""

    name: str
    role: str  # classifier (ssgan) | gan (adapt)
    config: dict[str, Any]  # model.json
    storage_prefix: str
    size_bytes: int  # of the main file: model.safetensors, or model.pt2 for a program
    sha256: str
    kind: Literal["weights", "program"] = "weights"  # program: a model.pt2 folder (ssgan from a user's program)


def _ours(job_id: str, worker_id: str) -> Any:
    """The row is this worker's running (or cancelling) job."""
    return and_(Job.id == job_id, Job.worker_id == worker_id, Job.status.in_(HELD))


def _update(*where: Any) -> Any:
    return update(Job).where(*where).execution_options(synchronize_session=False)


def _changed(session: Session, statement: Any) -> bool:
    """Run a compare-and-set UPDATE of one job; True when it matched (and changed) the row."""
    return session.execute(statement.returning(Job.id)).first() is not None


def _status_event(session: Session, job_id: str, status: str, **data: Any) -> None:
    append_event(session, job_id=job_id, type="status", data={"status": status, **data})


# ---------------------------------------------------------------- claim, lease, status


def claim_job(session: Session, *, job_id: str, worker_id: str, lease_s: float) -> ClaimedJob | None:
    """Take this queued job (compare-and-set on `status='queued'`); None when it is not queued any more.
    Workers claim with `ganft.repo.claims.claim_next` (the best eligible job); this one is for tests and tools.

    `attempt` goes up by one; a later attempt keeps `started_at` and finds the newest
    checkpoint in `checkpoint_key`. A duplicate broker message lands here and gets None.
    """
    claimed = _changed(
        session, _update(Job.id == job_id, Job.status == "queued").values(**claimed_values(worker_id, lease_s))
    )
    if not claimed:
        return None
    return claimed_snapshot(session, job_id=job_id, worker_id=worker_id)


def claimed_values(worker_id: str, lease_s: float) -> dict[str, Any]:
    """The SET of a claim: `running`, attempt + 1, this worker's lease; `started_at` only on the first claim."""
    now = utcnow()
    return {
        "status": "running",
        "attempt": Job.attempt + 1,
        "worker_id": worker_id,
        "lease_expires_at": now + dt.timedelta(seconds=lease_s),
        "started_at": func.coalesce(Job.started_at, literal(now, Job.started_at.type)),
    }


def claimed_snapshot(session: Session, *, job_id: str, worker_id: str) -> ClaimedJob:
    """What the runner needs of a job this transaction just claimed, and its `status: running` event."""
    job = session.execute(select(Job).where(Job.id == job_id).execution_options(populate_existing=True)).scalar_one()
    snapshot = ClaimedJob(
        id=job.id,
        tenant_id=job.tenant_id,
        method=job.method,
        hyperparameters=dict(job.hyperparameters or {}),
        seed=job.seed,
        max_runtime_s=job.max_runtime_s,
        attempt=job.attempt,
        worker_id=worker_id,
        dataset=_dataset(session, job.dataset_id),
        validation=_dataset(session, job.validation_dataset_id) if job.validation_dataset_id else None,
        base_model=_model(session, job.base_model_id) if job.base_model_id else None,
        evaluator=_model(session, job.evaluator_model_id) if job.evaluator_model_id else None,
        checkpoint_key=job.checkpoint_key,
        checkpoint_step=job.checkpoint_step,
    )
    _status_event(session, job_id, "running", attempt=job.attempt)
    return snapshot


def _dataset(session: Session, dataset_id: str) -> StoredDataset:
    row = session.execute(select(Dataset).where(Dataset.id == dataset_id)).scalar_one()
    return StoredDataset(id=row.id, format=row.format, storage_key=row.storage_key)


def _model(session: Session, model_id: str) -> StoredModel:
    row = session.execute(select(Model).where(Model.id == model_id)).scalar_one()
    return StoredModel(id=row.id, kind=row.kind, role=row.role, storage_prefix=row.storage_prefix)


def renew_lease(session: Session, *, job_id: str, worker_id: str, lease_s: float) -> str | None:
    """Heartbeat: push the lease forward; the job's status (`running`/`cancelling`), or None when lost."""
    return session.execute(
        _update(_ours(job_id, worker_id))
        .values(lease_expires_at=utcnow() + dt.timedelta(seconds=lease_s))
        .returning(Job.status)
    ).scalar_one_or_none()


def current_status(session: Session, *, job_id: str, worker_id: str) -> str | None:
    """The job's status while this worker holds it (a cheap read for cancel checks), else None."""
    return session.execute(select(Job.status).where(_ours(job_id, worker_id))).scalar_one_or_none()


# ---------------------------------------------------------------- progress and checkpoints


def record_progress(
    session: Session,
    *,
    job_id: str,
    worker_id: str,
    step: int,
    total_steps: int,
    steps_per_second: float | None,
    metrics: Sequence[MetricPoint] = (),
    events: Sequence[EventRecord] = (),
) -> str | None:
    """One throttled write: the job's step, buffered metric points and events, in one transaction.

    Returns the job's status (so the caller also learns of a cancel), or None when the job
    is no longer this worker's (nothing is written then).
    """
    status = session.execute(
        _update(_ours(job_id, worker_id))
        .values(step=step, total_steps=total_steps, steps_per_second=steps_per_second)
        .returning(Job.status)
    ).scalar_one_or_none()
    if status is None:
        return None
    now = utcnow()
    if metrics:
        session.execute(
            insert(JobMetric),
            [{"job_id": job_id, "step": m.step, "name": m.name, "value": m.value, "created_at": now} for m in metrics],
        )
    for event in events:
        append_event(session, job_id=job_id, type=event.type, data=event.data)
    return status


def record_checkpoint(
    session: Session, *, job_id: str, worker_id: str, key: str, step: int, size_bytes: int, sha256: str
) -> list[str] | None:
    """Point the job at its newest checkpoint in the store (the next attempt resumes from it), list it
    among the job's kept checkpoints and apply the keep policy (ganft/repo/checkpoints.py).

    Returns the store keys of the checkpoints no longer kept (delete them after commit), or None
    when the job is no longer this worker's (nothing is written then).
    """
    method, hyperparameters = session.execute(
        _update(_ours(job_id, worker_id))
        .values(checkpoint_key=key, checkpoint_step=step)
        .returning(Job.method, Job.hyperparameters)
    ).first() or (None, None)
    if method is None:
        return None
    keep_last = int((hyperparameters or {}).get("keep_checkpoints") or checkpoints.DEFAULT_KEEP)
    dropped = checkpoints.add(
        session,
        job_id=job_id,
        method=method,
        step=step,
        storage_key=key,
        size_bytes=size_bytes,
        sha256=sha256,
        keep_last=keep_last,
    )
    data = {"step": step, "key": key, "size_bytes": size_bytes, "sha256": sha256}
    append_event(session, job_id=job_id, type="checkpoint", data=data)
    return dropped


def record_artifact(session: Session, *, job_id: str, worker_id: str, artifact: ArtifactRecord, step: int) -> bool:
    """Register a file of a running job (a live picture), replacing the job's artifact of that name, and
    append an `artifact` event; False (nothing written) when the job is no longer this worker's."""
    if not _changed(session, _update(_ours(job_id, worker_id)).values(updated_at=utcnow())):
        return False
    session.execute(delete(Artifact).where(Artifact.job_id == job_id, Artifact.name == artifact.name))
    session.execute(insert(Artifact), [_artifact_row(job_id, artifact, utcnow())])
    data = {
        "name": artifact.name,
        "size_bytes": artifact.size_bytes,
        "sha256": artifact.sha256,
        "content_type": artifact.content_type,
        "step": step,
    }
    append_event(session, job_id=job_id, type="artifact", data=data)
    return True


def _artifact_row(job_id: str, a: ArtifactRecord, now: dt.datetime) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "name": a.name,
        "size_bytes": a.size_bytes,
        "sha256": a.sha256,
        "content_type": a.content_type,
        "storage_key": a.storage_key,
        "created_at": now,
    }


# ---------------------------------------------------------------- finishing


def succeed_job(
    session: Session,
    *,
    job_id: str,
    worker_id: str,
    result: dict[str, Any],
    artifacts: Sequence[ArtifactRecord],
    output_model: OutputModel,
) -> bool:
    """Finish a job as `succeeded`: artifacts (replacing any registered while it ran), output model,
    result and status in one transaction.

    The status compare-and-set comes first, so a second finalize (or one racing the reaper)
    changes nothing and registers no second set of artifacts. False when nothing was changed.
    """
    now = utcnow()
    method = session.scalar(select(Job.method).where(_ours(job_id, worker_id)))
    if method is None:
        return False
    best = checkpoints.best_evaluation(method, checkpoints.evaluations(session, job_id=job_id))
    if best is not None:  # the best evaluated step (its checkpoint is kept: ganft/repo/checkpoints.py)
        result = {**result, "best_step": best.step}
    done = _changed(
        session,
        _update(_ours(job_id, worker_id)).values(
            status="succeeded",
            result=result,
            finished_at=now,
            lease_expires_at=None,
            error_code=None,
            error_message=None,
        ),
    )
    if not done:
        return False
    tenant_id = session.execute(select(Job.tenant_id).where(Job.id == job_id)).scalar_one()
    model = Model(
        tenant_id=tenant_id,
        name=output_model.name,
        kind=output_model.kind,
        role=output_model.role,
        config=output_model.config,
        storage_prefix=output_model.storage_prefix,
        size_bytes=output_model.size_bytes,
        sha256=output_model.sha256,
        source_job_id=job_id,
        created_at=now,
    )
    session.add(model)
    session.flush()
    # The final set replaces what the run registered while it ran (live pictures, any attempt's).
    session.execute(delete(Artifact).where(Artifact.job_id == job_id))
    session.execute(insert(Artifact), [_artifact_row(job_id, a, now) for a in artifacts])
    session.execute(_update(Job.id == job_id).values(output_model_id=model.id))
    _status_event(session, job_id, "succeeded", output_model_id=model.id)
    return True


def end_job(
    session: Session,
    *,
    job_id: str,
    worker_id: str,
    status: str,
    error_code: str | None = None,
    error_message: str | None = None,
) -> bool:
    """Finish a job as `failed` (with an error) or `cancelled` (the last checkpoint stays recorded)."""
    if status not in ("failed", "cancelled"):
        raise ValueError(f"end_job cannot set status {status!r}")
    done = _changed(
        session,
        _update(_ours(job_id, worker_id)).values(
            status=status,
            error_code=error_code,
            error_message=error_message,
            finished_at=utcnow(),
            lease_expires_at=None,
        ),
    )
    if not done:
        return False
    error = {"code": error_code, "message": error_message} if error_code else None
    _status_event(session, job_id, status, **({"error": error} if error else {}))
    return True


def release_job(session: Session, *, job_id: str, worker_id: str) -> str | None:
    """Give a job back because this worker is shutting down: `queued` again (resumes from its
    checkpoint on the next claim), `cancelled` if a cancel was requested, `paused` if a pause was.
    Returns the new status."""
    status = current_status(session, job_id=job_id, worker_id=worker_id)
    if status is None:
        return None
    if status == "cancelling":
        return "cancelled" if end_job(session, job_id=job_id, worker_id=worker_id, status="cancelled") else None
    if status == "pausing":  # a pause was asked for meanwhile: honour it rather than requeue
        return pause_job(session, job_id=job_id, worker_id=worker_id)
    released = _changed(
        session,
        _update(_ours(job_id, worker_id)).values(
            status="queued", worker_id=None, lease_expires_at=None, dispatched_at=None
        ),
    )
    if not released:
        return None
    _status_event(session, job_id, "queued", reason="worker shut down")
    return "queued"


def pause_job(session: Session, *, job_id: str, worker_id: str) -> str | None:
    """The trainer stopped for a pause: `paused` (free of any worker, resumed from its newest
    checkpoint), or `cancelled` if a cancel came meanwhile. Returns the new status, None when lost.

    The attempt is given back (a pause is not a failed try: it does not count towards `max_attempts`).
    A job preempted for a `high` one (`preempted_by`, ganft/repo/preemption.py) is `queued` instead.
    """
    for _ in range(3):  # a user's pause may clear `preempted_by` between the read and the update: read again
        status = current_status(session, job_id=job_id, worker_id=worker_id)
        if status is None:
            return None
        if status == "cancelling":
            return "cancelled" if end_job(session, job_id=job_id, worker_id=worker_id, status="cancelled") else None
        row = session.execute(
            select(Job.checkpoint_step, Job.preempted_by).where(Job.id == job_id).with_for_update()
        ).one()
        new_status = "paused" if row.preempted_by is None else "queued"
        stopped = _changed(
            session,
            _update(_ours(job_id, worker_id), Job.status == "pausing", _same_preemption(row.preempted_by)).values(
                status=new_status,
                attempt=Job.attempt - 1,
                worker_id=None,
                lease_expires_at=None,
                dispatched_at=None,
                steps_per_second=None,
                preempted_by=None,
            ),
        )
        if stopped:
            break
    else:
        return None
    if new_status == "queued":
        _status_event(
            session, job_id, "queued", reason="preempted", by=row.preempted_by, checkpoint_step=row.checkpoint_step
        )
    else:
        _status_event(session, job_id, "paused", checkpoint_step=row.checkpoint_step)
    return new_status


def _same_preemption(preempted_by: str | None) -> Any:
    """The compare part for `preempted_by` as read: a user's pause that cleared it meanwhile wins."""
    return Job.preempted_by.is_(None) if preempted_by is None else Job.preempted_by == preempted_by


# ---------------------------------------------------------------- reaper and dispatch sweep


def reap_expired_leases(session: Session) -> list[tuple[str, str]]:
    """Jobs whose worker stopped renewing its lease: back to `queued` (attempt < max_attempts),
    else `failed` with `worker_lost`; a `cancelling` one becomes `cancelled`, a `pausing` one `paused`
    (it resumes from its newest stored checkpoint), or `queued` when it was being preempted.

    Returns `(job_id, new_status)` for each job changed. Each change is a compare-and-set on
    the `(status, attempt)` seen, so two sweepers never both move a job.
    """
    now = utcnow()
    expired = session.execute(
        select(Job.id, Job.status, Job.attempt, Job.max_attempts, Job.preempted_by).where(
            Job.status.in_(HELD), Job.lease_expires_at < now
        )
    ).all()
    changed: list[tuple[str, str]] = []
    for job_id, status, attempt, max_attempts, preempted_by in expired:
        values: dict[str, Any] = {"worker_id": None, "lease_expires_at": None}
        event: dict[str, Any] = {"reason": "lease expired", "attempt": attempt}
        if status == "cancelling":
            new_status = "cancelled"
            values.update(finished_at=now)
        elif status == "pausing":  # a preempted one waits for a worker again, from its newest checkpoint
            new_status = "queued" if preempted_by is not None else "paused"
            values.update(dispatched_at=None, steps_per_second=None, preempted_by=None)
        elif attempt < max_attempts:
            new_status = "queued"
            values.update(dispatched_at=None)
        else:
            new_status = "failed"
            message = f"the worker was lost {attempt} times (max_attempts={max_attempts})"
            values.update(finished_at=now, error_code="worker_lost", error_message=message)
            event["error"] = {"code": "worker_lost", "message": message}
        moved = _changed(
            session,
            _update(Job.id == job_id, Job.status == status, Job.attempt == attempt, Job.lease_expires_at < now).values(
                status=new_status, **values
            ),
        )
        if moved:
            _status_event(session, job_id, new_status, **event)
            changed.append((job_id, new_status))
    return changed


def claim_dispatch(
    session: Session, *, stale_before: dt.datetime, stale_limit: int | None = None, limit: int = 100
) -> list[str]:
    """Queued jobs never sent to the broker, then (at most `stale_limit` of them; None: no bound)
    queued jobs sent before `stale_before`: mark them sent now and return their ids (oldest first
    within each group, `limit` in all). A compare-and-set on the old `dispatched_at` keeps two
    sweepers from both taking a job; the caller sends them and `undo_dispatch`es on failure."""
    queued = select(Job.id, Job.dispatched_at).where(Job.status == "queued").order_by(Job.created_at, Job.id)
    rows = list(session.execute(queued.where(Job.dispatched_at.is_(None)).limit(limit)).all())
    stale_wanted = limit - len(rows) if stale_limit is None else min(stale_limit, limit - len(rows))
    if stale_wanted > 0:
        rows += session.execute(queued.where(Job.dispatched_at < stale_before).limit(stale_wanted)).all()
    now = utcnow()
    taken: list[str] = []
    for job_id, old in rows:
        same = Job.dispatched_at.is_(None) if old is None else Job.dispatched_at == old
        if _changed(session, _update(Job.id == job_id, Job.status == "queued", same).values(dispatched_at=now)):
            taken.append(job_id)
    return taken


def retried(session: Session, *, job_ids: Sequence[str]) -> set[str]:
    """Those of `job_ids` that ran before (attempt > 0: reaped, or handed back by a stopped worker)."""
    if not job_ids:
        return set()
    return set(session.scalars(select(Job.id).where(Job.id.in_(list(job_ids)), Job.attempt > 0)))


def count_dispatched(session: Session, *, before: dt.datetime | None = None) -> int:
    """Queued jobs already sent to the broker (sent before `before`, when given): each should
    have a message waiting in the broker's queue, unless the broker lost it."""
    where = [Job.status == "queued", Job.dispatched_at.is_not(None)]
    if before is not None:
        where.append(Job.dispatched_at < before)
    return int(session.scalar(select(func.count()).select_from(Job).where(*where)) or 0)


def undo_dispatch(session: Session, *, job_ids: Sequence[str]) -> None:
    """The broker refused these jobs: leave them for the next sweep."""
    if job_ids:
        session.execute(_update(Job.id.in_(list(job_ids)), Job.status == "queued").values(dispatched_at=None))
