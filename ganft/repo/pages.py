"""Keyset pagination, newest first, over `(created_at, id)`.

A cursor is opaque to clients: base64url of `[created_at ISO, id]` of the last row of a
page. Keyset (not OFFSET) pagination never repeats or skips a row when rows are inserted
between page requests.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, tuple_
from sqlalchemy.orm import InstrumentedAttribute, Session

T = TypeVar("T")


class InvalidCursor(ValueError):
    """The `after` cursor was not produced by this service."""


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None  # None on the last page


def as_utc(value: dt.datetime) -> dt.datetime:
    """Timezone-aware UTC (SQLite hands back naive datetimes; everything stored is UTC)."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def encode_cursor(created_at: dt.datetime, row_id: str) -> str:
    raw = json.dumps([as_utc(created_at).isoformat(), row_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, row_id = json.loads(raw)
        if not isinstance(row_id, str) or not isinstance(created, str):
            raise TypeError("cursor fields")
        return as_utc(dt.datetime.fromisoformat(created)), row_id
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise InvalidCursor(f"invalid cursor {cursor!r}") from exc


def paginate(
    session: Session,
    query: Select[Any],
    *,
    created_at: InstrumentedAttribute[dt.datetime],
    row_id: InstrumentedAttribute[str],
    limit: int,
    after: str | None,
) -> Page[Any]:
    """Run `query` (selecting one entity) newest first, `limit` rows after the cursor."""
    if after:
        at, last_id = decode_cursor(after)
        query = query.where(tuple_(created_at, row_id) < tuple_(at, last_id))
    rows = list(session.scalars(query.order_by(created_at.desc(), row_id.desc()).limit(limit + 1)))
    return page_of(rows, limit)


def page_of(rows: list[T], limit: int) -> Page[T]:
    """A page from up to `limit + 1` rows fetched newest first (`created_at`, `id`): one more than
    `limit` means there is a next page, which starts after the last row kept."""
    if len(rows) <= limit:
        return Page(rows, None)
    rows = rows[:limit]
    last: Any = rows[-1]
    return Page(rows, encode_cursor(last.created_at, last.id))
