"""`ganft jobs create` + `jobs watch` + `artifacts download` on the real stack (uvicorn + Celery worker)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import httpx
import pytest

from ganft.demo import digits_split, save_npz
from tests.cli.helpers import Ganft
from tests.e2e.conftest import Stack
from tests.webhooks.receiver import Receiver

pytestmark = pytest.mark.e2e


def test_create_watch_download(stack: Stack, tmp_path: Path) -> None:
    """A 10-step ssgan job on digits: watch shows the bar and exits 0; the model downloads verified;
    the worker's sweeper delivers the job.succeeded webhook."""
    ganft = Ganft(stack.url, stack.key)
    hook = Receiver([204])
    server = hook.start()
    train, _ = digits_split(seed=1)
    save_npz(tmp_path / "train.npz", train)
    dataset = ganft.json("datasets", "upload", str(tmp_path / "train.npz"))["id"]
    job_id = ganft.ok(
        "jobs", "create", "--method", "ssgan", "--dataset", dataset, "--hp", "steps=10", "--hp", "batch_size=16",
        "--hp", "unlabeled_batch_size=16", "--hp", "eval_every=10", "--hp", "log_every=5", "--hp", "run_control=false",
        "--webhook-url", hook.url,
    ).strip()  # fmt: skip

    watched = ganft.run("jobs", "watch", job_id, timeout=300)
    assert watched.returncode == 0, watched.stderr + stack.logs()
    assert "10/10" in watched.stderr and "status: succeeded" in watched.stderr  # plain lines: stderr is a pipe
    assert "\r" not in watched.stderr
    summary = watched.stdout.splitlines()
    assert summary[0].startswith(f"{job_id} succeeded: ssgan, 10 steps") and summary[1].split()[0] == "accuracy"
    assert summary[-1] == f"download:     ganft artifacts download {job_id} model.pt2"

    artifacts = {a["name"]: a for a in ganft.json("artifacts", "list", job_id)}
    ganft.ok("artifacts", "download", job_id, "model.pt2", "--dir", str(tmp_path / "out"))
    downloaded = (tmp_path / "out" / "model.pt2").read_bytes()
    assert hashlib.sha256(downloaded).hexdigest() == artifacts["model.pt2"]["sha256"]

    deadline = time.monotonic() + 40  # the sweeper runs every 10 s
    while not hook.received and time.monotonic() < deadline:
        time.sleep(0.5)
    server.shutdown()
    assert hook.received, "no webhook within 40 s\n" + stack.logs()
    assert json.loads(hook.received[0].body)["type"] == "job.succeeded"
    deliveries = httpx.get(f"{stack.url}/v1/jobs/{job_id}/webhooks", headers={"Authorization": f"Bearer {stack.key}"})
    assert deliveries.json()["data"][0]["status"] == "delivered"
