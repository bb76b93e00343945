"""A job's output model as the next job's base model, over HTTP with a real server and worker.

ssgan from a user's own classifier uploaded as a `torch.export` program, then ssgan again from
that job's output model; adapt from an adapt job's output GAN.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from ganft.client import Client
from ganft.client_types import Job
from ganft.demo import accuracies, digits_split, program_accuracy, save_npz
from tests.e2e import flows
from tests.e2e.conftest import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SSGAN_HP = {"steps": 8, "batch_size": 32, "unlabeled_batch_size": 32, "eval_every": 8, "log_every": 4}


class UsersDigitsNet(nn.Module):
    """A platform's own classifier (no ganft architecture): N×64 digit features -> N×10 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Dropout(0.2), nn.Linear(48, 32), nn.Tanh())
        self.classify = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.trunk(x))


def users_program(train: dict[str, np.ndarray], path: Path) -> Path:
    """Train the user's net on the labeled digits and save it as a user would: torch.export, eval mode."""
    torch.manual_seed(0)
    net = UsersDigitsNet()
    labeled = train["y"] >= 0
    x, y = torch.from_numpy(train["x"][labeled]), torch.from_numpy(train["y"][labeled])
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    program = torch.export.export(
        net.eval(), (torch.zeros(2, 64),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )  # fmt: skip
    torch.export.save(program, str(path))
    return path


def check_program_output(api: Client, job: Job, test: dict[str, np.ndarray], workdir: Path) -> dict[str, Any]:
    """The succeeded job's output model is a program, described as stored and served as stored."""
    assert job.status == "succeeded", job.error
    assert job.output_model_id
    model = api.get_model(job.output_model_id)
    artifacts = {a.name: a for a in api.list_artifacts(job.id)}
    model_json = json.loads(api.download_artifact(job.id, "model.json", workdir / "model.json").read_text())
    # What is stored is a program folder (model.pt2 + a program model.json): so says the row.
    assert (model.kind, model.role, model.source_job_id) == ("program", "classifier", job.id)
    assert model.config == model_json and model_json["format"] == "program"
    assert model_json["class_names"] == [str(k) for k in range(10)]
    assert (model.sha256, model.size_bytes) == (artifacts["model.pt2"].sha256, artifacts["model.pt2"].size_bytes)
    assert api.list_models(limit=200).data.count(model) == 1

    # The model's main file is the program itself, loadable with nothing but torch.
    body = api.request("GET", f"/v1/models/{model.id}/weights").content
    assert hashlib.sha256(body).hexdigest() == model.sha256 and len(body) == model.size_bytes
    (workdir / "served.pt2").write_bytes(body)
    metrics = json.loads(api.download_artifact(job.id, "metrics.json", workdir / "metrics.json").read_text())
    reported, _ = accuracies(metrics)
    assert reported is not None
    accuracy = program_accuracy(workdir / "served.pt2", test["x"], test["y"])  # plain torch.export.load
    assert abs(accuracy - reported) <= 1.0 / len(test["y"]) + 1e-9, (accuracy, reported)

    # The weights keep the user's names, whichever generation of the chain: they load into their module.
    program = torch.export.load(str(workdir / "served.pt2"))
    net = UsersDigitsNet().eval()
    net.load_state_dict(program.state_dict)
    x = torch.from_numpy(test["x"])
    with torch.no_grad():
        torch.testing.assert_close(net(x), program.module()(x), rtol=1e-4, atol=1e-5)
    return {"model": model, "accuracy": accuracy}


def test_ssgan_from_a_users_program_and_from_its_output(stack: Stack, tmp_path: Path) -> None:
    train, test = digits_split(seed=1)
    save_npz(tmp_path / "train.npz", train)
    save_npz(tmp_path / "test.npz", test)
    with Client(stack.url, stack.key, timeout=60) as api:
        train_ds = api.upload_dataset(tmp_path / "train.npz")
        test_ds = api.upload_dataset(tmp_path / "test.npz")
        base = api.upload_model(
            {"class_names": [str(k) for k in range(10)]}, program=users_program(train, tmp_path / "users.pt2")
        )
        assert base.kind == "program"
        spec = {"method": "ssgan", "dataset_id": train_ds.id, "validation_dataset_id": test_ds.id, "seed": 1,
                "hyperparameters": SSGAN_HP}  # fmt: skip

        first, _ = flows.follow(api, api.create_job({**spec, "base_model_id": base.id})["id"])
        (tmp_path / "first").mkdir()
        out = check_program_output(api, first, test, tmp_path / "first")
        assert out["accuracy"] > 0.5  # the user's pretrained net, gently fine-tuned, is far above chance (0.1)

        second, _ = flows.follow(api, api.create_job({**spec, "base_model_id": out["model"].id, "seed": 2})["id"])
        (tmp_path / "second").mkdir()
        again = check_program_output(api, second, test, tmp_path / "second")
        assert again["model"].id != out["model"].id and again["accuracy"] > 0.5


def test_adapt_from_an_adapt_jobs_output(stack: Stack, tmp_path: Path) -> None:
    images = flows.digit_images(64)
    np.savez(tmp_path / "images.npz", x=images["x"], y=images["y"])
    hp = {"steps": 6, "batch_size": 16, "eval_every": 1000, "eval_samples": 16, "log_every": 3}
    with Client(stack.url, stack.key, timeout=60) as api:
        dataset = api.upload_dataset(tmp_path / "images.npz")
        spec = {"method": "adapt", "dataset_id": dataset.id, "seed": 3, "hyperparameters": hp}
        first, _ = flows.follow(api, api.create_job(spec)["id"])
        assert first["status"] == "succeeded", first["error"]
        gan = api.get_model(first["output_model_id"])
        assert (gan.kind, gan.role, gan.config["role"]) == ("weights", "gan", "generator")

        tuned = {**spec, "base_model_id": gan.id, "hyperparameters": {**hp, "freeze_d_blocks": 1}}
        second, events = flows.follow(api, api.create_job(tuned)["id"])
        assert second["status"] == "succeeded", second["error"]
        assert any("FreezeD" in str(e.data.get("message", "")) for e in events if e.type == "log")
        out = api.get_model(second["output_model_id"])
        assert (out.kind, out.role, out.source_job_id) == ("weights", "gan", second["id"])
        body = api.request("GET", f"/v1/models/{out.id}/weights").content
        assert hashlib.sha256(body).hexdigest() == out.sha256
        generator = torch.export.load(str(api.download_artifact(second["id"], "model.pt2", tmp_path / "g.pt2")))
        with torch.no_grad():
            made = generator.module()(torch.randn(3, int(out.config["arguments"]["z_dim"])))
        assert tuple(made.shape) == (3, 1, 8, 8)
