"""The record of truth: SQLAlchemy 2.0 tables. The schema itself changes only through Alembic.

Ids are short prefixed strings (`job_...`), timestamps are timezone-aware UTC, statuses are
text with CHECK constraints (not DB enums, so adding a state is a plain migration).
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

JOB_STATUSES = ("queued", "running", "cancelling", "pausing", "paused", "succeeded", "failed", "cancelled")
TERMINAL_STATUSES = ("succeeded", "failed", "cancelled")

# JSONB on Postgres, JSON text elsewhere (the embedded SQLite default).
Json = JSON().with_variant(JSONB(), "postgresql")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id(prefix: str) -> str:
    """A prefixed random id, e.g. `job_3f9c...` (96 bits of randomness)."""
    return f"{prefix}_{secrets.token_hex(12)}"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _status_check(name: str, values: tuple[str, ...]) -> CheckConstraint:
    allowed = ", ".join(f"'{v}'" for v in values)
    return CheckConstraint(f"status IN ({allowed})", name=name)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ten"))
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    webhook_url: Mapped[str | None] = mapped_column(Text)  # default for jobs that name none
    webhook_secret: Mapped[str | None] = mapped_column(String(100))  # whsec_...; when GANFT_WEBHOOK_SECRET is ""
    max_running_jobs: Mapped[int | None] = mapped_column(Integer)  # quota; NULL: unlimited
    max_storage_bytes: Mapped[int | None] = mapped_column(BigInteger)  # quota; NULL: unlimited


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("key"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(16), index=True)  # public part shown in listings
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex of the whole key
    name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (
        _status_check("status", ("uploading", "ready", "deleted")),
        Index("ix_datasets_tenant_created", "tenant_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ds"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    format: Mapped[str] = mapped_column(String(20))  # imagefolder | npz | csv | text
    status: Mapped[str] = mapped_column(String(20), default="uploading")
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str | None] = mapped_column(String(64))
    storage_key: Mapped[str | None] = mapped_column(Text)  # key in the artifact store
    stats: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)  # counts, classes, layout
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Model(Base):
    __tablename__ = "models"
    __table_args__ = (
        CheckConstraint("kind IN ('weights', 'program')", name="kind"),
        Index("ix_models_tenant_created", "tenant_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("mdl"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))  # weights (safetensors + config) | program (.pt2)
    role: Mapped[str] = mapped_column(String(20), default="classifier")  # classifier | generator | gan
    config: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)  # model.json content
    storage_prefix: Mapped[str] = mapped_column(Text)  # folder in the store holding model.* files
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str | None] = mapped_column(String(64))  # of the main weights file
    source_job_id: Mapped[str | None] = mapped_column(String(40))  # set for a job's output model
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))  # DELETE: hidden, files GC'd


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        _status_check("status", JOB_STATUSES),
        CheckConstraint("method IN ('ssgan', 'adapt')", name="method"),
        CheckConstraint("priority IN (0, 1, 2)", name="priority"),
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_jobs_tenant_idempotency"),
        Index("ix_jobs_tenant_created", "tenant_id", "created_at", "id"),
        Index("ix_jobs_status_lease", "status", "lease_expires_at"),
        # The claim order (ganft/repo/claims.py): read backwards, priority DESC then created_at, id ASC.
        Index("ix_jobs_status_priority_created", "status", "priority", text("created_at DESC"), text("id DESC")),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("job"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    method: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), default="queued")
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"))
    validation_dataset_id: Mapped[str | None] = mapped_column(ForeignKey("datasets.id"))
    base_model_id: Mapped[str | None] = mapped_column(ForeignKey("models.id"))
    evaluator_model_id: Mapped[str | None] = mapped_column(ForeignKey("models.id"))
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)  # resolved, with defaults
    seed: Mapped[int] = mapped_column(Integer, default=0)
    priority: Mapped[int] = mapped_column(SmallInteger, default=1, server_default="1")  # 0 low, 1 normal, 2 high
    max_runtime_s: Mapped[int | None] = mapped_column(Integer)
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", Json, default=dict)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_hash: Mapped[str | None] = mapped_column(String(64))  # sha256 of the JobCreate body
    webhook_url: Mapped[str | None] = mapped_column(Text)  # the job's, or its tenant's default at creation
    # A fork's parent and the step of the parent's checkpoint it started from (its lineage).
    parent_job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    parent_step: Mapped[int | None] = mapped_column(Integer)

    attempt: Mapped[int] = mapped_column(Integer, default=0)  # 1 on the first claim
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    worker_id: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    dispatched_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # Set with `pausing` when the job is preempted for this `high` job (ganft/repo/preemption.py): the
    # stopped trainer's job goes back to `queued` instead of `paused`. Cleared by a user's pause.
    preempted_by: Mapped[str | None] = mapped_column(String(40))

    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int] = mapped_column(Integer, default=0)
    steps_per_second: Mapped[float | None] = mapped_column(Float)
    checkpoint_key: Mapped[str | None] = mapped_column(Text)  # newest checkpoint in the store
    checkpoint_step: Mapped[int | None] = mapped_column(Integer)
    next_event_seq: Mapped[int] = mapped_column(Integer, default=1)

    error_code: Mapped[str | None] = mapped_column(String(40))
    error_message: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(Json)  # metrics.json summary
    output_model_id: Mapped[str | None] = mapped_column(ForeignKey("models.id"))

    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    cancel_requested_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class JobEvent(Base):
    __tablename__ = "job_events"
    __table_args__ = (UniqueConstraint("job_id", "seq", name="uq_job_events_job_seq"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)  # 1, 2, 3 ... per job; the SSE event id
    type: Mapped[str] = mapped_column(String(40))  # status | progress | evaluation | checkpoint | log
    data: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class JobMetric(Base):
    __tablename__ = "job_metrics"
    __table_args__ = (Index("ix_job_metrics_job_step", "job_id", "step"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(100))
    value: Mapped[float] = mapped_column(Float)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class JobCheckpoint(Base):
    """A checkpoint of a job kept in the store (the `keep_checkpoints` newest, plus the best evaluated)."""

    __tablename__ = "job_checkpoints"
    __table_args__ = (UniqueConstraint("job_id", "step", name="uq_job_checkpoints_job_step"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)  # training steps done when it was written
    storage_key: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Artifact(Base):
    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("job_id", "name", name="uq_artifacts_job_name"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    content_type: Mapped[str] = mapped_column(String(100))
    storage_key: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


WEBHOOK_STATUSES = ("pending", "delivered", "failed")


class WebhookDelivery(Base):
    """One webhook message about a job (its terminal state) and the outcome of its latest attempt."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        _status_check("status", WEBHOOK_STATUSES),
        UniqueConstraint("job_id", "event_type", name="uq_webhook_deliveries_job_event"),
        Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("msg"))  # webhook-id
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(Text)
    event_type: Mapped[str] = mapped_column(String(40))  # job.succeeded | job.failed | job.cancelled
    status: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))  # None once settled
    last_status_code: Mapped[int | None] = mapped_column(Integer)  # HTTP status of the latest attempt
    last_error: Mapped[str | None] = mapped_column(Text)  # connection error or non-2xx summary
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
