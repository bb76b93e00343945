"""Datasets. A row is `uploading` while its file streams in and is inspected, `ready` once
validated, `deleted` after a delete (kept for the jobs that reference it). Only `ready`
rows are ever visible through the API."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from sqlalchemy import delete, exists, select, update
from sqlalchemy.orm import Session

from ganft.db.tables import Dataset, Job
from ganft.repo.pages import Page, paginate
from ganft.states import ACTIVE_STATUSES


def storage_key_for(dataset_id: str) -> str:
    return f"datasets/{dataset_id}/data"


def create_uploading(session: Session, *, dataset_id: str, tenant_id: str, name: str, fmt: str) -> Dataset:
    row = Dataset(
        id=dataset_id,
        tenant_id=tenant_id,
        name=name,
        format=fmt,
        status="uploading",
        storage_key=storage_key_for(dataset_id),
    )
    session.add(row)
    session.flush()
    return row


def mark_ready(
    session: Session,
    *,
    dataset_id: str,
    name: str,
    fmt: str,
    size_bytes: int,
    sha256: str,
    stats: dict[str, Any],
) -> Dataset:
    """The validated upload becomes visible (name and format are final only once the body arrived)."""
    session.execute(
        update(Dataset)
        .where(Dataset.id == dataset_id, Dataset.status == "uploading")
        .values(status="ready", name=name, format=fmt, size_bytes=size_bytes, sha256=sha256, stats=stats)
    )
    return session.get_one(Dataset, dataset_id, populate_existing=True)


# ---------------------------------------------------------------- resumable uploads
# A resumable upload is an `uploading` row whose `stats` holds {"upload": {size_bytes, offset, parts}} until it
# completes (then `stats` becomes the inspector's summary). Each part is a file of its own in the store, written
# whole or not at all, so a dropped connection loses at most the part in flight.


def create_resumable(
    session: Session, *, dataset_id: str, tenant_id: str, name: str, fmt: str, size_bytes: int
) -> Dataset:
    row = create_uploading(session, dataset_id=dataset_id, tenant_id=tenant_id, name=name, fmt=fmt)
    row.stats = {"upload": {"size_bytes": size_bytes, "offset": 0, "parts": []}}
    session.flush()
    return row


def part_key_for(dataset_id: str, offset: int, token: str) -> str:
    """Where one part lives until the upload completes (under the dataset's prefix: deleted with it)."""
    return f"datasets/{dataset_id}/parts/{offset:016d}-{token}"


def get_resumable(session: Session, *, tenant_id: str, dataset_id: str, lock: bool = False) -> Dataset | None:
    """The tenant's unfinished resumable upload `dataset_id`, None otherwise; `lock` holds the row until commit."""
    query = select(Dataset).where(
        Dataset.id == dataset_id, Dataset.tenant_id == tenant_id, Dataset.status == "uploading"
    )
    if lock:
        query = query.with_for_update()
    row = session.scalars(query).one_or_none()
    return row if row is not None and "upload" in (row.stats or {}) else None


def upload_state(row: Dataset) -> dict[str, Any]:
    """{size_bytes, offset, parts: [{key, offset, size}]} of a resumable upload row."""
    state: dict[str, Any] = row.stats["upload"]
    return state


def add_part(session: Session, *, tenant_id: str, dataset_id: str, offset: int, key: str, size: int) -> int | None:
    """Append the stored part `key` (`size` bytes at `offset`) and return the new offset; None when the upload's
    offset is no longer `offset` (another request added that part first) or the upload is gone."""
    row = get_resumable(session, tenant_id=tenant_id, dataset_id=dataset_id, lock=True)
    if row is None:
        return None
    state = upload_state(row)
    if state["offset"] != offset or offset + size > state["size_bytes"]:
        return None
    parts = [*state["parts"], {"key": key, "offset": offset, "size": size}]
    row.stats = {"upload": {**state, "offset": offset + size, "parts": parts}}  # a new value: the change is seen
    session.flush()
    return offset + size


def discard_upload(session: Session, *, dataset_id: str) -> None:
    """Remove the row of an upload that failed (its file is removed by the caller)."""
    session.execute(delete(Dataset).where(Dataset.id == dataset_id, Dataset.status == "uploading"))


def purge_stale_uploads(session: Session, *, created_before: dt.datetime) -> list[str]:
    """Delete `uploading` rows older than `created_before` (their API process died mid-upload);
    returns their ids so the caller removes their files (`datasets/{id}/`, partial temp files too)."""
    statement = (
        delete(Dataset).where(Dataset.status == "uploading", Dataset.created_at < created_before).returning(Dataset.id)
    )
    return list(session.scalars(statement))


def get(
    session: Session, *, tenant_id: str, dataset_id: str, lock: Literal["share", "update"] | None = None
) -> Dataset | None:
    """A `ready` dataset of the tenant, None otherwise (absent, other tenant, uploading, deleted).

    `lock` takes a row lock until commit (Postgres): a job being created holds `share` on its
    datasets and a delete takes `update`, so a delete never slips past a new job's reference.
    """
    query = select(Dataset).where(Dataset.id == dataset_id, Dataset.tenant_id == tenant_id, Dataset.status == "ready")
    if lock is not None:
        query = query.with_for_update(read=lock == "share")
    return session.scalars(query).one_or_none()


def list_ready(session: Session, *, tenant_id: str, limit: int, after: str | None) -> Page[Dataset]:
    query = select(Dataset).where(Dataset.tenant_id == tenant_id, Dataset.status == "ready")
    return paginate(session, query, created_at=Dataset.created_at, row_id=Dataset.id, limit=limit, after=after)


def in_use(session: Session, *, dataset_id: str) -> bool:
    """True when a job that is not finished reads this dataset (train or validation)."""
    uses = (Job.dataset_id == dataset_id) | (Job.validation_dataset_id == dataset_id)
    return bool(session.scalar(select(exists().where(uses, Job.status.in_(ACTIVE_STATUSES)))))


def mark_deleted(session: Session, *, dataset_id: str) -> None:
    """Soft delete: jobs keep their reference; the file is removed by the caller after commit."""
    session.execute(update(Dataset).where(Dataset.id == dataset_id, Dataset.status == "ready").values(status="deleted"))
