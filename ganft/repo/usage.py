"""A tenant's stored bytes by kind, from the rows (cheap: no store listing), and its storage quota.

    datasets     ready datasets, plus the declared size of unfinished resumable uploads
    models       uploaded models that are not deleted (the main weights or program file)
    checkpoints  the kept checkpoints of the tenant's jobs
    artifacts    the tenant's jobs' artifacts (their output models' files among them)

Files waiting for the garbage collector (a deleted dataset still read by a running job) are not
counted: the tenant deleted them.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ganft.db.tables import Artifact, Dataset, Job, JobCheckpoint, Model, Tenant

KINDS = ("datasets", "models", "checkpoints", "artifacts")


def tenant_usage(session: Session, *, tenant_id: str) -> dict[str, int]:
    """Stored bytes of the tenant per kind (KINDS)."""
    datasets = session.scalar(
        select(func.coalesce(func.sum(Dataset.size_bytes), 0)).where(
            Dataset.tenant_id == tenant_id, Dataset.status == "ready"
        )
    )
    uploading = session.scalars(
        select(Dataset.stats).where(Dataset.tenant_id == tenant_id, Dataset.status == "uploading")
    )
    declared = sum(int((stats or {}).get("upload", {}).get("size_bytes", 0)) for stats in uploading)
    models = session.scalar(
        select(func.coalesce(func.sum(Model.size_bytes), 0)).where(
            Model.tenant_id == tenant_id, Model.source_job_id.is_(None), Model.deleted_at.is_(None)
        )
    )
    checkpoints = session.scalar(
        select(func.coalesce(func.sum(JobCheckpoint.size_bytes), 0))
        .join(Job, Job.id == JobCheckpoint.job_id)
        .where(Job.tenant_id == tenant_id)
    )
    artifacts = session.scalar(
        select(func.coalesce(func.sum(Artifact.size_bytes), 0))
        .join(Job, Job.id == Artifact.job_id)
        .where(Job.tenant_id == tenant_id)
    )
    return {
        "datasets": int(datasets or 0) + declared,
        "models": int(models or 0),
        "checkpoints": int(checkpoints or 0),
        "artifacts": int(artifacts or 0),
    }


def storage_quota(session: Session, *, tenant_id: str) -> int | None:
    """The tenant's `max_storage_bytes` (None: unlimited)."""
    return session.scalar(select(Tenant.max_storage_bytes).where(Tenant.id == tenant_id))
