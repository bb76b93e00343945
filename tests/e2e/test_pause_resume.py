"""Pause and resume over HTTP with a real API server and worker: the resume's broker message reaches the
worker, which continues from the pause's checkpoint; a paused job's event stream stays open and reports it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ganft.client import Client
from ganft.client_types import Job
from tests.e2e.conftest import Stack
from tests.worker.helpers import features_npz, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HP = {"steps": 100_000, "batch_size": 16, "unlabeled_batch_size": 16, "eval_every": 1000, "checkpoint_every": 50,
      "log_every": 10, "run_control": False}  # fmt: skip


def test_pause_then_resume_over_http(stack: Stack, tmp_path: Path) -> None:
    (tmp_path / "train.npz").write_bytes(features_npz())
    with Client(stack.url, stack.key) as api:
        dataset = api.upload_dataset(tmp_path / "train.npz")
        job = api.create_job({"method": "ssgan", "dataset_id": dataset.id, "hyperparameters": HP})
        wait_for(lambda: api.list_checkpoints(job.id), timeout=120, what="a checkpoint", logs=stack.logs)
        assert api.pause_job(job.id).status in ("pausing", "paused")

        def paused_job() -> Job | None:
            found = api.get_job(job.id)
            return found if found.status == "paused" else None

        paused = wait_for(paused_job, timeout=60, what="the pause", logs=stack.logs)
        paused_at = paused.progress.step
        assert paused_at > 0 and paused.attempt == 0
        assert paused_at in [c.step for c in api.list_checkpoints(job.id)]  # the stopping checkpoint is kept
        statuses = [e.data["status"] for e in api.list_events(job.id) if e.type == "status"]
        assert statuses == ["queued", "running", "pausing", "paused"]

        assert api.resume_job(job.id).status == "queued"
        wait_for(lambda: api.get_job(job.id).progress.step > paused_at, timeout=120, what="the resume", logs=stack.logs)
        events = api.list_events(job.id)
        resumed = [e.seq for e in events if e.type == "status" and e.data["status"] == "running"][-1]
        assert min(e.data["step"] for e in events if e.type == "progress" and e.seq > resumed) >= paused_at
        assert api.cancel_job(job.id).status == "cancelling"
        assert api.wait(job.id, timeout=60, poll_s=0.5).status == "cancelled"
