"""Push for the event streams: Postgres NOTIFY when a job's events commit, one LISTEN per API process.

Every transaction that appends job events also runs `SELECT pg_notify('ganft_job_events', <job id>)`
(ganft/repo/jobs.py `append_event`). Postgres delivers a notification only when that transaction
commits, after its rows are visible to other sessions, and folds identical ones of one transaction
into one. In the API process an `EventHub` holds one autocommit psycopg connection that LISTENs on
the channel and wakes the streams (api/routes/events.py) watching that job; each stream then reads
its new events from the database as before.

The push only shortens the wait: a stream still polls, slowly while the listener is connected (a
lost notification costs latency, never an event) and at the normal poll interval while it is not.
When the connection drops (a Postgres restart, a killed backend) the hub wakes every stream, then
reconnects with capped exponential backoff and wakes every stream again once it is listening (any
notification sent in between was lost). On SQLite (the embedded default) there is no listener and
the streams poll.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import psycopg
from sqlalchemy import Engine

from ganft.db.session import POSTGRES_CONNECT_TIMEOUT_S

log = logging.getLogger(__name__)

CHANNEL = "ganft_job_events"  # payload: the job id
KEYS_REVOKED_CHANNEL = "ganft_keys_revoked"  # payload: the revoked key's sha256 (ganft/repo/keys.py revoke_key)
APPLICATION_NAME = "ganft-event-listener"  # how the listener shows in pg_stat_activity
RECONNECT_MIN_S = 0.2  # first wait after the connection is lost or a connect fails
RECONNECT_MAX_S = 5.0  # the backoff doubles up to this
HEALTH_CHECK_S = 30.0  # a quiet connection is checked with `SELECT 1` this often (a silently dead peer)
HEALTH_CHECK_TIMEOUT_S = 10.0  # a check that takes longer counts as a lost connection


class EventHub:
    """Wakes the event streams of a job when its events commit (a LISTEN connection on Postgres).

    `subscribe(job_id)` gives a stream an `asyncio.Event` that is set when new events of that job may
    be there; `live` says whether notifications are arriving now (streams poll faster when not).
    Without a `conninfo` (SQLite) nothing is ever pushed and `live` stays False.
    """

    def __init__(self, conninfo: str | None, *, on_key_revoked: Callable[[str | None], None] | None = None) -> None:
        self._conninfo = conninfo
        # Called with a revoked key's sha256, and with None when revocations may have been missed
        # (the listener was disconnected): the API's KeyCache forgets that key, or everything.
        self._on_key_revoked = on_key_revoked
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None
        self.live = False
        self.notifications = 0  # received since start (tests and logs read it)

    @contextmanager
    def subscribe(self, job_id: str) -> Iterator[asyncio.Event]:
        """An Event set whenever the job may have new events; unsubscribed when the block ends."""
        wake = asyncio.Event()
        self._waiters.setdefault(job_id, set()).add(wake)
        try:
            yield wake
        finally:
            waiters = self._waiters.get(job_id)
            if waiters is not None:
                waiters.discard(wake)
                if not waiters:
                    del self._waiters[job_id]

    async def start(self) -> None:
        """Start listening in the background (call on the app's event loop); returns at once."""
        if self._conninfo is not None and self._task is None:
            self._task = asyncio.create_task(self._listen_forever(self._conninfo), name="ganft-event-listener")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
        self.live = False

    def wake(self, job_id: str) -> None:
        for wake in self._waiters.get(job_id, ()):
            wake.set()

    def wake_all(self) -> None:
        for waiters in self._waiters.values():
            for wake in waiters:
                wake.set()

    def _key_revoked(self, key_hash: str | None) -> None:
        if self._on_key_revoked is not None:
            self._on_key_revoked(key_hash)

    async def _listen_forever(self, conninfo: str) -> None:
        delay = RECONNECT_MIN_S
        failing = False
        while True:
            try:
                connection = await self._connect(conninfo)
            except psycopg.Error as exc:
                if not failing:
                    log.warning("event listener cannot connect (%s); retrying with backoff", type(exc).__name__)
                failing = True
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # jitter: API processes do not reconnect in step
                delay = min(delay * 2, RECONNECT_MAX_S)
                continue
            try:
                await connection.execute(f"LISTEN {CHANNEL}")
                await connection.execute(f"LISTEN {KEYS_REVOKED_CHANNEL}")
                self.live = True
                if failing:
                    log.info("event listener reconnected")
                failing, delay = False, RECONNECT_MIN_S
                self.wake_all()  # notifications sent while we were not listening are lost: every stream reads once
                self._key_revoked(None)  # and so may revocations be: forget every cached key
                await self._consume(connection)
            except (psycopg.Error, TimeoutError) as exc:
                log.warning("event listener lost its connection (%s); reconnecting", type(exc).__name__)
                failing = True
            except Exception:  # a bug must not end the push for good: log it and start over
                log.exception("event listener failed; reconnecting")
                failing = True
            finally:
                self.live = False
                self.wake_all()  # streams switch to the normal poll interval until we are back
                with suppress(psycopg.Error, OSError):
                    await connection.close()
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, RECONNECT_MAX_S)

    async def _connect(self, conninfo: str) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(
            conninfo, autocommit=True, connect_timeout=POSTGRES_CONNECT_TIMEOUT_S, application_name=APPLICATION_NAME
        )

    async def _consume(self, connection: psycopg.AsyncConnection[Any]) -> None:
        """Wake streams as notifications arrive; raise when the connection is lost."""
        while True:
            async for notify in connection.notifies(timeout=HEALTH_CHECK_S):
                self.notifications += 1
                if notify.channel == KEYS_REVOKED_CHANNEL:
                    self._key_revoked(notify.payload)
                else:
                    self.wake(notify.payload)
            # Every HEALTH_CHECK_S: a peer that vanished without closing the socket (a lost host)
            # would leave us waiting for ever, so make a round trip. psycopg 3.3 keeps notifications that
            # arrive meanwhile for the next `notifies()`; an older one may drop them (a stream's safety-net
            # poll finds those events).
            await asyncio.wait_for(connection.execute("SELECT 1"), HEALTH_CHECK_TIMEOUT_S)


def make_hub(engine: Engine, *, on_key_revoked: Callable[[str | None], None] | None = None) -> EventHub:
    """A hub listening on `engine`'s Postgres database; on any other database, one that never pushes."""
    if engine.dialect.name != "postgresql":
        return EventHub(None)
    conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    return EventHub(conninfo, on_key_revoked=on_key_revoked)
