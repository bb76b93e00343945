"""The garbage collector's queries: which rows the retention policies drop, and what the store must keep.

Everything a row references is kept: the files of datasets that are not deleted (or that an
unfinished job still reads), of models that are not deleted (or that an unfinished job still uses),
every artifact and kept checkpoint of a job, and the whole folder of a job that is not finished.
The policies only ever drop rows of finished jobs (`job_checkpoints`, `artifacts`); the store
sweep (ganft/retention.py) then removes the files no row references any more.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, and_, delete, exists, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased

from ganft.db.tables import Artifact, Dataset, Job, JobCheckpoint, Model
from ganft.states import ACTIVE_STATUSES, TERMINAL_STATUSES


@dataclass(frozen=True)
class Policy:
    """Retention of finished jobs' files (the GANFT_RETAIN_* settings)."""

    checkpoints_days: float | None = None  # drop every checkpoint this long after the job finished
    checkpoints_last_only: bool = False  # keep only the newest checkpoint of a finished job
    artifacts_days: float | None = None  # drop the artifacts this long after, unless the output model is in use
    picture_versions: bool = False  # keep superseded live-picture versions (jobs/<id>/pictures/) too


@dataclass
class Plan:
    """Rows the policies drop now (ids), and their bytes."""

    checkpoint_ids: list[int] = field(default_factory=list)
    checkpoint_bytes: int = 0
    artifact_ids: list[int] = field(default_factory=list)
    artifact_bytes: int = 0


@dataclass
class References:
    """What the store sweep must keep."""

    datasets: set[str] = field(default_factory=set)  # dataset ids whose folder is kept whole
    models: set[str] = field(default_factory=set)  # model ids whose `models/<id>/` folder is kept whole
    jobs: set[str] = field(default_factory=set)  # every job id (a `jobs/<id>/` folder without one is an orphan)
    active_jobs: set[str] = field(default_factory=set)  # unfinished jobs: their folder is kept whole
    keys: set[str] = field(default_factory=set)  # exact keys kept (artifacts, checkpoints)
    prefixes: set[str] = field(default_factory=set)  # folders kept whole (output models in use, pictures)


def _finished_before(cutoff: dt.datetime) -> ColumnElement[bool]:
    return and_(Job.status.in_(TERMINAL_STATUSES), func.coalesce(Job.finished_at, Job.updated_at) < cutoff)


def _used_by_unfinished_job(
    model_id: ColumnElement[str | None] | InstrumentedAttribute[str | None] | InstrumentedAttribute[str],
) -> ColumnElement[bool]:
    user = aliased(Job)  # not correlated with a Job of the outer query
    uses = or_(user.base_model_id == model_id, user.evaluator_model_id == model_id)
    return exists().where(uses, user.status.in_(ACTIVE_STATUSES))


def _output_model_in_use() -> ColumnElement[bool]:
    """The job's output model is not deleted, or an unfinished job uses it (as its base or evaluator)."""
    kept = exists().where(Model.id == Job.output_model_id, Model.deleted_at.is_(None))
    return or_(kept, _used_by_unfinished_job(Job.output_model_id))


def plan(session: Session, policy: Policy, *, now: dt.datetime) -> Plan:
    """The rows of finished jobs that `policy` drops at `now` (nothing is changed)."""
    found = Plan()
    checkpoint_rows: dict[int, int] = {}
    if policy.checkpoints_days is not None:
        cutoff = now - dt.timedelta(days=policy.checkpoints_days)
        query = (
            select(JobCheckpoint.id, JobCheckpoint.size_bytes)
            .join(Job, Job.id == JobCheckpoint.job_id)
            .where(_finished_before(cutoff))
        )
        checkpoint_rows.update(session.execute(query).all())
    if policy.checkpoints_last_only:
        newest = (
            select(JobCheckpoint.job_id, func.max(JobCheckpoint.step).label("step"))
            .group_by(JobCheckpoint.job_id)
            .subquery()
        )
        query = (
            select(JobCheckpoint.id, JobCheckpoint.size_bytes)
            .join(Job, Job.id == JobCheckpoint.job_id)
            .join(newest, newest.c.job_id == JobCheckpoint.job_id)
            .where(Job.status.in_(TERMINAL_STATUSES), JobCheckpoint.step < newest.c.step)
        )
        checkpoint_rows.update(session.execute(query).all())
    found.checkpoint_ids = sorted(checkpoint_rows)
    found.checkpoint_bytes = sum(checkpoint_rows.values())
    if policy.artifacts_days is not None:
        cutoff = now - dt.timedelta(days=policy.artifacts_days)
        query = (
            select(Artifact.id, Artifact.size_bytes)
            .join(Job, Job.id == Artifact.job_id)
            .where(_finished_before(cutoff), or_(Job.output_model_id.is_(None), ~_output_model_in_use()))
        )
        artifact_rows = dict(session.execute(query).all())
        found.artifact_ids = sorted(artifact_rows)
        found.artifact_bytes = sum(artifact_rows.values())
    return found


def apply(session: Session, found: Plan) -> None:
    """Drop the planned rows (the caller commits, then the store sweep removes their files)."""
    for start in range(0, len(found.checkpoint_ids), 1000):
        batch = found.checkpoint_ids[start : start + 1000]
        session.execute(delete(JobCheckpoint).where(JobCheckpoint.id.in_(batch)))
    for start in range(0, len(found.artifact_ids), 1000):
        batch = found.artifact_ids[start : start + 1000]
        session.execute(delete(Artifact).where(Artifact.id.in_(batch)))


def references(session: Session, policy: Policy, *, dropped: Plan | None = None) -> References:
    """What the store must keep, leaving out the rows in `dropped` (a dry run's plan, not applied)."""
    skip_checkpoints = set(dropped.checkpoint_ids) if dropped else set()
    skip_artifacts = set(dropped.artifact_ids) if dropped else set()
    refs = References()
    active = Job.status.in_(ACTIVE_STATUSES)
    for job_id, status in session.execute(select(Job.id, Job.status)):
        refs.jobs.add(job_id)
        if status in ACTIVE_STATUSES:
            refs.active_jobs.add(job_id)
        elif policy.picture_versions:
            refs.prefixes.add(f"jobs/{job_id}/pictures")
    refs.datasets.update(session.scalars(select(Dataset.id).where(Dataset.status.in_(("uploading", "ready")))))
    for column in (Job.dataset_id, Job.validation_dataset_id):
        refs.datasets.update(i for i in session.scalars(select(column).where(active, column.is_not(None))) if i)
    used_models = select(Model.id, Model.storage_prefix).where(
        or_(Model.deleted_at.is_(None), _used_by_unfinished_job(Model.id))
    )
    for model_id, prefix in session.execute(used_models):
        refs.models.add(model_id)
        refs.prefixes.add(prefix.rstrip("/"))
    for row_id, key in session.execute(select(JobCheckpoint.id, JobCheckpoint.storage_key)):
        if row_id not in skip_checkpoints:
            refs.keys.add(key)
    for row_id, key in session.execute(select(Artifact.id, Artifact.storage_key)):
        if row_id not in skip_artifacts:
            refs.keys.add(key)
    return refs
