"""Async reads for the API's hottest paths (`GET /v1/jobs/{id}`, the job list, the job behind
every `/v1/jobs/{id}/...` route, API-key lookups), without an ORM session or a threadpool hop.

Through a Session a single-row lookup cost ~0.37 ms of API CPU (pool pre-ping, BEGIN, SELECT,
ROLLBACK, identity map) plus a hop to a worker thread; with 64 clients that held
`GET /v1/jobs/{id}` to ~850 requests/s on 2 cores (bench/RESULTS.md, "service: API load"). On
Postgres a `Reader` runs the statement on a pool of psycopg async connections, on the event
loop: one round trip in autocommit (psycopg prepares a statement after a few uses), ~0.05-0.09 ms.
On any other database (SQLite in the embedded default) the same statement runs through the
SQLAlchemy engine in the threadpool.

Statements are SQLAlchemy Core selects built once at import by their repo module (one source
of truth for the SQL); a Postgres reader compiles each to the psycopg dialect once. Rows come
back as dicts keyed by column label.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol, TypeVar

import anyio
import psycopg
from sqlalchemy import Engine, Select, inspect
from sqlalchemy.engine import Compiled
from sqlalchemy.orm import configure_mappers

from ganft.db.aiopool import AsyncPool
from ganft.db.session import POSTGRES_CONNECT_TIMEOUT_S

log = logging.getLogger(__name__)

M = TypeVar("M")
Statement = Select[*tuple[Any, ...]]  # a select of any columns

READ_POOL_SIZE = 10  # connections per API process: queries take ~0.1 ms, ten in flight is plenty
READ_POOL_TIMEOUT_S = 5.0  # wait for a free connection when all are busy, then PoolTimeout (a 503)


class Reader(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def all(self, statement: Statement, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Every row of `statement` with `params` bound."""
        ...


def make_reader(engine: Engine) -> Reader:
    """A psycopg async pool on Postgres, the engine in the threadpool elsewhere."""
    if engine.dialect.name == "postgresql":
        return PostgresReader(engine)
    return ThreadReader(engine)


async def first(reader: Reader, statement: Statement, params: dict[str, Any]) -> dict[str, Any] | None:
    """The first row, or None (for statements that select at most one row)."""
    rows = await reader.all(statement, params)
    return rows[0] if rows else None


def detached(cls: type[M], row: dict[str, Any]) -> M:
    """An instance of the mapped class `cls` holding `row` (keys = its attribute names), detached.

    Built the way SQLAlchemy's own loader builds one (a new instance, its dict filled), not through
    `cls(**row)`: that fires an attribute event per column, ~30 us per row against ~1.5 us here.
    Nothing tracks it: it is for reading (routes that change a job use a session of their own).
    """
    manager = inspect(cls).class_manager
    if manager.mapper.configured is False:
        configure_mappers()  # instrumentation is set up on first ORM use; this read may be the first
    instance: M = manager.new_instance()
    instance.__dict__.update(row)
    return instance


class ThreadReader:
    """Runs statements on a SQLAlchemy engine in anyio's threadpool (SQLite, tests, anything)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def all(self, statement: Statement, params: dict[str, Any]) -> list[dict[str, Any]]:
        return await anyio.to_thread.run_sync(self._run, statement, params)

    def _run(self, statement: Statement, params: dict[str, Any]) -> list[dict[str, Any]]:
        with self._engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(statement, params)]


class PostgresReader:
    """Statements on a small pool of psycopg async connections (autocommit, dict rows), each
    statement compiled once."""

    def __init__(self, engine: Engine, *, max_size: int = READ_POOL_SIZE, timeout_s: float = READ_POOL_TIMEOUT_S):
        conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._dialect = engine.dialect
        self._compiled: dict[int, tuple[Statement, Compiled, str]] = {}  # id(statement) -> (it, compiled, SQL)
        self._pool = AsyncPool(
            conninfo, max_size=max_size, timeout_s=timeout_s, connect_timeout_s=POSTGRES_CONNECT_TIMEOUT_S
        )

    async def open(self) -> None:
        return None  # connections are opened by the first requests that need them

    async def close(self) -> None:
        await self._pool.close()

    async def all(self, statement: Statement, params: dict[str, Any]) -> list[dict[str, Any]]:
        compiled, sql = self._compile(statement)
        bound = compiled.construct_params(params)
        try:
            return await self._fetch(sql, bound)
        except psycopg.OperationalError:
            # Usually a pooled connection that died with a server restart, and its idle siblings
            # with it: drop them and try once more on a new connection (reads are safe to repeat).
            # A server that is still down fails again at connect, at once: a 503.
            log.info("read failed on a pooled connection; reconnecting and retrying once")
            await self._pool.discard_idle()
            return await self._fetch(sql, bound)

    async def _fetch(self, sql: str, params: Mapping[str, Any] | None) -> list[dict[str, Any]]:
        async with self._pool.connection() as connection:
            cursor = await connection.execute(sql, params)  # type: ignore[arg-type]  # SQL compiled by SQLAlchemy
            return await cursor.fetchall()

    def _compile(self, statement: Statement) -> tuple[Compiled, str]:
        # Keyed by identity: the statements are module-level constants, compiled on first use.
        entry = self._compiled.get(id(statement))
        if entry is None or entry[0] is not statement:
            compiled = statement.compile(dialect=self._dialect)
            entry = (statement, compiled, str(compiled))
            self._compiled[id(statement)] = entry
        return entry[1], entry[2]
