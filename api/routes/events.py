"""`GET /v1/jobs/{id}/events`: the job's ordered events as JSON, or live as Server-Sent Events.

The stream reads the database (the record of truth) for events after the last one sent, then waits
to be woken. On Postgres the wake is pushed: the transaction that appends a job's events NOTIFYs at
commit and the API process's listener (ganft/db/notify.py) wakes that job's streams, so an event
reaches the client about one query after it commits. The wait also ends by timeout, a safety-net
poll: every `sse_poll_interval_s` while nothing is pushed (SQLite, or the listener reconnecting), and
only every `PUSHED_POLL_S` while the listener is up, so a lost notification costs latency, never an
event. DB work runs in the threadpool and waits are on the event loop, so a thousand open streams
cost no threads while idle. Each event is `id: <seq>`, `event: <type>`, `data: <json>`; a client
that reconnects with `Last-Event-ID` resumes after that seq. An idle stream gets a `: ping` comment
every `sse_ping_interval_s`; the stream ends after the job reaches a terminal state and its last
event was sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import suppress
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool

from api.deps import JobDep, SettingsDep
from api.schemas import EventOut, ListOf
from ganft.db.notify import EventHub
from ganft.db.session import session_scope
from ganft.repo import jobs
from ganft.states import is_terminal

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/jobs", tags=["events"])

EVENT_STREAM = "text/event-stream"
STREAM_BATCH = 500  # events per poll
RECONNECT_MS = 3000  # the `retry:` hint for EventSource clients
# The safety-net poll while notifications are pushed (a lost one is read this much later): 64 idle
# streams make ~13 reads/s here against 128 at the default 0.5 s poll.
PUSHED_POLL_S = 5.0


def _poll(engine: Engine, job_id: str, after: int) -> tuple[list[EventOut], str | None]:
    """(events after `after`, the job's status read before them) in one short session.

    Reading the status first means a terminal status implies its final event is already
    visible to the event query that follows (they commit together).
    """
    with session_scope(engine) as session:
        status = jobs.job_status(session, job_id=job_id)
        events = jobs.list_events(session, job_id=job_id, after=after, limit=STREAM_BATCH)
        return [EventOut.model_validate(e) for e in events], status


def _frame(event: EventOut) -> str:
    data = json.dumps(event.model_dump(mode="json"), separators=(",", ":"))
    return f"id: {event.seq}\nevent: {event.type}\ndata: {data}\n\n"


async def _stream(
    engine: Engine, hub: EventHub, job_id: str, after: int, *, poll_s: float, ping_s: float
) -> AsyncIterator[str]:
    yield f"retry: {RECONNECT_MS}\n\n"
    last_write = time.monotonic()
    with hub.subscribe(job_id) as woken:
        while True:
            woken.clear()  # before the read: a commit from here on ends the next wait at once
            try:
                events, status = await run_in_threadpool(_poll, engine, job_id, after)
            except DBAPIError as exc:  # headers are sent: end the stream; the client resumes with Last-Event-ID
                log.warning("event stream of %s ends: database unavailable (%s)", job_id, type(exc).__name__)
                return
            for event in events:
                yield _frame(event)
                after = event.seq
            if events:
                last_write = time.monotonic()
            if status is None or (is_terminal(status) and len(events) < STREAM_BATCH):
                return  # finished (or deleted) and everything was sent
            if time.monotonic() - last_write >= ping_s:
                yield ": ping\n\n"
                last_write = time.monotonic()
            if len(events) == STREAM_BATCH:
                continue  # more are waiting
            interval = max(poll_s, PUSHED_POLL_S) if hub.live else poll_s
            until_ping = last_write + ping_s - time.monotonic()
            with suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, min(interval, until_ping))):
                    await woken.wait()


@router.get("/{job_id}/events", response_model=ListOf[EventOut])
async def job_events(
    request: Request,
    job: JobDep,
    settings: SettingsDep,
    after: Annotated[int, Query(ge=0, description="only events with a larger seq")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    accept: Annotated[str | None, Header()] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> ListOf[EventOut] | StreamingResponse:
    """The job's events in order; with `Accept: text/event-stream`, a live stream (honours `Last-Event-ID`)."""
    engine: Engine = request.app.state.engine
    if accept is not None and EVENT_STREAM in accept:
        if last_event_id is not None and last_event_id.strip().isdigit():
            after = max(after, int(last_event_id.strip()))
        return StreamingResponse(
            _stream(
                engine,
                request.app.state.event_hub,
                job.id,
                after,
                poll_s=settings.sse_poll_interval_s,
                ping_s=settings.sse_ping_interval_s,
            ),
            media_type=EVENT_STREAM,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    def read() -> list[EventOut]:
        with session_scope(engine) as session:
            return [
                EventOut.model_validate(e) for e in jobs.list_events(session, job_id=job.id, after=after, limit=limit)
            ]

    events = await run_in_threadpool(read)
    next_cursor = str(events[-1].seq) if len(events) == limit else None
    return ListOf[EventOut](data=events, next_cursor=next_cursor)
