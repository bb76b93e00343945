"""`/v1/datasets`: streamed upload + validation, list, read, delete."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from functools import partial
from pathlib import PurePosixPath
from typing import Annotated

import anyio
from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from api.deps import DatasetDep, SessionDep, SettingsDep, StoreDep, TenantDep
from api.problems import Problem, invalid, not_found
from api.quota import upload_limit, upload_limit_in
from api.schemas import DatasetFormat, DatasetOut, ListOf, UploadComplete, UploadCreate, UploadOut
from api.uploads import (
    WRITE_BUFFER_BYTES,
    ReceivedFile,
    UploadLimit,
    check_declared_length,
    receive_multipart,
    receive_raw,
    too_large,
)
from api.validation import inspect_dataset
from ganft.db.session import session_scope
from ganft.db.tables import Dataset, new_id
from ganft.repo import datasets
from ganft.repo.pages import InvalidCursor
from ganft.store import Store, StoreUnavailable

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

FORMATS = ("imagefolder", "npz", "csv", "text")
_EXTENSIONS = {".zip": "imagefolder", ".npz": "npz", ".csv": "csv", ".jsonl": "text"}  # a text CSV needs format=text
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
    if name is not None and "\x00" in name:  # Postgres text cannot hold it
        raise invalid("name", "must not contain NUL characters")
    dataset_id = new_id("ds")
    key = datasets.storage_key_for(dataset_id)
    engine = request.app.state.engine
    limit = await upload_limit(engine, tenant_id=tenant.tenant_id, max_upload_bytes=settings.max_upload_bytes)
    check_declared_length(request, limit)

    def create_row() -> None:
        with session_scope(engine) as session:
            # Multipart `name`/`format` parts may follow the file: both are final in mark_ready.
            datasets.create_uploading(
                session, dataset_id=dataset_id, tenant_id=tenant.tenant_id, name=name or "upload", fmt=format or "?"
            )

    await run_in_threadpool(create_row)
    try:
        upload, fields = await _receive(request, store=store, key=key, max_bytes=limit)
        fmt = _pick_format(fields.get("format") or format, upload.filename, fields.get("name"), name)
        final_name = fields.get("name") or name or upload.filename or dataset_id
        if len(final_name) > 200:
            raise invalid("name", "at most 200 characters")
        if "\x00" in final_name:
            raise invalid("name", "must not contain NUL characters")
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


# ---------------------------------------------------------------- resumable uploads


def _upload_out(row: Dataset) -> UploadOut:
    state = datasets.upload_state(row)
    return UploadOut(
        id=row.id,
        name=row.name,
        format=row.format,  # type: ignore[arg-type]  # (a DatasetFormat, checked on the way in)
        size_bytes=state["size_bytes"],
        offset=state["offset"],
        created_at=row.created_at,
    )


@router.post("/uploads", status_code=201, response_model=UploadOut)
def create_upload(body: UploadCreate, session: SessionDep, tenant: TenantDep, settings: SettingsDep) -> UploadOut:
    """Start a resumable upload: then PUT its parts in order and POST `complete` (see README)."""
    if body.size_bytes > settings.max_upload_bytes:
        raise too_large(settings.max_upload_bytes)
    limit = upload_limit_in(session, tenant_id=tenant.tenant_id, max_upload_bytes=settings.max_upload_bytes)
    if body.size_bytes > limit.max_bytes:
        raise limit.problem()
    fmt = _pick_format(body.format, body.name)
    row = datasets.create_resumable(
        session,
        dataset_id=new_id("ds"),
        tenant_id=tenant.tenant_id,
        name=body.name,
        fmt=fmt,
        size_bytes=body.size_bytes,
    )
    session.commit()
    return _upload_out(row)


@router.get("/uploads/{upload_id}", response_model=UploadOut)
def get_upload(upload_id: str, session: SessionDep, tenant: TenantDep) -> UploadOut:
    """An unfinished upload and its `offset`: where the next part (or the resent one) starts."""
    row = datasets.get_resumable(session, tenant_id=tenant.tenant_id, dataset_id=upload_id)
    if row is None:
        raise not_found("upload", upload_id)
    return _upload_out(row)


def _resumable(engine: Engine, tenant_id: str, upload_id: str) -> Dataset:
    """The tenant's unfinished upload, detached from its session (404 when there is none)."""
    with session_scope(engine) as session:
        row = datasets.get_resumable(session, tenant_id=tenant_id, dataset_id=upload_id)
        if row is None:
            raise not_found("upload", upload_id)
        session.expunge(row)
        return row


