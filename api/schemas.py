"""Request and response bodies of the v1 HTTP contract (DESIGN.md)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo

from ganft.db import tables
from ganft.repo.claims import PRIORITY_NAMES
from ganft.repo.pages import as_utc
from ganft.webhooks import MAX_URL_LENGTH, check_literal_target, check_url

T = TypeVar("T")

Id = Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[a-z]+_[0-9a-f]+$")]
DatasetFormat = Literal["imagefolder", "npz", "csv", "text"]
Priority = Literal["low", "normal", "high"]  # a free worker takes the highest first, FIFO within one
JobStatus = Literal["queued", "running", "cancelling", "pausing", "paused", "succeeded", "failed", "cancelled"]
Name = Annotated[str, Field(min_length=1, max_length=200)]


# SQLite hands back naive datetimes; every stored time is UTC.
Timestamp = Annotated[dt.datetime, AfterValidator(as_utc)]


def _webhook_target(url: str, info: ValidationInfo) -> str:
    """Refuse `localhost` and literal non-public addresses unless the validation context (the API's
    settings, api/routes/jobs.py) says `webhook_allow_private`; without a context they are refused."""
    if (info.context or {}).get("webhook_allow_private"):
        return url
    return check_literal_target(url)


WebhookUrl = Annotated[
    str, Field(min_length=1, max_length=MAX_URL_LENGTH), AfterValidator(check_url), AfterValidator(_webhook_target)
]


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ListOf(BaseModel, Generic[T]):
    data: list[T]
    next_cursor: str | None = None  # pass as `after` for the next page; null on the last page


# ---------------------------------------------------------------- datasets


class DatasetStats(BaseModel):
    examples: int
    labeled: int
    unlabeled: int
    classes: list[str]
    class_counts: dict[str, int]
    layout: dict[str, str | int]  # {"kind": "image", "channels", "height", "width"} or {"kind": "features", "features"}
    notes: list[str] = []  # what the loader changed (resized, converted to RGB, ...)
    # text datasets only: token lengths with the built-in tokenizer ({"p50", "p90", "p95", "p99", "max", "mean",
    # "tokenizer"}) and how many texts are longer than N tokens ({"64": n, "512": n})
    tokens: dict[str, int | float | str] | None = None
    over_max_length: dict[str, int] | None = None


class DatasetOut(_Out):
    id: str
    name: str
    format: DatasetFormat
    status: Literal["ready"]
    size_bytes: int
    sha256: str
    stats: DatasetStats
    created_at: Timestamp


class UploadCreate(BaseModel):
    """`POST /v1/datasets/uploads`: start a resumable upload of `size_bytes` bytes."""

    model_config = ConfigDict(extra="forbid")

    name: Name  # the dataset's name (its extension may give the format)
    format: DatasetFormat | None = None  # required when the name's extension does not tell it
    size_bytes: Annotated[int, Field(ge=1)]  # the whole file's size; at most GANFT_MAX_UPLOAD_BYTES


class UploadComplete(BaseModel):
    """`POST /v1/datasets/uploads/{id}/complete`: optionally the sha256 the client computed."""

    model_config = ConfigDict(extra="forbid")

    sha256: Annotated[str, Field(pattern="^[0-9a-f]{64}$")] | None = None  # checked against the assembled file


class UploadOut(BaseModel):
    id: str  # becomes the dataset's id once complete
    name: str
    format: DatasetFormat
    size_bytes: int
    offset: int  # bytes received so far: the next part starts here
    created_at: Timestamp


# ---------------------------------------------------------------- models


class InputLayout(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["image", "features", "text"]  # text: a BERT-family model, uploaded with its `tokenizer`
    channels: Annotated[int, Field(ge=1, le=4)] | None = None
    height: Annotated[int, Field(ge=1, le=4096)] | None = None
    width: Annotated[int, Field(ge=1, le=4096)] | None = None
    features: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    max_length: Annotated[int, Field(ge=4, le=512)] | None = None  # text: tokens per text it was trained on


class NetConfig(BaseModel):
    """One network of an uploaded model (model.json): an architecture of ganft's registry."""

    model_config = ConfigDict(extra="forbid")

    architecture: Annotated[str, Field(min_length=1, max_length=100)]
    arguments: dict[str, Any] = {}  # the architecture's typed arguments (checked by the worker)
    normalization: dict[str, list[float]] | None = None  # {"mean": [...], "std": [...]}: informative


class ModelConfig(NetConfig):
    """The `config` part of a model upload.

    weights uploads: the main network (`role` classifier or generator) and, for a pretrained
    GAN, the `discriminator` network whose weights come in the `discriminator` file part; or a
    sentence encoder for text jobs (`role` encoder, architecture `minilm`, input_layout text, no
    head and no class names) with its `tokenizer` file part.
    program uploads: only `class_names` (and optionally `input_layout`) are read.
    """

    architecture: Annotated[str, Field(min_length=1, max_length=100)] = ""
    role: Literal["classifier", "generator", "encoder"] = "classifier"
    class_names: Annotated[list[Annotated[str, Field(min_length=1, max_length=200)]], Field(max_length=100_000)] = []
    input_layout: InputLayout | None = None
    discriminator: NetConfig | None = None  # a GAN's D (role generator only)
    name: Name | None = None  # display name; default: the uploaded file's name


class ModelOut(_Out):
    id: str
    name: str
    kind: Literal["weights", "program"]
    role: str  # classifier | generator | gan
    config: dict[str, Any]  # model.json
    size_bytes: int
    sha256: str | None
    source_job_id: str | None
    created_at: Timestamp


# ---------------------------------------------------------------- jobs


