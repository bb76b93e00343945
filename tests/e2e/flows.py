"""What a user does over HTTP, shared by the end-to-end tests of both stacks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch
from PIL import Image

from ganft.client import Client, Event
from ganft.client_types import Job
from ganft.demo import accuracies, digits_split, program_accuracy, save_npz

TERMINAL = {"succeeded", "failed", "cancelled"}


def follow(api: Client, job_id: str) -> tuple[Job, list[Event]]:
    """Follow the job's event stream to its end; check the stream's order; return (job, events)."""
    events = list(api.events(job_id))
    seqs = [e.seq for e in events]
    assert seqs == sorted(set(seqs)) and seqs[0] == 1, f"events out of order or repeated: {seqs}"
    assert events[-1].terminal, f"the stream ended before the job did: {events[-1]}"
    statuses = [e.data["status"] for e in events if e.type == "status"]
    assert statuses[:2] == ["queued", "running"] and statuses[-1] in TERMINAL, statuses
    job = api.get_job(job_id)
    assert job.status == statuses[-1]
    return job, events


def ssgan_digits(api: Client, workdir: Path, *, steps: int = 20) -> None:
    """Upload the digits split, run a short ssgan job, and check the downloaded model.pt2 against metrics.json."""
    train, test = digits_split(seed=1)
    save_npz(workdir / "train.npz", train)
    save_npz(workdir / "test.npz", test)
    train_ds = api.upload_dataset(workdir / "train.npz")
    test_ds = api.upload_dataset(workdir / "test.npz")
    assert train_ds["stats"]["labeled"] == 100 and test_ds["stats"]["examples"] == len(test["y"])
    hp = {"steps": steps, "batch_size": 32, "unlabeled_batch_size": 32, "eval_every": steps // 2, "log_every": 5}
    job = api.create_job(
        {"method": "ssgan", "dataset_id": train_ds["id"], "validation_dataset_id": test_ds["id"], "seed": 1,
         "hyperparameters": hp}
    )  # fmt: skip
    job, events = follow(api, job.id)
    assert job.status == "succeeded", job.error
    progress = [e.data["step"] for e in events if e.type == "progress"]
    assert progress and progress == sorted(progress) and progress[-1] == steps
    assert [e.data["step"] for e in events if e.type == "evaluation"] == [steps // 2, steps]
    assert job.progress.fraction == 1.0 and job.output_model_id

    names = {a.name for a in api.list_artifacts(job.id)}
    assert {"model.pt2", "model.safetensors", "model.json", "metrics.json", "control.safetensors"} <= names
    model = api.download_artifact(job.id, "model.pt2", workdir / "model.pt2")
    metrics = json.loads(api.download_artifact(job.id, "metrics.json", workdir / "metrics.json").read_text())
    reported, control = accuracies(metrics)
    accuracy = program_accuracy(model, test["x"], test["y"])  # plain torch.export.load(...).module()
    assert reported is not None and control is not None
    assert abs(accuracy - reported) <= 1.0 / len(test["y"]) + 1e-9, (accuracy, reported)
    assert job.result is not None and job.result["ssgan"]["accuracy"] == reported
    assert accuracy > 0.5  # 20 steps already learn digits far above chance (0.1)


class DigitImages(TypedDict):
    """The arrays of an unlabeled images .npz: `np.savez(path, **digit_images())`."""

    x: np.ndarray  # (n, 8, 8) float32 in [0, 1]
    y: np.ndarray  # (n,) all -1: unlabeled


def digit_images(n: int = 96) -> DigitImages:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return {"x": (digits.images[:n] / 16.0).astype(np.float32), "y": np.full(n, -1)}


def adapt_digits(api: Client, workdir: Path, *, steps: int = 16) -> None:
    """Train a tiny GAN on 8×8 digit images; check samples.png and the exported generator."""
    images = digit_images()
    np.savez(workdir / "images.npz", x=images["x"], y=images["y"])
    dataset = api.upload_dataset(workdir / "images.npz")
    hp = {"steps": steps, "batch_size": 16, "eval_every": 8, "eval_samples": 16, "log_every": 4}
    job = api.create_job({"method": "adapt", "dataset_id": dataset["id"], "seed": 3, "hyperparameters": hp})
    job, events = follow(api, job.id)
    assert job.status == "succeeded", job.error
    assert [e.data["step"] for e in events if e.type == "evaluation"] == [8, 16]

    samples = api.download_artifact(job.id, "samples.png", workdir / "samples.png")
    with Image.open(samples) as grid:
        assert grid.format == "PNG" and grid.width >= 8 * 8 and grid.height >= 8 * 8
    generator = torch.export.load(str(api.download_artifact(job.id, "model.pt2", workdir / "g.pt2"))).module()
    config = json.loads(api.download_artifact(job.id, "model.json", workdir / "model.json").read_text())
    z_dim = int(config["arguments"]["z_dim"])
    with torch.no_grad():
        fakes = generator(torch.randn(4, z_dim))
    assert tuple(fakes.shape) == (4, 1, 8, 8)
    assert float(fakes.min()) >= 0.0 and float(fakes.max()) <= 1.0
