"""The dashboard watching a real job: uvicorn and a Celery worker as processes (tests/e2e's `stack` fixture),
a tiny ssgan run on scikit-learn's bundled 8×8 digits, followed in headless Chromium to the end."""

from __future__ import annotations

import io
import re

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_digits

from tests.e2e.conftest import Stack
from tests.e2e_browser.conftest import Browser

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STEPS = 12


def npz(x: np.ndarray, y: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y, classes=np.array([str(k) for k in range(10)]))
    return buffer.getvalue()


def start_job(stack: Stack) -> str:
    """Upload 8×8 digit images (5 labels per class, the rest unlabeled) and a validation set; start ssgan."""
    digits = load_digits()
    x, y = (digits.images / 16.0).astype(np.float32), digits.target
    labels = np.full(600, -1)
    for k in range(10):
        keep = np.flatnonzero(y[:600] == k)[:5]
        labels[keep] = k
    with httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {stack.key}"}, timeout=60) as api:
        train = api.post("/v1/datasets", params={"name": "digits.npz", "format": "npz"}, content=npz(x[:600], labels))
        val = api.post("/v1/datasets", params={"name": "val.npz", "format": "npz"}, content=npz(x[600:800], y[600:800]))
        assert train.status_code == 201 and val.status_code == 201, (train.text, val.text)
        hp = {"steps": STEPS, "batch_size": 16, "unlabeled_batch_size": 16, "eval_every": STEPS // 2, "log_every": 3}
        job = api.post(
            "/v1/jobs",
            json={
                "method": "ssgan",
                "dataset_id": train.json()["id"],
                "validation_dataset_id": val.json()["id"],
                "seed": 1,
                "hyperparameters": hp,
            },
        )
        assert job.status_code == 201, job.text
        return str(job.json()["id"])


def test_dashboard_follows_a_real_worker(browser: Browser, stack: Stack) -> None:
    page = browser.page
    job_id = start_job(stack)
    page.goto(f"{stack.url}/#/jobs/{job_id}")
    page.fill("#key-prompt-input", stack.key)
    page.click("#key-prompt button[type=submit]")
    page.wait_for_selector(".job-head h1")
    assert page.inner_text(".job-head h1") == job_id

    page.wait_for_selector(".job-head .badge.status-succeeded, .job-head .badge.status-failed", timeout=150_000)
    assert page.is_visible(".job-head .badge.status-succeeded"), page.inner_text(".error-box") + stack.logs()
    for image in ("#samples-img", "#curves-img"):  # the trainer's sample grid and curves, fetched with the key
        page.wait_for_function(
            f"() => {{ const i = document.querySelector('{image}'); return i && i.complete && i.naturalWidth > 0; }}"
        )
    page.wait_for_selector(".live:has-text('ended')")
    assert page.inner_text(".progress-text").startswith(f"{STEPS} / {STEPS}")
    result = page.inner_text("#result-table")
    assert "Accuracy" in result and "Macro F1" in result
    assert page.locator("td.delta").count() == 4  # ssgan against its supervised control
    assert re.search(
        r"(The GAN helped|The GAN hurt|No difference within noise): [+−]?\d+\.\d ± \d+\.\d accuracy "
        r"points against the supervised control\. Use (model|control)\.pt2",
        page.inner_text("#results"),
    )
    curves_card = page.eval_on_selector("#curves-img", "i => i.closest('section').querySelector('h2').textContent")
    assert curves_card == "Training curves"  # curves.png in a card of its own, at up to its own width
    assert page.eval_on_selector("#curves-img", "i => i.naturalWidth") == 1000  # two 500 px panels
    assert page.locator("#charts svg path.series").count() >= 4  # losses, accuracy, control accuracy ...
    statuses = page.eval_on_selector_all(
        "#event-log li.event-status .text", "ls => ls.map(l => l.textContent.split(' ')[1])"
    )
    assert statuses[:2] == ["queued", "running"] and statuses[-1] == "succeeded"
    artifacts = page.inner_text(".artifacts")
    assert "model.pt2" in artifacts and "samples.png" in artifacts
    assert browser.errors == []
