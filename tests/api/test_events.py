"""Job events: the JSON list and the Server-Sent Events stream (ids, resume, pings, end)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import httpx
from fastapi.testclient import TestClient

from tests.api.conftest import Seed

SSE = {"Accept": "text/event-stream"}


def _read_stream(
    client: TestClient, url: str, headers: dict[str, str]
) -> tuple[list[dict[str, object]], str, dict[str, str]]:
    """(events as {id, event, data}, the raw text, response headers) of a whole stream."""
    with client.stream("GET", url, headers={**headers, **SSE}, timeout=30) as response:
        assert response.status_code == 200, response.read()
        raw = "".join(response.iter_text())
        response_headers = dict(response.headers)
    events = []
    for block in raw.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "id" in fields:
            events.append({"id": int(fields["id"]), "event": fields["event"], "data": json.loads(fields["data"])})
    return events, raw, response_headers


def test_events_json_with_after(client: TestClient, headers: dict[str, str], seed: Seed) -> None:
    """`?after=SEQ` returns later events in order; `limit` pages with next_cursor."""
    job = seed.job()
    for step in (10, 20, 30):
        seed.event(job, "progress", step=step)
    body = client.get(f"/v1/jobs/{job}/events", headers=headers, params={"after": 1}).json()
    assert [e["seq"] for e in body["data"]] == [2, 3, 4] and body["next_cursor"] is None
    assert body["data"][0]["data"] == {"step": 10} and body["data"][0]["type"] == "progress"
    page = client.get(f"/v1/jobs/{job}/events", headers=headers, params={"limit": 2}).json()
    assert [e["seq"] for e in page["data"]] == [1, 2] and page["next_cursor"] == "2"
    bad = client.get(f"/v1/jobs/{job}/events", headers=headers, params={"after": -1})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "after"


def test_stream_of_a_finished_job_ends_after_its_terminal_event(
    client: TestClient, headers: dict[str, str], seed: Seed
) -> None:
    """All events stream with `id:` = seq and `event:` = type, and the stream closes after the terminal one."""
    job = seed.job(status="running")
    seed.event(job, "progress", step=5)
    seed.finish(job, "succeeded")
    events, raw, response_headers = _read_stream(client, f"/v1/jobs/{job}/events", headers)
    assert [(e["id"], e["event"]) for e in events] == [(1, "status"), (2, "progress"), (3, "status")]
    assert events[-1]["data"]["data"] == {"status": "succeeded"}  # type: ignore[index]
    assert raw.startswith("retry: ")
    assert response_headers["content-type"].startswith("text/event-stream")
    assert response_headers["x-accel-buffering"] == "no" and response_headers["cache-control"] == "no-cache"


def test_stream_resumes_after_last_event_id(client: TestClient, headers: dict[str, str], seed: Seed) -> None:
    """A reconnect with Last-Event-ID: 2 gets only seq 3 onwards."""
    job = seed.job(status="running")
    for step in (1, 2, 3):
        seed.event(job, "progress", step=step)
    seed.finish(job, "failed")
    events, _, _ = _read_stream(client, f"/v1/jobs/{job}/events", {**headers, "Last-Event-ID": "2"})
    assert [e["id"] for e in events] == [3, 4, 5]


def test_stream_delivers_live_events_and_pings(
    make_client: Callable[..., TestClient], headers: dict[str, str], seed: Seed
) -> None:
    """Events written while the stream is open arrive in order; an idle stream gets `: ping` comments;
    the stream ends once the job is cancelled."""
    client = make_client(sse_poll_interval_s=0.05, sse_ping_interval_s=0.2)
    job = seed.job(status="running")

    def worker() -> None:
        time.sleep(0.3)
        seed.event(job, "progress", step=1)
        time.sleep(0.5)  # idle long enough for a ping
        seed.event(job, "progress", step=2)
        seed.finish(job, "cancelled")

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        events, raw, _ = _read_stream(client, f"/v1/jobs/{job}/events", headers)
    finally:
        thread.join()
    assert [e["id"] for e in events] == [1, 2, 3, 4]
    assert ": ping" in raw


def test_stream_of_unknown_job_is_404(client: TestClient, headers: dict[str, str]) -> None:
    """No stream for an id that does not exist: a 404 problem."""
    response = client.get("/v1/jobs/job_0123456789abcdef01234567/events", headers={**headers, **SSE})
    assert response.status_code == 404 and response.headers["content-type"] == "application/problem+json"


def test_stream_over_a_real_server_is_incremental(live_server: str, headers: dict[str, str], seed: Seed) -> None:
    """Through uvicorn (not the test transport), the first event arrives while the job is still running,
    and other requests are served while the stream is open (the stream does not block the event loop)."""
    job = seed.job(status="running")
    url = f"{live_server}/v1/jobs/{job}/events"
    with httpx.Client(timeout=10) as http, http.stream("GET", url, headers={**headers, **SSE}) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        first_id = next(line for line in lines if line.startswith("id: "))
        assert first_id == "id: 1"
        assert http.get(f"{live_server}/v1/jobs/{job}", headers=headers).json()["status"] == "running"
        seed.event(job, "progress", step=3)
        assert next(line for line in lines if line.startswith("id: ")) == "id: 2"
        seed.finish(job, "succeeded")
        rest = list(lines)  # ends by itself after the terminal event
    assert "id: 3" in rest
