"""The dashboard's event-stream client in the browser: the text/event-stream parser, and a reconnect
that resumes with `Last-Event-ID` after the connection drops mid-job."""

from __future__ import annotations

import json
from collections.abc import Callable

from playwright.sync_api import Route
from sqlalchemy import Engine, update

from ganft.db.session import session_scope
from ganft.db.tables import Job, utcnow
from ganft.repo.jobs import append_event
from tests.e2e_browser.conftest import Browser
from tests.e2e_browser.test_dashboard import create_job

PARSE = """async (chunks) => {
  const { EventStreamParser } = await import("./dashboard/sse.js");
  const frames = [];
  const parser = new EventStreamParser((frame) => frames.push(frame));
  for (const chunk of chunks) parser.push(chunk);
  return { frames, retry: parser.retryMs };
}"""


def test_parser_follows_the_event_stream_format(browser: Browser, live_server: str) -> None:
    """Chunks split anywhere, CRLF and CR line ends, comments, multi-line data, ids that persist, retry."""
    browser.page.goto(f"{live_server}/")
    chunks = ["retry: 250\r\n\r\n: ping\n\nid: 7\nevent: sta", "tus\ndata: {\"a\":\n", "data:1}\n\n",
              "data: no id here\r\rid: 9\ndata: x\n", "\n", "data: split\r", "\n\r\n",
              "event: cut\ndata: never finished"]  # fmt: skip
    out = browser.page.evaluate(PARSE, chunks)
    assert out["retry"] == 250
    assert out["frames"] == [
        {"id": "7", "event": "status", "data": '{"a":\n1}'},
        {"id": "7", "event": "message", "data": "no id here"},  # the last id stays the stream's id
        {"id": "9", "event": "message", "data": "x"},
        {"id": "9", "event": "message", "data": "split"},  # CRLF split between two chunks: one line end
    ]


def test_reconnect_resumes_after_the_last_event(
    browser: Browser, live_server: str, make_key: Callable[[str], str], engine: Engine
) -> None:
    """The first connection drops after event 1; the client reconnects with Last-Event-ID: 1 and
    the log ends up with every event exactly once."""
    page = browser.page
    key = make_key("acme")
    job_id = create_job(live_server, key, steps=10)
    resumed_from: list[str | None] = []

    def events(route: Route) -> None:
        if not resumed_from and "last-event-id" not in route.request.headers:
            first = {"seq": 1, "type": "status", "data": {"status": "queued"}, "created_at": utcnow().isoformat()}
            body = f"retry: 100\n\nid: 1\nevent: status\ndata: {json.dumps(first)}\n\n"  # then the connection ends
            route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=body)
            resumed_from.append(None)
            return
        resumed_from.append(route.request.headers.get("last-event-id"))
        route.continue_()

    page.route("**/v1/jobs/*/events", events)
    page.goto(f"{live_server}/#/jobs/{job_id}")
    page.fill("#key-prompt-input", key)
    page.click("#key-prompt button[type=submit]")
    page.wait_for_selector("#event-log li[data-seq='1']")

    with session_scope(engine) as session:  # the job runs and finishes while the client is reconnected
        session.execute(update(Job).where(Job.id == job_id).values(status="running", started_at=utcnow()))
        append_event(session, job_id=job_id, type="status", data={"status": "running", "attempt": 1})
    with session_scope(engine) as session:
        session.execute(update(Job).where(Job.id == job_id).values(status="succeeded", finished_at=utcnow(), step=10))
        append_event(session, job_id=job_id, type="status", data={"status": "succeeded"})

    page.wait_for_selector(".live:has-text('ended')")
    assert resumed_from[:2] == [None, "1"]
    seqs = page.eval_on_selector_all("#event-log li", "ls => ls.map(l => Number(l.dataset.seq))")
    assert seqs == [1, 2, 3]
    assert page.inner_text("#event-log li[data-seq='3'] .text") == "→ succeeded"
    page.wait_for_selector(".job-head .badge.status-succeeded")
    assert browser.errors == []
