"""The dashboard in a real browser: headless Chromium on a real uvicorn server and Postgres.

A job is created through the API and then moved through the database the way a worker
moves it (scripted_job.py) while the page watches: the list updates live, the job page
follows the event stream, draws the curves, shows the result table and the sample grid, and
downloads artifacts with the key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from ganft.settings import Settings
from ganft.store import open_store
from tests.e2e_browser.conftest import Browser
from tests.e2e_browser.scripted_job import ScriptedJob

CSV = b"f1,f2,label\n0.1,0.2,cat\n0.3,0.1,dog\n0.5,0.5,\n0.2,0.9,cat\n0.7,0.4,dog\n"
# Chromium logs every refused fetch as a console error; the 401 of the wrong key is expected.
EXPECTED_ERRORS = re.compile(r"status of 401")


def create_job(base: str, key: str, steps: int, priority: str = "normal") -> str:
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60) as api:
        upload = api.post("/v1/datasets", params={"name": "pets.csv", "format": "csv"}, content=CSV)
        assert upload.status_code == 201, upload.text
        job = api.post(
            "/v1/jobs",
            json={
                "method": "ssgan",
                "dataset_id": upload.json()["id"],
                "hyperparameters": {"steps": steps},
                "metadata": {"team": "vision"},
                "priority": priority,
            },
        )
        assert job.status_code == 201, job.text
        return str(job.json()["id"])


def test_dashboard_follows_a_job(
    browser: Browser,
    live_server: str,
    make_key: Callable[[str], str],
    engine: Engine,
    settings: Settings,
    tmp_path: Path,
) -> None:
    page = browser.page
    key = make_key("acme")
    job_id = create_job(live_server, key, steps=80, priority="high")
    worker = ScriptedJob(engine, open_store(settings.store_url), job_id, total=80, pause_at=40)

    # ---- the page asks for a key once; a wrong one is refused and asked for again
    page.goto(f"{live_server}/")
    page.fill("#key-prompt-input", "gft_not_a_real_key")
    page.click("#key-prompt button[type=submit]")
    page.wait_for_selector("#key-prompt .error-box")
    assert "refused" in page.inner_text("#key-prompt .error-box")
    page.fill("#key-input", key)  # the header field changes the key
    page.click("#key-form button[type=submit]")

    # ---- the list shows the job queued, then running with a moving progress bar (polled)
    row = f'tr[data-job-id="{job_id}"]'
    page.wait_for_selector(f'{row}[data-status="queued"]')
    assert page.inner_text(f"{row} td:nth-child(2)") == "ssgan"
    assert page.inner_text(f"{row} td:nth-child(3)") == "high"  # a priority other than normal shows as a badge
    worker.start()
    assert worker.paused.wait(30) and worker.error is None, worker.error
    page.wait_for_selector(f'{row}[data-status="running"]')
    page.wait_for_function(f"() => document.querySelector('{row} progress').value >= 0.5")
    assert "40 / 80" in page.inner_text(f"{row} .progress-cell")

    # ---- the job page while it runs: status, progress, curves, events over SSE
    page.click(f"{row} a")
    page.wait_for_url(f"**/#/jobs/{job_id}")
    page.wait_for_selector(".job-head .badge.status-running")
    assert page.eval_on_selector(".progress-block progress", "p => p.value") == pytest.approx(0.5)
    page.wait_for_selector("#charts svg path.series")
    page.wait_for_selector("#event-log li.event-progress")
    assert "head replaced" in page.inner_text("#event-log")
    assert page.is_visible("text=Latest reported values")
    assert page.inner_text("tr:has-text('Priority') td") == "high"

    # ---- it finishes: status, result table, sample grid, artifacts, the stream ends
    worker.resume()
    page.wait_for_selector(".job-head .badge.status-succeeded", timeout=30_000)
    worker.join(10)
    assert worker.error is None, worker.error
    page.wait_for_function(
        "() => { const i = document.querySelector('#samples-img'); return i && i.complete && i.naturalWidth > 0; }"
    )
    assert page.eval_on_selector("#samples-img", "i => [i.naturalWidth, i.naturalHeight]") == [274, 274]
    page.wait_for_selector("#event-log li.event-status:has-text('succeeded')")
    page.wait_for_selector(".live:has-text('ended')")
    assert page.inner_text(".progress-text").startswith("80 / 80")
    result = page.inner_text("#result-table")
    assert "0.9" in result and "0.82" in result and "+8.00 pt" in result  # the difference in points
    assert ("The GAN helped: +8.0 ± 5.0 accuracy points against the supervised control. Use model.pt2, the GAN's "
            "classifier.") in page.inner_text("#results")  # the verdict with its noise margin  # fmt: skip
    families = page.eval_on_selector_all("#charts figcaption", "cs => cs.map(c => c.textContent)")
    assert families[:2] == ["Losses", "Accuracy and F1"]
    assert page.locator("#charts svg path.series").count() >= 5  # 3 losses + accuracy, control_accuracy, macro_f1
    seqs = page.eval_on_selector_all("#event-log li", "ls => ls.map(l => Number(l.dataset.seq))")
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= 40  # every event once, in order

    # ---- downloads go through fetch with the key (a plain link could not send it)
    with page.expect_download() as download:
        page.click(".artifacts tr:has-text('metrics.json') button")
    assert json.loads(Path(download.value.path()).read_text()) == worker.result
    assert download.value.suggested_filename == "metrics.json"

    # ---- the whole page renders to a picture (the README's comes from a real job: scripts/dashboard_png.py),
    # and no console errors (a CSP violation would be one)
    page.evaluate("window.scrollTo(0, 0)")
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert [e for e in browser.errors if not EXPECTED_ERRORS.search(e)] == []

    # ---- the list filtered by status, from the job page's back link
    page.click(".job-head .back")
    page.select_option("#status-filter", "failed")
    page.wait_for_selector("text=No failed jobs.")
    page.select_option("#status-filter", "succeeded")
    page.wait_for_selector(f'{row}[data-status="succeeded"]')
