"""`/v1/jobs`: create (idempotent; or fork a checkpoint), list, read, cancel, pause, resume, export a checkpoint."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api import forks
from api.deps import JobDep, QueueDep, ReaderDep, SessionDep, SettingsDep, StoreDep, TenantDep
from api.problems import Problem, from_validation_error, invalid, not_found
from api.queue import JobQueue
from api.routes import checkpoints as checkpoint_routes
from api.routes import webhooks as webhook_routes
from api.schemas import FromCheckpoint, JobCreate, JobOut, JobStatus, ListOf
from ganft.db.tables import Job, utcnow
from ganft.repo import checkpoints, datasets, jobs, lifecycle, models, webhooks
from ganft.repo.claims import PRIORITIES
from ganft.repo.keys import Principal
from ganft.repo.pages import InvalidCursor
from ganft.states import InvalidTransition
from ganft_core.config import HYPERPARAMETERS

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

# Which uploaded/produced model roles each method can start from.
BASE_ROLES = {"ssgan": ("classifier", "encoder"), "adapt": ("gan", "generator")}


class ParsedJob:
    """A JobCreate with its hyperparameters resolved (every default filled in) and its request hash.

    A fork's hyperparameters are resolved against its parent in the route (api/forks.py): None here."""

    def __init__(self, spec: JobCreate, hyperparameters: dict[str, Any] | None) -> None:
        self.spec = spec
        self.hyperparameters = hyperparameters
        canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        self.request_hash = hashlib.sha256(canonical.encode()).hexdigest()


