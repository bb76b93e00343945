"""A small pool of psycopg async connections for the read path (ganft/db/reads.py).

Connections are opened on demand by the request that needs one, as SQLAlchemy's QueuePool
does, not by a background task as in psycopg_pool: while Postgres is down a request then
fails at once (connection refused: a 503 to the client) instead of waiting out a pool timeout
for a reconnect that cannot happen (5-10 s a request, measured with psycopg_pool). A returned
connection is kept only when it is idle and healthy; one that failed or was interrupted
mid-query (a cancelled request) is closed, never reused.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow, dict_row

Connection = psycopg.AsyncConnection[DictRow]


class PoolTimeout(Exception):
    """No connection became free within the pool's timeout (every one busy)."""


class AsyncPool:
    """At most `max_size` autocommit connections with dict rows; idle ones reused newest first."""

    def __init__(self, conninfo: str, *, max_size: int, timeout_s: float, connect_timeout_s: int) -> None:
        self._conninfo = conninfo
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._slots = asyncio.Semaphore(max_size)  # one per connection in use or being opened
        self._idle: list[Connection] = []  # LIFO: the most recently used connection is the warmest

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        try:
            async with asyncio.timeout(self._timeout_s):  # only matters when every connection is busy
                await self._slots.acquire()
        except TimeoutError:
            raise PoolTimeout(f"no database connection free within {self._timeout_s:g} s") from None
        try:
            connection = self._idle.pop() if self._idle else await self._connect()
            reusable = False
            try:
                yield connection
                reusable = not connection.closed and connection.info.transaction_status == TransactionStatus.IDLE
            finally:
                if reusable:
                    self._idle.append(connection)
                else:
                    await connection.close()
        finally:
            self._slots.release()

    async def discard_idle(self) -> None:
        """Close every idle connection (after one failed: a server restart cuts them all)."""
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.close()

    async def close(self) -> None:
        await self.discard_idle()

    async def _connect(self) -> Connection:
        return await psycopg.AsyncConnection.connect(
            self._conninfo, autocommit=True, row_factory=dict_row, connect_timeout=self._connect_timeout_s
        )
