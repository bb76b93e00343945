"""The job page's Pause and Resume buttons, and a fork's lineage, in headless Chromium on a real uvicorn server.

No worker: a queued job pauses and resumes at once; the fork's parent checkpoint is recorded as a worker
records it.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
from sqlalchemy import Engine, update

from ganft.db.session import session_scope
from ganft.db.tables import Job
from ganft.repo import lifecycle
from ganft.settings import Settings
from ganft.store import open_store
from tests.e2e_browser.conftest import Browser
from tests.e2e_browser.test_dashboard import create_job


def test_pause_resume_buttons_and_fork_lineage(
    browser: Browser, live_server: str, make_key: Callable[[str], str], engine: Engine, settings: Settings
) -> None:
    page = browser.page
    key = make_key("acme")
    job_id = create_job(live_server, key, steps=80)
    page.goto(f"{live_server}/#/jobs/{job_id}")
    page.fill("#key-prompt-input", key)
    page.click("#key-prompt button[type=submit]")
    page.wait_for_selector(".job-head .badge.status-queued")
    assert page.is_hidden(".job-head button:has-text('Resume')")
    page.click(".job-head button:has-text('Pause')")
    page.wait_for_selector(".job-head .badge.status-paused")
    assert page.is_hidden(".job-head button:has-text('Pause')")
    assert page.is_visible(".job-head button:has-text('Cancel job')")  # a paused job can still be cancelled
    page.click(".job-head button:has-text('Resume')")
    page.wait_for_selector(".job-head .badge.status-queued")

    # A fork's Details name its parent (a link to the parent's page) and the step.
    with session_scope(engine) as session:
        session.execute(update(Job).where(Job.id == job_id).values(status="running", worker_id="w1"))
    key_in_store = f"jobs/{job_id}/checkpoints/ckpt-00000040.pt"
    size, sha = open_store(settings.store_url).put_bytes(key_in_store, b"state")
    with session_scope(engine) as session:
        lifecycle.record_checkpoint(
            session, job_id=job_id, worker_id="w1", key=key_in_store, step=40, size_bytes=size, sha256=sha
        )
    with httpx.Client(base_url=live_server, headers={"Authorization": f"Bearer {key}"}) as api:
        fork = api.post("/v1/jobs", json={"from_checkpoint": {"job_id": job_id, "step": 40}})
        assert fork.status_code == 201, fork.text
    page.goto(f"{live_server}/#/jobs/{fork.json()['id']}")
    page.wait_for_selector(f"tr:has-text('Forked from') a[href='#/jobs/{job_id}']")
    assert f"{job_id} at step 40" in page.inner_text("tr:has-text('Forked from')")
    assert browser.errors == []
