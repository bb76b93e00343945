"""The `ganft` user commands, run as subprocesses against a real uvicorn server (no worker)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine

from ganft.settings import Settings
from tests.cli.helpers import Ganft
from tests.sdk.test_client import put_artifact, tiny_npz


@pytest.fixture
def ganft(live_server: str, api_key: str) -> Ganft:
    return Ganft(live_server, api_key)


def test_datasets_commands(ganft: Ganft, tmp_path: Path) -> None:
    dataset = ganft.json("datasets", "upload", str(tiny_npz(tmp_path / "digits.npz")), "--name", "tiny")
    assert dataset["name"] == "tiny" and dataset["stats"]["examples"] == 12
    listing = ganft.ok("datasets", "list")
    header, row = listing.splitlines()
    assert header.split() == ["ID", "NAME", "FORMAT", "SIZE_BYTES", "CREATED_AT"] and row.startswith(dataset["id"])
    assert "examples" in ganft.ok("datasets", "show", dataset["id"])
    assert ganft.json("datasets", "delete", dataset["id"]) == {"id": dataset["id"], "deleted": True}
    missing = ganft.run("datasets", "show", dataset["id"])
    assert missing.returncode == 1 and "HTTP 404" in missing.stderr


def test_jobs_commands(ganft: Ganft, tmp_path: Path) -> None:
    """create (flags and --spec), list, show, cancel, logs, and watch's exit status for a cancelled job."""
    dataset = ganft.json("datasets", "upload", str(tiny_npz(tmp_path / "d.npz")))["id"]
    created = ganft.run(
        "jobs", "create", "--method", "ssgan", "--dataset", dataset, "--hp", "steps=7", "--hp", "lr_d=0.001",
        "--seed", "3", "--metadata", "team=vision", "--webhook-url", "https://example.com/hook",
    )  # fmt: skip
    job_id = created.stdout.strip()  # only the id on stdout, for JOB=$(ganft jobs create ...)
    assert created.returncode == 0 and job_id.startswith("job_")
    assert created.stderr.splitlines() == [f"created ssgan job {job_id} (queued)",
                                           f"follow it: ganft jobs watch {job_id}"]  # fmt: skip
    job = ganft.json("jobs", "show", job_id)
    assert job["hyperparameters"]["steps"] == 7 and job["hyperparameters"]["lr_d"] == 0.001 and job["seed"] == 3
    assert job["metadata"] == {"team": "vision"} and job["webhook_url"] == "https://example.com/hook"

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"method": "ssgan", "dataset_id": dataset, "hyperparameters": {"steps": 9}}))
    other = ganft.json("jobs", "create", "--spec", str(spec), "--hp", "steps=11")
    assert other["hyperparameters"]["steps"] == 11  # flags override the file

    assert [j["id"] for j in ganft.json("jobs", "list")] == [other["id"], job_id]
    assert "queued" in ganft.ok("jobs", "list", "--status", "queued")
    assert ganft.json("jobs", "cancel", job_id)["status"] == "cancelled"
    logs = ganft.ok("jobs", "logs", job_id).splitlines()
    assert [line.split(None, 1)[1] for line in logs] == ["status queued", "status cancelled"]
    watched = ganft.run("jobs", "watch", job_id)
    assert watched.returncode == 4 and "cancelled" in watched.stderr


def test_errors_are_clear(ganft: Ganft, tmp_path: Path) -> None:
    dataset = ganft.json("datasets", "upload", str(tiny_npz(tmp_path / "d.npz")))["id"]
    bad = ganft.run("jobs", "create", "--method", "ssgan", "--dataset", dataset, "--hp", "steps=-3")
    assert bad.returncode == 1 and "HTTP 422" in bad.stderr and "hyperparameters.steps" in bad.stderr
    assert "Traceback" not in bad.stderr
    bad_url = ganft.run("jobs", "create", "--method", "ssgan", "--dataset", dataset, "--webhook-url", "ftp://x")
    assert bad_url.returncode == 1 and "webhook_url" in bad_url.stderr
    no_key = Ganft(ganft.url, "").run("jobs", "list")
    assert no_key.returncode == 2 and "GANFT_API_KEY" in no_key.stderr


def test_artifacts_commands(ganft: Ganft, engine: Engine, settings: Settings, tmp_path: Path) -> None:
    dataset = ganft.json("datasets", "upload", str(tiny_npz(tmp_path / "d.npz")))["id"]
    job_id = ganft.ok("jobs", "create", "--method", "ssgan", "--dataset", dataset).strip()
    data = np.random.default_rng(2).bytes(50_000)
    put_artifact(engine, settings, job_id, data)
    (artifact,) = ganft.json("artifacts", "list", job_id)
    assert artifact == {"name": "blob.bin", "size_bytes": 50_000, "sha256": hashlib.sha256(data).hexdigest(),
                        "content_type": "application/octet-stream"}  # fmt: skip
    ganft.ok("artifacts", "download", job_id, "blob.bin", "-o", str(tmp_path / "out.bin"))
    assert (tmp_path / "out.bin").read_bytes() == data
    ganft.ok("artifacts", "download", job_id, "--all", "--dir", str(tmp_path / "all"))
    assert (tmp_path / "all" / "blob.bin").read_bytes() == data


def test_models_commands(ganft: Ganft, tmp_path: Path) -> None:
    from tests.api.conftest import safetensors_bytes

    (tmp_path / "clf.safetensors").write_bytes(safetensors_bytes())
    (tmp_path / "cfg.json").write_text(json.dumps({
        "architecture": "mlp", "arguments": {"in_features": 3, "num_classes": 2}, "class_names": ["a", "b"],
        "input_layout": {"kind": "features", "features": 3},
    }))  # fmt: skip
    model = ganft.json("models", "upload", "--config", str(tmp_path / "cfg.json"),
                       "--weights", str(tmp_path / "clf.safetensors"), "--name", "clf")  # fmt: skip
    assert model["name"] == "clf" and model["role"] == "classifier"
    assert ganft.json("models", "show", model["id"]) == model
    assert model["id"] in ganft.ok("models", "list")
