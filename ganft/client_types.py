"""Typed results of ganft's Python client: pydantic mirrors of the API's response bodies.

They accept fields a newer server adds (`extra="allow"`) so an old client keeps working, and
keep mapping access (`job["status"]`) for code written against the dict-returning client.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

T = TypeVar("T")
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})


class Resource(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    def __getitem__(self, name: str) -> Any:
        """`obj["field"]` as `obj.field`, nested models as dicts (the old client returned JSON)."""
        value = getattr(self, name)
        return value.model_dump(mode="json") if isinstance(value, BaseModel) else value

    def get(self, name: str, default: Any = None) -> Any:
        return self[name] if name in type(self).model_fields or name in (self.model_extra or {}) else default


class Dataset(Resource):
    id: str
    name: str
    format: str  # imagefolder | npz | csv
    status: str
    size_bytes: int
    sha256: str
    stats: dict[str, Any]  # examples, labeled, unlabeled, classes, class_counts, layout, notes
    created_at: dt.datetime


class Model(Resource):
    id: str
    name: str
    kind: str  # weights | program
    role: str  # classifier | generator | gan | encoder (a text job's sentence encoder)
    config: dict[str, Any]  # model.json
    size_bytes: int
    sha256: str | None
    source_job_id: str | None
    created_at: dt.datetime


class Progress(Resource):
    step: int
    total_steps: int
    fraction: float  # 0..1
    eta_seconds: float | None


class JobError(Resource):
    code: str
    message: str


class Job(Resource):
    id: str
    method: str
    status: str  # queued | running | cancelling | pausing | paused | succeeded | failed | cancelled
    dataset_id: str
    validation_dataset_id: str | None = None
    base_model_id: str | None = None
    evaluator_model_id: str | None = None
    hyperparameters: dict[str, Any]
    seed: int
    max_runtime_s: int | None = None
    priority: str = "normal"  # low | normal | high: the queue's order
    metadata: dict[str, str] = {}
    webhook_url: str | None = None
    attempt: int
    progress: Progress
    error: JobError | None = None
    result: dict[str, Any] | None = None
    output_model_id: str | None = None
    forked_from: dict[str, Any] | None = None  # a fork's {"job_id", "step"}
    created_at: dt.datetime
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    cancel_requested_at: dt.datetime | None = None
    updated_at: dt.datetime

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


class Checkpoint(Resource):
    """A kept checkpoint of a job (GET /v1/jobs/{id}/checkpoints)."""

    step: int
    created_at: dt.datetime
    size_bytes: int
    sha256: str
    evaluation: dict[str, Any] | None = None  # {"step", "metrics"}: the newest evaluation at or before `step`
    best: bool = False  # the best kept checkpoint by the method's metric


class WebhookDelivery(Resource):
    id: str
    job_id: str
    url: str
    event_type: str  # job.succeeded | job.failed | job.cancelled
    status: str  # pending | delivered | failed
    attempts: int
    next_attempt_at: dt.datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


class Usage(Resource):
    """A tenant's stored bytes (GET /v1/usage); also the API's response model."""

    total_bytes: int
    by_kind: dict[str, int]  # bytes of datasets, models, checkpoints, artifacts
    max_storage_bytes: int | None = None  # the tenant's storage quota; None: unlimited


class Page(BaseModel, Generic[T]):
    data: list[T]
    next_cursor: str | None = None  # pass as `after` for the next page


@dataclass(frozen=True)
class Event:
    seq: int  # 1, 2, 3 ... per job
    type: str  # status | progress | evaluation | checkpoint | log
    data: dict[str, Any]

    @property
    def terminal(self) -> bool:
        """A status event that ends the job (no event follows it)."""
        return self.type == "status" and self.data.get("status") in TERMINAL_STATUSES


@dataclass(frozen=True)
class ArtifactInfo:
    name: str
    size_bytes: int
    sha256: str
    content_type: str


Artifact = ArtifactInfo
