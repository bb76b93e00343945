"""What a job produced: metric history, artifacts and their downloads."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from api.deps import JobDep, SessionDep, StoreDep
from api.downloads import stored_file_response
from api.problems import Problem, invalid, not_found
from api.schemas import ArtifactOut, ListOf, MetricOut
from ganft.repo import jobs

router = APIRouter(prefix="/v1/jobs", tags=["outputs"])

# Artifact names are plain file names, optionally in folders (`samples/step-500.png`):
# no empty or dot-leading segments, so `..` and absolute paths never name an artifact.
_ARTIFACT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*$")


@router.get("/{job_id}/metrics", response_model=ListOf[MetricOut])
def job_metrics(
    job: JobDep,
    session: SessionDep,
    name: Annotated[str | None, Query(max_length=100, description="only this metric")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    after: Annotated[str | None, Query(max_length=30)] = None,
) -> ListOf[MetricOut]:
    """The job's metric history `(step, name, value)` in the order it was written."""
    if after is not None and not after.isdigit():
        raise invalid("after", "must be a cursor returned as next_cursor")
    points = jobs.list_metrics(session, job_id=job.id, name=name, after=int(after or 0), limit=limit)
    next_cursor = str(points[-1].id) if len(points) == limit else None
    return ListOf[MetricOut](data=[MetricOut.model_validate(p) for p in points], next_cursor=next_cursor)


@router.get("/{job_id}/artifacts", response_model=list[ArtifactOut])
def job_artifacts(job: JobDep, session: SessionDep) -> list[ArtifactOut]:
    """The job's files: `[{name, size_bytes, sha256, content_type}]`."""
    return [ArtifactOut.model_validate(a) for a in jobs.list_artifacts(session, job_id=job.id)]


@router.get("/{job_id}/artifacts/{name:path}", response_class=Response)
def download_artifact(request: Request, name: str, job: JobDep, session: SessionDep, store: StoreDep) -> Response:
    """Download one artifact; `ETag` is its sha256 (If-None-Match -> 304) and `Range` is honoured."""
    if len(name) > 200 or not _ARTIFACT_NAME.match(name):
        raise Problem(400, f"invalid artifact name {name!r}")
    artifact = jobs.get_artifact(session, job_id=job.id, name=name)
    if artifact is None:
        raise not_found("artifact", name)
    return stored_file_response(
        request,
        store=store,
        key=artifact.storage_key,
        size=artifact.size_bytes,
        sha256=artifact.sha256,
        content_type=artifact.content_type,
        filename=name.rsplit("/", 1)[-1],
    )