async def _job_body(request: Request, settings: SettingsDep) -> ParsedJob:
    """The JobCreate body, read only after auth succeeded (declared after TenantDep)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > settings.max_json_bytes:
            raise Problem(413, f"the JSON body exceeds {settings.max_json_bytes} bytes")
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise invalid("body", f"malformed JSON: {exc}") from None
    try:
        spec = JobCreate.model_validate(document, context={"webhook_allow_private": settings.webhook_allow_private})
    except ValidationError as exc:
        raise from_validation_error(exc) from None
    if spec.from_checkpoint is not None:
        return ParsedJob(spec, None)
    for field in ("method", "dataset_id"):
        if getattr(spec, field) is None:
            raise invalid(field, "Field required (unless the job forks from_checkpoint)")
    assert spec.method is not None
    try:
        hp = HYPERPARAMETERS[spec.method].model_validate(spec.hyperparameters)
    except ValidationError as exc:
        raise from_validation_error(exc, prefix="hyperparameters") from None
    return ParsedJob(spec, hp.model_dump(mode="json"))


_CREATE_DOC = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobCreate"}}},
    }
}


@router.post("", status_code=201, response_model=JobOut, openapi_extra=_CREATE_DOC)
def create_job(
    response: Response,
    session: SessionDep,
    tenant: TenantDep,
    parsed: Annotated[ParsedJob, Depends(_job_body)],
    settings: SettingsDep,
    queue: QueueDep,
    store: StoreDep,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None,
) -> JobOut:
    """Create a training job (or, with `from_checkpoint`, fork one); a repeated `Idempotency-Key` with the
    same body returns the same job."""
    if idempotency_key is not None:
        existing = jobs.find_by_idempotency_key(session, tenant_id=tenant.tenant_id, key=idempotency_key)
        if existing is not None:
            return _replay(response, existing, parsed)
    fork = forks.resolve(session, tenant_id=tenant.tenant_id, spec=parsed.spec) if parsed.spec.from_checkpoint else None
    spec = fork.spec if fork else parsed.spec
    hyperparameters = fork.hyperparameters if fork else parsed.hyperparameters
    assert spec.method is not None and spec.dataset_id is not None and hyperparameters is not None
    _check_references(session, tenant, spec)
    webhook_url = spec.webhook_url or webhooks.tenant_default_url(session, tenant_id=tenant.tenant_id)
    try:
        job = jobs.create(
            session,
            tenant_id=tenant.tenant_id,
            method=spec.method,
            dataset_id=spec.dataset_id,
            validation_dataset_id=spec.validation_dataset_id,
            base_model_id=spec.base_model_id,
            evaluator_model_id=spec.evaluator_model_id,
            hyperparameters=hyperparameters,
            seed=spec.seed,
            max_runtime_s=spec.max_runtime_s,
            metadata=spec.metadata,
            total_steps=int(hyperparameters["steps"]),
            priority=PRIORITIES[spec.priority],
            max_attempts=settings.max_attempts,
            idempotency_key=idempotency_key,
            request_hash=parsed.request_hash,
        )
        job.webhook_url = webhook_url  # fixed now: a later change of the tenant default leaves this job alone
        if fork is not None:
            forks.copy_checkpoint(session, store, fork=fork, job=job)
        job.dispatched_at = utcnow()  # marked sent in this commit, before the send: see _ring
        session.commit()
    except IntegrityError:
        # A concurrent request with the same Idempotency-Key won the insert.
        session.rollback()
        existing = jobs.find_by_idempotency_key(session, tenant_id=tenant.tenant_id, key=idempotency_key or "")
        if existing is None:
            raise
        return _replay(response, existing, parsed)
    _ring(session, queue, job.id)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobOut.of(job)


def _replay(response: Response, job: Job, parsed: ParsedJob) -> JobOut:
    if job.request_hash != parsed.request_hash:
        raise Problem(409, "this Idempotency-Key was already used with a different request body")
    response.status_code = 200
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobOut.of(job)


def _check_references(session: Session, tenant: Principal, spec: JobCreate) -> None:
    """Every referenced dataset/model must be the tenant's and fit the method (422 naming the field).

    The rows stay share-locked until commit, so a concurrent delete cannot slip in between.
    """
    assert spec.method is not None
    formats: dict[str, str] = {}
    for field, dataset_id in (("dataset_id", spec.dataset_id), ("validation_dataset_id", spec.validation_dataset_id)):
        if dataset_id is not None:
            dataset = datasets.get(session, tenant_id=tenant.tenant_id, dataset_id=dataset_id, lock="share")
            if dataset is None:
                raise invalid(field, f"dataset {dataset_id!r} not found")
            formats[field] = dataset.format
    if spec.base_model_id is not None:
        model = models.get(session, tenant_id=tenant.tenant_id, model_id=spec.base_model_id, lock=True)
        if model is None:
            raise invalid("base_model_id", f"model {spec.base_model_id!r} not found")
        allowed = BASE_ROLES[spec.method]
        if model.role not in allowed:
            raise invalid(
                "base_model_id",
                f"{spec.method} starts from a {' or '.join(allowed)} model; {model.id!r} is {_a(model.role)}",
            )
        layout = (model.config or {}).get("input_layout") or {}
        reads_text = model.role == "encoder" or layout.get("kind") == "text"
        if "dataset_id" in formats and reads_text != (formats["dataset_id"] == "text"):
            what = "a text model" if reads_text else "not a text model"
            raise invalid(
                "base_model_id", f"{model.id!r} is {what}; dataset {spec.dataset_id!r} is {formats['dataset_id']}"
            )
    if spec.evaluator_model_id is not None:
        if spec.method != "adapt":
            raise invalid("evaluator_model_id", "only adapt jobs use an evaluator (for FID/KID)")
        evaluator = models.get(session, tenant_id=tenant.tenant_id, model_id=spec.evaluator_model_id, lock=True)
        if evaluator is None:
            raise invalid("evaluator_model_id", f"model {spec.evaluator_model_id!r} not found")
        if evaluator.role != "classifier":
            raise invalid(
                "evaluator_model_id", f"the evaluator must be a classifier; {evaluator.id!r} is {_a(evaluator.role)}"
            )


def _a(role: str) -> str:
    """`role` with its article: "a classifier", "an encoder"."""
    return f"an {role}" if role[:1] in "aeiou" else f"a {role}"


@router.get("", response_model=ListOf[JobOut])
async def list_jobs(
    reader: ReaderDep,
    tenant: TenantDep,
    status: Annotated[JobStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    after: Annotated[str | None, Query(max_length=500)] = None,
) -> Response:
    """The tenant's jobs, newest first, optionally of one status; `next_cursor` pages on."""
    try:
        page = await jobs.read_page(reader, tenant_id=tenant.tenant_id, status=status, limit=limit, after=after)
    except InvalidCursor as exc:
        raise invalid("after", str(exc)) from None
    return _json(ListOf[JobOut](data=[JobOut.of(j) for j in page.items], next_cursor=page.next_cursor))