class FromCheckpoint(BaseModel):
    """Fork: start from a kept checkpoint of one of your jobs (GET /v1/jobs/{id}/checkpoints)."""

    model_config = ConfigDict(extra="forbid")

    job_id: Id
    step: Annotated[int, Field(ge=0, le=2**31 - 1)]


class JobCreate(BaseModel):
    """A training job. `hyperparameters` are checked against the method's typed fields.

    With `from_checkpoint` (a fork) every field left out is the parent job's, and `hyperparameters`
    are overrides of the parent's; `method` and `dataset_id` are required otherwise."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["ssgan", "adapt"] | None = None
    dataset_id: Id | None = None
    validation_dataset_id: Id | None = None
    base_model_id: Id | None = None  # an uploaded model or a finished job's output_model_id
    evaluator_model_id: Id | None = None  # adapt: classifier whose features score FID/KID
    hyperparameters: dict[str, Any] = {}
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    max_runtime_s: Annotated[int, Field(ge=1, le=30 * 24 * 3600)] | None = None
    priority: Priority = "normal"  # the queue's order: high before normal before low, FIFO within one
    metadata: Annotated[
        dict[Annotated[str, Field(max_length=100)], Annotated[str, Field(max_length=1000)]],
        Field(max_length=50),
    ] = {}
    webhook_url: WebhookUrl | None = None  # POSTed when the job ends; default: the tenant's
    from_checkpoint: FromCheckpoint | None = None  # fork: continue from that exact training state


class Progress(BaseModel):
    step: int
    total_steps: int
    fraction: float  # step / total_steps, 0..1
    eta_seconds: float | None  # from the measured steps per second; null until known


class JobError(BaseModel):
    code: str  # invalid_dataset | invalid_model | nan_loss | out_of_memory | max_runtime_exceeded | worker_lost | ...
    message: str


class ForkedFrom(BaseModel):
    job_id: str | None  # null once the parent job was deleted
    step: int


class JobOut(_Out):
    id: str
    method: str
    status: JobStatus
    dataset_id: str
    validation_dataset_id: str | None
    base_model_id: str | None
    evaluator_model_id: str | None
    hyperparameters: dict[str, Any]  # resolved: every default filled in
    seed: int
    max_runtime_s: int | None
    priority: Priority
    metadata: dict[str, str]
    webhook_url: str | None  # where the job.* webhook goes (the job's or the tenant's default at creation)
    attempt: int
    progress: Progress
    error: JobError | None
    result: dict[str, Any] | None
    output_model_id: str | None
    forked_from: ForkedFrom | None  # a fork's parent job and the step of the checkpoint it started from
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    cancel_requested_at: Timestamp | None
    updated_at: Timestamp

    @classmethod
    def of(cls, job: tables.Job) -> JobOut:
        fraction = min(1.0, job.step / job.total_steps) if job.total_steps > 0 else 0.0
        eta = None
        if job.status in ("running", "cancelling", "pausing") and job.steps_per_second and job.steps_per_second > 0:
            eta = round(max(0, job.total_steps - job.step) / job.steps_per_second, 1)
        error = JobError(code=job.error_code, message=job.error_message or "") if job.error_code else None
        return cls(
            id=job.id,
            method=job.method,
            status=job.status,  # type: ignore[arg-type]
            dataset_id=job.dataset_id,
            validation_dataset_id=job.validation_dataset_id,
            base_model_id=job.base_model_id,
            evaluator_model_id=job.evaluator_model_id,
            hyperparameters=job.hyperparameters,
            seed=job.seed,
            max_runtime_s=job.max_runtime_s,
            priority=PRIORITY_NAMES.get(job.priority, "normal"),  # type: ignore[arg-type]
            metadata=job.metadata_,
            webhook_url=job.webhook_url,
            attempt=job.attempt,
            progress=Progress(step=job.step, total_steps=job.total_steps, fraction=fraction, eta_seconds=eta),
            error=error,
            result=job.result,
            output_model_id=job.output_model_id,
            forked_from=ForkedFrom(job_id=job.parent_job_id, step=job.parent_step)
            if job.parent_step is not None
            else None,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            cancel_requested_at=job.cancel_requested_at,
            updated_at=job.updated_at,
        )


class EventOut(_Out):
    seq: int  # 1, 2, 3 ... per job; the SSE `id:`
    type: str  # status | progress | evaluation | checkpoint | log | ...
    data: dict[str, Any]
    created_at: Timestamp


class MetricOut(_Out):
    step: int
    name: str
    value: float


class ArtifactOut(_Out):
    name: str
    size_bytes: int
    sha256: str
    content_type: str


class CheckpointEvaluation(BaseModel):
    step: int  # the evaluation's step: the newest at or before the checkpoint's
    metrics: dict[str, float]  # ssgan: accuracy, macro_f1, ...; adapt: fid, kid


class CheckpointOut(BaseModel):
    step: int  # training steps done when it was written
    created_at: Timestamp
    size_bytes: int
    sha256: str  # also the download's ETag
    evaluation: CheckpointEvaluation | None  # null before the first evaluation
    best: bool  # the best kept checkpoint by the method's metric (ssgan: accuracy, adapt: FID)


class WebhookDeliveryOut(_Out):
    id: str  # the `webhook-id` header, the same on every retry
    job_id: str
    url: str
    event_type: str  # job.succeeded | job.failed | job.cancelled
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: Timestamp | None  # null once delivered or failed
    last_status_code: int | None
    last_error: str | None
    created_at: Timestamp
    updated_at: Timestamp


# ---------------------------------------------------------------- health


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = {}  # part -> "ok" or what failed