@router.put(
    "/uploads/{upload_id}",
    response_model=UploadOut,
    openapi_extra={"requestBody": {"required": True, "content": {"application/octet-stream": {}}}},
)
async def put_upload_part(
    upload_id: str,
    request: Request,
    tenant: TenantDep,
    store: StoreDep,
    offset: Annotated[int, Query(ge=0)],
) -> UploadOut:
    """Add the raw body as the part at `offset` (which must be the upload's offset; 409 with it otherwise)."""
    engine = request.app.state.engine

    row = await run_in_threadpool(_resumable, engine, tenant.tenant_id, upload_id)
    state = datasets.upload_state(row)
    if offset != state["offset"]:
        raise _offset_conflict(state["offset"], offset)
    key = datasets.part_key_for(upload_id, offset, secrets.token_hex(6))
    received = await receive_raw(request, store=store, key=key, max_bytes=state["size_bytes"] - offset)
    if received.size == 0:
        await run_in_threadpool(store.delete, key)
        raise invalid("body", "an upload part must hold at least one byte")

    def record() -> Dataset | None:
        with session_scope(engine) as session:
            done = datasets.add_part(
                session, tenant_id=tenant.tenant_id, dataset_id=upload_id, offset=offset, key=key, size=received.size
            )
            if done is None:
                return None
            row = datasets.get_resumable(session, tenant_id=tenant.tenant_id, dataset_id=upload_id)
            assert row is not None
            session.expunge(row)
            return row

    try:
        updated = await run_in_threadpool(record)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(store.delete, key)
        raise
    if updated is None:  # another request added this part first
        await run_in_threadpool(store.delete, key)
        latest = await run_in_threadpool(_resumable, engine, tenant.tenant_id, upload_id)
        raise _offset_conflict(datasets.upload_state(latest)["offset"], offset)
    return _upload_out(updated)


def _offset_conflict(expected: int, given: int) -> Problem:
    return Problem(
        409,
        f"the upload's offset is {expected}, not {given}: send the part that starts at {expected}",
        headers={"Upload-Offset": str(expected)},
    )


@router.post("/uploads/{upload_id}/complete", status_code=201, response_model=DatasetOut)
async def complete_upload(
    upload_id: str,
    request: Request,
    tenant: TenantDep,
    settings: SettingsDep,
    store: StoreDep,
    body: UploadComplete | None = None,
) -> DatasetOut:
    """Assemble the parts, check the sha256 (when given), validate the dataset; 201 Dataset."""
    engine = request.app.state.engine

    row = await run_in_threadpool(_resumable, engine, tenant.tenant_id, upload_id)
    state = datasets.upload_state(row)
    if state["offset"] != state["size_bytes"]:
        raise _offset_conflict(state["offset"], state["size_bytes"])
    key = datasets.storage_key_for(upload_id)

    def assemble() -> tuple[int, str]:
        def chunks() -> Iterator[bytes]:
            for part in state["parts"]:
                with store.open_read(part["key"]) as reader:
                    while chunk := reader.read(WRITE_BUFFER_BYTES):
                        yield chunk

        return store.put_stream(key, chunks())

    try:
        size, sha256 = await run_in_threadpool(assemble)
        if size != state["size_bytes"]:
            raise Problem(500, f"the assembled upload holds {size} bytes, not {state['size_bytes']}")
        if body is not None and body.sha256 is not None and body.sha256 != sha256:
            raise invalid("sha256", f"the uploaded bytes hash to {sha256}; the upload is discarded, start again")
        for part in state["parts"]:
            await run_in_threadpool(store.delete, part["key"])
        stats = await anyio.to_thread.run_sync(
            partial(
                inspect_dataset,
                store.local_path(key),
                row.format,
                timeout_s=settings.inspect_timeout_s,
                max_memory_bytes=settings.inspect_max_memory_bytes,
            ),
            limiter=request.app.state.inspect_limiter,
        )

        def finish() -> DatasetOut:
            with session_scope(engine) as session:
                ready = datasets.mark_ready(
                    session,
                    dataset_id=upload_id,
                    name=row.name,
                    fmt=row.format,
                    size_bytes=size,
                    sha256=sha256,
                    stats=stats,
                )
                return DatasetOut.model_validate(ready)

        return await run_in_threadpool(finish)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(_discard, engine, store, upload_id)
        raise


@router.delete("/uploads/{upload_id}", status_code=204)
async def abort_upload(upload_id: str, request: Request, tenant: TenantDep, store: StoreDep) -> Response:
    """Abandon an unfinished upload and its parts."""
    engine = request.app.state.engine

    def exists() -> bool:
        with session_scope(engine) as session:
            return datasets.get_resumable(session, tenant_id=tenant.tenant_id, dataset_id=upload_id) is not None

    if not await run_in_threadpool(exists):
        raise not_found("upload", upload_id)
    await run_in_threadpool(_discard, engine, store, upload_id)
    return Response(status_code=204)


async def _receive(
    request: Request, *, store: Store, key: str, max_bytes: UploadLimit
) -> tuple[ReceivedFile, dict[str, str]]:
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
    """Delete a dataset: gone from the API at once, its file once no unfinished job uses it."""
    dataset = datasets.get(session, tenant_id=tenant.tenant_id, dataset_id=dataset_id, lock="update")
    if dataset is None:
        raise not_found("dataset", dataset_id)
    held = datasets.in_use(session, dataset_id=dataset_id)
    datasets.mark_deleted(session, dataset_id=dataset_id)
    session.commit()
    if not held:  # else the garbage collector removes it once those jobs finish (ganft/retention.py)
        try:
            store.delete_prefix(f"datasets/{dataset_id}")
        except StoreUnavailable as exc:  # deleted all the same: the garbage collector removes the file later
            log.warning("dataset %s: its file stays until the next garbage collection (%s)", dataset_id, exc)
    return Response(status_code=204)
