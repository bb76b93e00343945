"""`/v1/datasets`: streamed upload + validation, list, read, delete."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import PurePosixPath
from typing import Annotated

import anyio
from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from api.deps import DatasetDep, SessionDep, SettingsDep, StoreDep, TenantDep
from api.problems import Problem, invalid, not_found
from api.schemas import DatasetFormat, DatasetOut, ListOf
from api.uploads import ReceivedFile, check_declared_length, receive_multipart, receive_raw
from api.validation import inspect_dataset
from ganft.db.session import session_scope
from ganft.db.tables import new_id
from ganft.repo import datasets
from ganft.repo.pages import InvalidCursor
from ganft.store import Store

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

FORMATS = ("imagefolder", "npz", "csv")
_EXTENSIONS = {".zip": "imagefolder", ".npz": "npz", ".csv": "csv"}
_UPLOAD_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "name": {"type": "string"},
                        "format": {"type": "string", "enum": list(FORMATS)},
                    },
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def _pick_format(given: str | None, *names: str | None) -> str:
    if given:
        if given not in FORMATS:
            raise invalid("format", f"must be one of {', '.join(FORMATS)}")
        return given
    for name in names:
        if name and (fmt := _EXTENSIONS.get(PurePosixPath(name).suffix.lower())):
            return fmt
    raise invalid("format", f"required ({', '.join(FORMATS)}) when the file name does not tell it")


@router.post("", status_code=201, response_model=DatasetOut, openapi_extra=_UPLOAD_DOC)
async def upload_dataset(
    request: Request,
    tenant: TenantDep,
    settings: SettingsDep,
    store: StoreDep,
    name: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    format: Annotated[DatasetFormat | None, Query()] = None,
) -> DatasetOut:
    """Upload a dataset (multipart `file` + `name`, `format`, or the raw body with `?name=&format=`)."""
    check_declared_length(request, settings.max_upload_bytes)
    dataset_id = new_id("ds")
    key = datasets.storage_key_for(dataset_id)
    engine = request.app.state.engine

    def create_row() -> None:
        with session_scope(engine) as session:
            # Multipart `name`/`format` parts may follow the file: both are final in mark_ready.
            datasets.create_uploading(
                session, dataset_id=dataset_id, tenant_id=tenant.tenant_id, name=name or "upload", fmt=format or "?"
            )

    await run_in_threadpool(create_row)
    try:
        upload, fields = await _receive(request, store=store, key=key, max_bytes=settings.max_upload_bytes)
        fmt = _pick_format(fields.get("format") or format, upload.filename, fields.get("name"), name)
        final_name = fields.get("name") or name or upload.filename or dataset_id
        if len(final_name) > 200:
            raise invalid("name", "at most 200 characters")
        stats = await anyio.to_thread.run_sync(
            partial(
                inspect_dataset,
                store.local_path(key),
                fmt,
                timeout_s=settings.inspect_timeout_s,
                max_memory_bytes=settings.inspect_max_memory_bytes,
            ),
            limiter=request.app.state.inspect_limiter,  # a few inspections at a time, each up to its memory limit
        )

        def finish() -> DatasetOut:
            with session_scope(engine) as session:
                row = datasets.mark_ready(
                    session,
                    dataset_id=dataset_id,
                    name=final_name,
                    fmt=fmt,
                    size_bytes=upload.size,
                    sha256=upload.sha256,
                    stats=stats,
                )
                return DatasetOut.model_validate(row)

        return await run_in_threadpool(finish)
    except BaseException:
        with anyio.CancelScope(shield=True):  # a dropped client must not leave the file behind
            await run_in_threadpool(_discard, engine, store, dataset_id)
        raise


async def _receive(request: Request, *, store: Store, key: str, max_bytes: int) -> tuple[ReceivedFile, dict[str, str]]:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        received = await receive_multipart(
            request,
            store=store,
            file_keys={"file": key},
            text_fields=frozenset({"name", "format"}),
            max_bytes=max_bytes,
            max_text_bytes=1024,
        )
        if "file" not in received.files:
            raise invalid("file", "required: the dataset file")
        return received.files["file"], received.fields
    if content_type.startswith(("application/x-www-form-urlencoded", "application/json")):
        raise Problem(415, "send the dataset as multipart/form-data (field `file`) or as the raw request body")
    return await receive_raw(request, store=store, key=key, max_bytes=max_bytes), {}


def _discard(engine: Engine, store: Store, dataset_id: str) -> None:
    store.delete_prefix(f"datasets/{dataset_id}")
    try:
        with session_scope(engine) as session:
            datasets.discard_upload(session, dataset_id=dataset_id)
    except Exception:  # the DB may be the reason we are here; the row stays invisible
        log.warning("could not remove the failed upload %s", dataset_id, exc_info=True)


@router.get("", response_model=ListOf[DatasetOut])
def list_datasets(
    session: SessionDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    after: Annotated[str | None, Query(max_length=500)] = None,
) -> ListOf[DatasetOut]:
    """The tenant's datasets, newest first; pass `next_cursor` as `after` for the next page."""
    try:
        page = datasets.list_ready(session, tenant_id=tenant.tenant_id, limit=limit, after=after)
    except InvalidCursor as exc:
        raise invalid("after", str(exc)) from None
    return ListOf[DatasetOut](data=[DatasetOut.model_validate(d) for d in page.items], next_cursor=page.next_cursor)


@router.get("/{dataset_id}", response_model=DatasetOut)
def get_dataset(dataset: DatasetDep) -> DatasetOut:
    """One dataset with its statistics (examples, labels, classes, layout)."""
    return DatasetOut.model_validate(dataset)


@router.delete("/{dataset_id}", status_code=204)
def delete_dataset(dataset_id: str, session: SessionDep, tenant: TenantDep, store: StoreDep) -> Response:
    """Delete a dataset and its file; 409 while a queued or running job uses it."""
    dataset = datasets.get(session, tenant_id=tenant.tenant_id, dataset_id=dataset_id, lock="update")
    if dataset is None:
        raise not_found("dataset", dataset_id)
    if datasets.in_use(session, dataset_id=dataset_id):
        raise Problem(409, f"dataset {dataset_id!r} is used by a job that has not finished; cancel it first")
    datasets.mark_deleted(session, dataset_id=dataset_id)
    session.commit()
    store.delete_prefix(f"datasets/{dataset_id}")
    return Response(status_code=204)
