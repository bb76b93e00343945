"""`ganft jobs pause|resume|checkpoints` and the SDK's pause/resume/checkpoint calls, against a real uvicorn
server (no worker: the worker's side of a checkpoint is recorded as a worker records it)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, update

from ganft.client import ApiError, Client
from ganft.db.session import session_scope
from ganft.db.tables import Job
from ganft.repo import lifecycle
from ganft.settings import Settings
from ganft.store import open_store
from tests.cli.helpers import Ganft
from tests.sdk.test_client import tiny_npz


@pytest.fixture
def ganft(live_server: str, api_key: str) -> Ganft:
    return Ganft(live_server, api_key)


def _set(engine: Engine, job_id: str, **values: object) -> None:
    with session_scope(engine) as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))


def _checkpoint(engine: Engine, settings: Settings, job_id: str, step: int, data: bytes) -> None:
    key = f"jobs/{job_id}/checkpoints/ckpt-{step:08d}.pt"
    size, sha = open_store(settings.store_url).put_bytes(key, data)
    with session_scope(engine) as session:
        assert (
            lifecycle.record_checkpoint(
                session, job_id=job_id, worker_id="w1", key=key, step=step, size_bytes=size, sha256=sha
            )
            == []
        )


def test_pause_resume_and_checkpoints_commands(
    ganft: Ganft, engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    dataset = ganft.json("datasets", "upload", str(tiny_npz(tmp_path / "d.npz")))["id"]
    job_id = ganft.ok("jobs", "create", "--method", "ssgan", "--dataset", dataset).strip()
    assert ganft.json("jobs", "pause", job_id)["status"] == "paused"
    assert "paused" in ganft.ok("jobs", "pause", job_id)  # idempotent; a table line by default
    assert ganft.json("jobs", "resume", job_id)["status"] == "queued"
    assert ganft.json("jobs", "resume", job_id)["status"] == "queued"

    _set(engine, job_id, status="running", worker_id="w1", attempt=1)
    data = np.random.default_rng(1).bytes(30_000)
    _checkpoint(engine, settings, job_id, 40, data)
    (listed,) = ganft.json("jobs", "checkpoints", job_id)
    assert (listed["step"], listed["size_bytes"], listed["sha256"]) == (40, 30_000, hashlib.sha256(data).hexdigest())
    assert "40" in ganft.ok("jobs", "checkpoints", job_id)
    ganft.ok("jobs", "checkpoints", job_id, "--download", "40", "-o", str(tmp_path / "c.pt"))
    assert (tmp_path / "c.pt").read_bytes() == data
    missing = ganft.run("jobs", "checkpoints", job_id, "--download", "41", "-o", str(tmp_path / "x.pt"))
    assert missing.returncode != 0 and "checkpoint '41' not found" in missing.stderr
    fork_id = ganft.ok("jobs", "fork", job_id, "--step", "40", "--hp", "steps=500", "--hp", "lr_d=1e-4").strip()
    fork = ganft.json("jobs", "show", fork_id)
    assert fork["forked_from"] == {"job_id": job_id, "step": 40}
    assert (fork["hyperparameters"]["steps"], fork["hyperparameters"]["lr_d"]) == (500, 1e-4)
    bad = ganft.run("jobs", "fork", job_id, "--step", "40", "--hp", "z_dim=3")
    assert bad.returncode != 0 and "hyperparameters.z_dim" in bad.stderr
    export = ganft.json("jobs", "export", job_id, "--step", "40")
    assert (export["hyperparameters"]["steps"], export["forked_from"]["step"]) == (40, 40)
    assert ganft.json("jobs", "pause", job_id)["status"] == "pausing"

    _set(engine, job_id, status="succeeded")
    refused = ganft.run("jobs", "pause", job_id)
    assert refused.returncode != 0 and "succeeded" in refused.stderr and "cannot be paused" in refused.stderr


def test_sdk_pause_resume_and_checkpoints(
    live_server: str, api_key: str, engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    with Client(live_server, api_key) as api:
        dataset = api.upload_dataset(tiny_npz(tmp_path / "d.npz"))
        job = api.create_job({"method": "ssgan", "dataset_id": dataset.id})
        assert api.pause_job(job.id).status == "paused"
        assert not api.get_job(job.id).terminal
        assert api.resume_job(job.id).status == "queued"
        _set(engine, job.id, status="running", worker_id="w1", attempt=1)
        _checkpoint(engine, settings, job.id, 7, b"state")
        (checkpoint,) = api.list_checkpoints(job.id)
        assert (checkpoint.step, checkpoint.sha256, checkpoint.best) == (7, hashlib.sha256(b"state").hexdigest(), False)
        assert api.download_checkpoint(job.id, 7, tmp_path / "c.pt").read_bytes() == b"state"
        assert api.pause_job(job.id).status == "pausing"
        with pytest.raises(ApiError) as caught:
            api.resume_job(job.id)
        assert caught.value.status == 409 and "pausing" in str(caught.value)
