"""The adapt loop end to end on tiny data: artifacts, FreezeD, evaluation, abort/resume, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from sklearn.datasets import load_digits

from ganft_core.config import TrainSpec
from ganft_core.data.types import Dataset, Layout
from ganft_core.errors import Aborted, DatasetError, ModelError, NanLossError, SpecError
from ganft_core.models.io import load_model, meta_for, save_model
from ganft_core.models.registry import build
from ganft_core.run import list_checkpoints
from ganft_core.train import ProgressUpdate, train

LAYOUT = Layout("image", channels=1, height=8, width=8)
TINY = {
    "steps": 6,
    "batch_size": 8,
    "eval_every": 3,
    "eval_samples": 16,
    "log_every": 2,
    "checkpoint_every": 3,
    "r1_every": 2,
    "ada_interval": 2,
    "ada_speed_images": 200,
    "z_dim": 16,
    "deterministic": True,
}


def _digits(classes: range, n: int) -> Dataset:
    d = load_digits()
    keep = np.flatnonzero(np.isin(d.target, list(classes)))[:n]
    x = (d.images[keep] / 16.0).astype(np.float32)[:, None]
    return Dataset(x=x, y=d.target[keep], classes=[str(i) for i in range(10)], layout=LAYOUT)


def _spec(**hp: Any) -> TrainSpec:
    return TrainSpec.model_validate({"method": "adapt", "hyperparameters": {**TINY, **hp}, "seed": 3})


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[ProgressUpdate]]:
    """A GAN trained from scratch on digits 0-4: the base model of the other tests."""
    out = tmp_path_factory.mktemp("base")
    updates: list[ProgressUpdate] = []
    train(_spec(), _digits(range(5), 40), out, progress=updates.append, device="cpu")
    return out, updates


@pytest.fixture(scope="module")
def evaluator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An (untrained) digits classifier folder: enough to give FID/KID a feature space."""
    folder = tmp_path_factory.mktemp("evaluator")
    torch.manual_seed(0)
    net = build("convnet", {"in_channels": 1, "num_classes": 10, "widths": [8, 16], "norm": "none"})
    save_model(
        net.eval(), meta_for(net, class_names=[str(i) for i in range(10)], input_layout=LAYOUT.to_dict()), folder
    )
    return folder


def test_from_scratch_writes_every_artifact(base_run: tuple[Path, list[ProgressUpdate]]) -> None:
    out, updates = base_run
    for name in (
        "model.safetensors",
        "model.json",
        "model.pt2",
        "generator.safetensors",
        "generator.json",
        "discriminator.safetensors",
        "discriminator.json",
        "metrics.json",
        "samples.png",
        "curves.png",
        "samples-00000003.png",
        "samples-00000006.png",
        "spec.json",
        "metrics.jsonl",
    ):
        assert (out / name).is_file(), name
    meta = json.loads((out / "model.json").read_text())
    assert meta["role"] == "generator" and meta["architecture"] == "conv_g"
    assert json.loads((out / "discriminator.json").read_text())["role"] == "discriminator"
    metrics = json.loads((out / "metrics.json").read_text())
    # no evaluator: FID/KID are refused, and metrics.json says so
    assert metrics["fid"] is None and metrics["kid"] is None and metrics["evaluator"].startswith("none")
    assert [h["step"] for h in metrics["history"]] == [3, 6]
    kinds = {u.kind for u in updates}
    assert {"log", "step", "evaluation", "checkpoint", "artifact"} <= kinds
    assert [u.step for u in updates if u.kind == "step"] == [2, 4, 6]
    assert load_file(out / "model.safetensors").keys() == load_file(out / "generator.safetensors").keys()


