"""The dashboard shows a running job's live pictures and swaps in each newer version when its `artifact`
event arrives (written the way the worker writes it: store first, then `record_artifact`)."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable

from PIL import Image
from sqlalchemy import Engine

from ganft.db.session import session_scope
from ganft.repo import lifecycle
from ganft.repo.lifecycle import ArtifactRecord
from ganft.settings import Settings
from ganft.store import open_store
from tests.e2e_browser.conftest import Browser
from tests.e2e_browser.test_dashboard import create_job

SHOWN = "(w) => { const i = document.querySelector('#samples-img'); return i && i.complete && i.naturalWidth === w; }"


def _publish(engine: Engine, settings: Settings, job_id: str, width: int, step: int) -> None:
    """What worker/pictures.py does for one version of samples.png: a PNG under a key of its own, then its row."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, width), (width, 90, 160)).save(buffer, format="PNG")
    data = buffer.getvalue()
    sha256 = hashlib.sha256(data).hexdigest()
    key = f"jobs/{job_id}/pictures/samples-{sha256[:16]}.png"
    open_store(settings.store_url).put_bytes(key, data)
    with session_scope(engine) as session:
        artifact = ArtifactRecord("samples.png", len(data), sha256, "image/png", key)
        assert lifecycle.record_artifact(session, job_id=job_id, worker_id="w1", artifact=artifact, step=step)


def test_a_running_jobs_sample_grid_updates_in_place(
    browser: Browser, live_server: str, make_key: Callable[[str], str], engine: Engine, settings: Settings
) -> None:
    page = browser.page
    key = make_key("acme")
    job_id = create_job(live_server, key, steps=100)
    with session_scope(engine) as session:
        assert lifecycle.claim_job(session, job_id=job_id, worker_id="w1", lease_s=300) is not None
    page.goto(f"{live_server}/#/jobs/{job_id}")
    page.fill("#key-prompt-input", key)
    page.click("#key-prompt button[type=submit]")
    page.wait_for_selector(".job-head .badge.status-running")
    page.wait_for_selector(".live:has-text('live')")
    assert "No sample grid yet" in page.inner_text(".pictures")

    _publish(engine, settings, job_id, 40, step=10)
    page.wait_for_function(SHOWN, arg=40)
    first_src = page.get_attribute("#samples-img", "src")
    _publish(engine, settings, job_id, 56, step=20)  # a later evaluation: a new version, a new size
    page.wait_for_function(SHOWN, arg=56)
    assert page.get_attribute("#samples-img", "src") != first_src
    assert page.locator("table.artifacts tbody tr").count() == 1  # replaced, not listed twice
    assert page.is_visible(".job-head .badge.status-running")  # all of it while the job runs
    assert page.locator("#event-log li.event-artifact").count() == 2
    assert "samples.png updated" in page.inner_text("#event-log")
    assert browser.errors == []
