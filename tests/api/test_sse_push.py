"""Pushed event streams (ganft/db/notify.py): NOTIFY at commit, the API's listener, and the polls behind it.

Real parts throughout: Postgres NOTIFY/LISTEN, a uvicorn server, an HTTP stream. The failures are
real too (the listener's backend is killed with `pg_terminate_backend`), except that its reconnects
are refused by an injected connect function for as long as the test needs it down.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from api.main import create_app
from api.routes import events as events_route
from ganft.db.migrate import upgrade
from ganft.db.notify import CHANNEL, EventHub
from ganft.db.session import make_engine, session_scope
from ganft.repo import jobs, keys
from ganft.settings import Settings
from tests.api.conftest import WAIT_S, Seed, csv_bytes, terminate_listeners, wait_until


class Stream:
    """An SSE client in a thread: each event's `data` (a dict) lands in a queue; `ended` when the server closes."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.ended = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url, headers), daemon=True)
        self._thread.start()

    def _run(self, url: str, headers: dict[str, str]) -> None:
        try:
            with (
                httpx.Client(timeout=120) as http,
                http.stream("GET", url, headers={**headers, "Accept": "text/event-stream"}) as response,
            ):
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        self.events.put(json.loads(line[len("data: ") :]))
        finally:
            self.ended.set()

    def next(self) -> dict[str, Any]:
        return self.events.get(timeout=WAIT_S)


def test_events_announce_their_job_once_per_committed_transaction(settings: Settings, seed: Seed) -> None:
    """A rolled-back transaction announces nothing; one that appends three events announces its job once.

    Postgres delivers notifications in commit order, so the last committed transaction's marks the end."""
    first, second = seed.job(), seed.job()
    conninfo = make_url(settings.database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as listener:
        listener.execute(f"LISTEN {CHANNEL}")
        with pytest.raises(RuntimeError), session_scope(seed.engine) as session:
            jobs.append_event(session, job_id=first, type="log", data={"message": "never committed"})
            raise RuntimeError("roll back")
        with session_scope(seed.engine) as session:
            for step in (1, 2, 3):
                jobs.append_event(session, job_id=second, type="progress", data={"step": step})
        with session_scope(seed.engine) as session:
            jobs.append_event(session, job_id=first, type="log", data={"message": "committed"})
        payloads = [n.payload for n in listener.notifies(timeout=WAIT_S, stop_after=2)]
    assert payloads == [second, first]


def test_a_stream_outlives_its_listener(
    monkeypatch: pytest.MonkeyPatch,
    serve: Callable[[FastAPI], str],
    settings: Settings,
    headers: dict[str, str],
    seed: Seed,
) -> None:
    """Pushed while the listener is up; polled while it is down (killed, reconnects refused); pushed again
    once it has reconnected. The safety-net poll while pushed (and the ping, which also ends a wait) is
    raised to 10 minutes, so an event that arrives while the listener is up was pushed, and one that
    arrives while it is down was polled by a stream that was woken when the listener went."""
    monkeypatch.setattr(events_route, "PUSHED_POLL_S", 600.0)
    app = create_app(settings.model_copy(update={"sse_poll_interval_s": 0.2, "sse_ping_interval_s": 600.0}))
    base = serve(app)
    hub: EventHub = app.state.event_hub
    wait_until(lambda: hub.live, "the listener to connect")
    job = seed.job(status="running")
    stream = Stream(f"{base}/v1/jobs/{job}/events", headers)
    assert stream.next()["data"] == {"status": "queued"}

    seed.event(job, "progress", step=1)
    assert stream.next()["data"] == {"step": 1}
    assert hub.notifications >= 1

    connect = hub._connect

    async def refuse(conninfo: str) -> psycopg.AsyncConnection[Any]:
        raise psycopg.OperationalError("injected: the database cannot be reached")

    monkeypatch.setattr(hub, "_connect", refuse)
    assert terminate_listeners(seed.engine) == [True]
    wait_until(lambda: not hub.live, "the listener to notice its connection is gone")
    heard = hub.notifications
    seed.event(job, "progress", step=2)
    assert stream.next()["data"] == {"step": 2}  # found by the stream's normal poll
    assert not hub.live and hub.notifications == heard

    monkeypatch.setattr(hub, "_connect", connect)
    wait_until(lambda: hub.live, "the listener to reconnect")
    seed.event(job, "progress", step=3)
    assert stream.next()["data"] == {"step": 3}
    assert hub.notifications > heard

    seed.finish(job, "succeeded")
    assert stream.next()["data"] == {"status": "succeeded"}
    assert stream.ended.wait(WAIT_S), "the stream did not end after the terminal event"


def test_streams_poll_on_sqlite(tmp_path: Path, serve: Callable[[FastAPI], str]) -> None:
    """The embedded default has no listener: a live stream still gets new events (by polling) and ends."""
    settings = Settings(data_dir=tmp_path / "data", sse_poll_interval_s=0.05)
    assert settings.database_url.startswith("sqlite:")
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    with session_scope(engine) as session:
        _, key = keys.create_key(session, tenant_name="solo")
    headers = {"Authorization": f"Bearer {key}"}
    app = create_app(settings)
    base = serve(app)
    with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
        dataset = http.post("/v1/datasets?name=pets.csv", content=csv_bytes()).json()["id"]
        job = http.post("/v1/jobs", json={"method": "ssgan", "dataset_id": dataset}).json()["id"]
        stream = Stream(f"{base}/v1/jobs/{job}/events", headers)
        assert stream.next()["data"] == {"status": "queued"}
        with session_scope(engine) as session:
            jobs.append_event(session, job_id=job, type="log", data={"message": "hello"})
        assert stream.next()["data"] == {"message": "hello"}
        assert http.post(f"/v1/jobs/{job}/cancel").json()["status"] == "cancelled"
    assert stream.next()["data"] == {"status": "cancelled"}
    assert stream.ended.wait(WAIT_S), "the stream did not end after the terminal event"
    assert not app.state.event_hub.live and app.state.event_hub.notifications == 0
    engine.dispose()
