"""Engines and sessions for Postgres (production) and SQLite (the embedded default).

Both the API and the worker use synchronous SQLAlchemy 2.0 sessions: FastAPI runs plain
`def` routes in its threadpool, so DB work never blocks the event loop.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from ganft.settings import get_settings

SQLITE_BUSY_TIMEOUT_MS = 15_000  # writers wait this long for the single SQLite write lock
# Connections kept per process. The API sizes its threadpool to this (api/main.py): with more
# threads than pooled connections, a busy API opened and closed an overflow connection (a new
# Postgres backend) for about one request in five (bench/RESULTS.md, "service: API load").
POSTGRES_POOL_SIZE = 20
POSTGRES_MAX_OVERFLOW = 10  # extra connections under bursts (sessions held across hops, SSE polls), closed when idle
POSTGRES_POOL_TIMEOUT_S = 10  # wait for a free connection before TimeoutError (a 503)
POSTGRES_CONNECT_TIMEOUT_S = 5  # TCP connect to the server


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for `url`: pre-pinged pool on Postgres; WAL, busy timeout and FKs on SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"check_same_thread": False}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    options: dict[str, Any] = {
        "pool_pre_ping": True,
        "pool_size": POSTGRES_POOL_SIZE,
        "max_overflow": POSTGRES_MAX_OVERFLOW,
        "pool_timeout": POSTGRES_POOL_TIMEOUT_S,
        "connect_args": {"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S},
    }
    options.update(kwargs)
    return create_engine(url, **options)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets readers (API) run while a writer (worker) commits; foreign keys are off
    # by default in SQLite and the schema relies on them.
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: routes build responses from rows after committing.
    return sessionmaker(bind=engine, expire_on_commit=False)


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def get_engine(url: str | None = None) -> Engine:
    """The process-wide engine for `url` (default: `GANFT_DATABASE_URL`), created once."""
    if url is None:
        url = get_settings().database_url
    with _engines_lock:
        if url not in _engines:
            _engines[url] = make_engine(url)
        return _engines[url]


@contextmanager
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """A session that commits when the block succeeds and rolls back when it raises.

    Without an engine it uses `get_engine()` (the settings' database).
    """
    session = Session(bind=engine if engine is not None else get_engine(), expire_on_commit=False)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