def test_exported_program_reproduces_the_ema_generator(base_run: tuple[Path, list[ProgressUpdate]]) -> None:
    out, _ = base_run
    g, meta = load_model(out, "model")
    program = torch.export.load(str(out / "model.pt2")).module()
    z = torch.randn(5, meta.arguments["z_dim"], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = g.eval()(z)
        got = program(z)
    assert got.shape == (5, 1, 8, 8) and float(got.min()) >= 0 and float(got.max()) <= 1
    torch.testing.assert_close(got, want)
    # the checkpoint's EMA generator is what was exported
    ckpt = torch.load(list_checkpoints(out)[-1], weights_only=True)
    ema_state = ckpt["G_ema"]["module"]
    for key, value in load_file(out / "model.safetensors").items():
        assert torch.equal(value, ema_state[key]), key


def test_adapting_a_base_model_keeps_freezed_blocks_bit_identical(
    base_run: tuple[Path, list[ProgressUpdate]], evaluator: Path, tmp_path: Path
) -> None:
    base, _ = base_run
    updates: list[ProgressUpdate] = []
    result = train(
        _spec(freeze_d_blocks=1, ada=True),
        _digits(range(5, 10), 20),
        tmp_path,
        validation=_digits(range(5, 10), 40),
        base_model=base,
        evaluator=evaluator,
        progress=updates.append,
        device="cpu",
    )
    before, after = load_file(base / "discriminator.safetensors"), load_file(tmp_path / "discriminator.safetensors")
    frozen = [k for k in before if k.startswith("stages.0.")]
    assert frozen
    for key in frozen:
        assert torch.equal(before[key], after[key]), key
    assert any(not torch.equal(before[k], after[k]) for k in before if not k.startswith("stages.0."))
    assert not torch.equal(
        load_file(base / "model.safetensors")["fc.0.weight"], load_file(tmp_path / "model.safetensors")["fc.0.weight"]
    )
    assert isinstance(result.metrics["fid"], float) and result.metrics["fid"] >= 0
    assert isinstance(result.metrics["kid"], float)
    assert result.metrics["fid_reference"] == "validation set"
    assert "classifier convnet" in result.metrics["evaluator"]
    evals = [u for u in updates if u.kind == "evaluation"]
    assert [u.step for u in evals] == [3, 6] and {"fid", "kid", "augment_p"} <= set(evals[-1].metrics)
    assert any("FreezeD" in (u.message or "") for u in updates)


def test_abort_then_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    data = _digits(range(5), 30)
    train(_spec(), data, tmp_path / "straight", device="cpu")

    polls = 0

    def abort_at_step_4() -> bool:
        nonlocal polls
        polls += 1
        return polls == 5  # polled once before each step: the 5th poll is before step index 4

    with pytest.raises(Aborted):
        train(_spec(), data, tmp_path / "resumed", should_abort=abort_at_step_4, device="cpu")
    assert [p.name for p in list_checkpoints(tmp_path / "resumed")] == ["ckpt-00000003.pt", "ckpt-00000004.pt"]
    assert not (tmp_path / "resumed" / "model.safetensors").exists()
    result = train(_spec(), data, tmp_path / "resumed", device="cpu")
    for stem in ("model", "discriminator"):
        a = load_file(tmp_path / "straight" / f"{stem}.safetensors")
        b = load_file(tmp_path / "resumed" / f"{stem}.safetensors")
        for key in a:
            assert torch.equal(a[key], b[key]), (stem, key)
    assert result.metrics["augment_p"] == json.loads((tmp_path / "straight" / "metrics.json").read_text())["augment_p"]
    # a finished run called again only rewrites its artifacts
    again = train(_spec(), data, tmp_path / "resumed", device="cpu")
    assert again.metrics["history"] == result.metrics["history"]


def test_nan_loss_keeps_the_last_good_checkpoint(base_run: tuple[Path, list[ProgressUpdate]], tmp_path: Path) -> None:
    base, _ = base_run
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("generator.json", "generator.safetensors", "discriminator.json"):
        (broken / name).write_bytes((base / name).read_bytes())
    state = load_file(base / "discriminator.safetensors")
    state["out.weight"] = torch.full_like(state["out.weight"], 3e38)  # finite, but D's logits overflow
    save_file(state, str(broken / "discriminator.safetensors"))
    with pytest.raises(NanLossError, match="last good checkpoint"):
        train(_spec(), _digits(range(5, 10), 20), tmp_path / "run", base_model=broken, device="cpu")
    assert list_checkpoints(tmp_path / "run") == []


def test_user_errors_are_typed(base_run: tuple[Path, list[ProgressUpdate]], tmp_path: Path) -> None:
    base, _ = base_run
    features = Dataset(
        x=np.zeros((4, 3), np.float32), y=np.zeros(4, np.int64), classes=["a"], layout=Layout("features", features=3)
    )
    with pytest.raises(DatasetError):
        train(_spec(), features, tmp_path / "a", device="cpu")
    with pytest.raises(SpecError, match="freeze_d_blocks"):
        train(_spec(freeze_d_blocks=3), _digits(range(5), 20), tmp_path / "b", base_model=base, device="cpu")
    small = Dataset(  # smaller than the base G's images (larger ones are fitted: test_data_training.py)
        x=np.zeros((4, 1, 6, 6), np.float32),
        y=np.zeros(4, np.int64),
        classes=["a"],
        layout=Layout("image", channels=1, height=6, width=6),
    )
    with pytest.raises(ModelError, match="generator makes 1×8×8 images"):
        train(_spec(), small, tmp_path / "c", base_model=base, device="cpu")
    with pytest.raises(SpecError, match="z_dim"):
        train(_spec(z_dim=32), _digits(range(5), 20), tmp_path / "d", base_model=base, device="cpu")
