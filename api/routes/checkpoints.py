"""`/v1/jobs/{id}/checkpoints`: a job's kept checkpoints and their downloads.

Mounted under the jobs router (api/routes/jobs.py includes it), so its paths are relative.
A checkpoint is the trainer's whole state at a step (nets, optimisers, EMA, augmentation p, RNG:
ganft_core/run.py), as a `torch.save` file meant for `torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from api.deps import JobDep, SessionDep, StoreDep
from api.downloads import stored_file_response
from api.problems import not_found
from api.schemas import CheckpointEvaluation, CheckpointOut, ListOf
from ganft.repo import checkpoints

router = APIRouter(tags=["checkpoints"])

Step = Annotated[int, Path(ge=0, le=2**31 - 1, description="the checkpoint's training step")]


@router.get("/{job_id}/checkpoints", response_model=ListOf[CheckpointOut])
def list_checkpoints(job: JobDep, session: SessionDep) -> ListOf[CheckpointOut]:
    """The job's kept checkpoints, oldest first, each with the newest evaluation at or before its step."""
    found = checkpoints.kept(session, job_id=job.id, method=job.method)
    return ListOf[CheckpointOut](
        data=[
            CheckpointOut(
                step=c.row.step,
                created_at=c.row.created_at,
                size_bytes=c.row.size_bytes,
                sha256=c.row.sha256,
                evaluation=CheckpointEvaluation(step=c.evaluation.step, metrics=c.evaluation.metrics)
                if c.evaluation
                else None,
                best=c.best,
            )
            for c in found
        ]
    )


@router.get("/{job_id}/checkpoints/{step}", response_class=Response)
def download_checkpoint(request: Request, step: Step, job: JobDep, session: SessionDep, store: StoreDep) -> Response:
    """Download one checkpoint; `ETag` is its sha256 (If-None-Match -> 304) and `Range` is honoured."""
    row = checkpoints.get(session, job_id=job.id, step=step)
    if row is None:
        raise not_found("checkpoint", str(step))
    return stored_file_response(
        request,
        store=store,
        key=row.storage_key,
        size=row.size_bytes,
        sha256=row.sha256,
        content_type="application/octet-stream",
        filename=f"{job.id}-step{step}.pt",
    )