@router.get("/{job_id}", response_model=JobOut)
async def get_job(job: JobDep) -> Response:
    """One job with its progress (step, total_steps, fraction, eta_seconds), error and result."""
    return _json(JobOut.of(job))


def _json(body: BaseModel) -> Response:
    # Built by us, the body is valid by construction: returning a Response skips FastAPI's second
    # validation and serialisation pass against `response_model` (still what the docs show).
    return Response(body.model_dump_json(), media_type="application/json")


@router.post("/{job_id}/cancel", response_model=JobOut)
def cancel_job(job: JobDep, session: SessionDep) -> JobOut:
    """Cancel a job: a queued one at once, a running one cooperatively (`cancelling`); 409 when finished."""
    try:
        updated = jobs.request_cancel(session, job_id=job.id)
    except InvalidTransition as exc:
        raise Problem(409, f"job {job.id!r} already finished ({exc.current}); it cannot be cancelled") from None
    session.commit()
    return JobOut.of(updated)


@router.post("/{job_id}/pause", response_model=JobOut)
def pause_job(job: JobDep, session: SessionDep) -> JobOut:
    """Pause a job: a queued one at once, a running one once its trainer has checkpointed and freed the worker
    (`pausing`, then `paused`); idempotent; 409 when it is cancelling or finished."""
    try:
        updated = jobs.request_pause(session, job_id=job.id)
    except InvalidTransition as exc:
        raise Problem(409, f"job {job.id!r} is {exc.current}; it cannot be paused") from None
    session.commit()
    return JobOut.of(updated)


@router.post("/{job_id}/resume", response_model=JobOut)
def resume_job(job: JobDep, session: SessionDep, queue: QueueDep) -> JobOut:
    """Resume a paused job: it is queued again and continues from its newest checkpoint; idempotent
    (a queued or running job is returned as is); 409 while it is still pausing, cancelling or finished."""
    try:
        updated, requeued = jobs.request_resume(session, job_id=job.id)
    except InvalidTransition as exc:
        hint = "; resume it once it is paused" if exc.current == "pausing" else ""
        raise Problem(409, f"job {job.id!r} is {exc.current}; it cannot be resumed{hint}") from None
    if requeued:
        jobs.mark_dispatched(session, job_id=job.id)  # in the resume's commit, before the send: see _ring
    session.commit()
    if requeued:
        _ring(session, queue, job.id)
    return JobOut.of(updated)


def _ring(session: Session, queue: JobQueue, job_id: str) -> None:
    """Send the broker message of a queued job already marked sent (`dispatched_at`, committed).

    Marked first, never after the send: a worker woken at once claims with `SKIP LOCKED`, and an
    update of the row still open after the send made it pass the job by, which then looked sent and
    waited minutes for the stale re-send (CI, bench/dispatch.py). A failed send is undone, so the
    dispatch sweep sends it; a crash between the commit and the send leaves it to the sweep's
    lost-message re-send."""
    if not queue.send_run_job(job_id):
        lifecycle.undo_dispatch(session, job_ids=[job_id])
        session.commit()


@router.post("/{job_id}/checkpoints/{step}/export", status_code=202, response_model=JobOut)
def export_checkpoint(
    response: Response,
    job: JobDep,
    step: checkpoint_routes.Step,
    session: SessionDep,
    tenant: TenantDep,
    settings: SettingsDep,
    queue: QueueDep,
    store: StoreDep,
) -> JobOut:
    """Register the model of one checkpoint: a fork that trains no further (steps = that step) and only writes
    the outputs; its `output_model_id` is the model once it succeeds."""
    if checkpoints.get(session, job_id=job.id, step=step) is None:
        raise not_found("checkpoint", str(step))
    spec = JobCreate(
        from_checkpoint=FromCheckpoint(job_id=job.id, step=step),
        hyperparameters={"steps": step},
        metadata={"export_of": f"{job.id}@{step}"},
    )
    exported = create_job(response, session, tenant, ParsedJob(spec, None), settings, queue, store)
    response.status_code = 202
    return exported


router.include_router(webhook_routes.router)  # GET /v1/jobs/{id}/webhooks
router.include_router(checkpoint_routes.router)  # GET /v1/jobs/{id}/checkpoints[/{step}]
