"""Training from the stored form: adapt on a memory-mapped dataset is bit-identical to the in-memory run
(on-device and streamed paths alike), resumes from it, and FID/KID statistics stream in batches."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ganft_core.config import TrainSpec
from ganft_core.data import load_dataset
from ganft_core.data.feed import ENV_MAX_DEVICE_BYTES, Feed
from ganft_core.errors import Aborted, ModelError
from ganft_core.fid import Evaluator, FeatureStats
from ganft_core.models.io import meta_for, save_model
from ganft_core.models.registry import build
from ganft_core.train import train

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {
    "steps": 4, "batch_size": 8, "eval_every": 2, "eval_samples": 16, "log_every": 2, "checkpoint_every": 2,
    "r1_every": 2, "ada_interval": 2, "ada_speed_images": 200, "z_dim": 16, "deterministic": True,
}  # fmt: skip


def _spec() -> TrainSpec:
    return TrainSpec.model_validate({"method": "adapt", "hyperparameters": TINY, "seed": 5})


@pytest.fixture
def images_npz(make_npz: Any) -> Path:
    rng = np.random.RandomState(0)
    return make_npz(x=rng.randint(0, 256, size=(40, 8, 8, 1)).astype(np.uint8), y=np.zeros(40, dtype=np.int64))  # type: ignore[no-any-return]


@pytest.fixture
def evaluator(tmp_path: Path) -> Path:
    folder = tmp_path / "evaluator"
    torch.manual_seed(0)
    net = build("convnet", {"in_channels": 1, "num_classes": 2, "widths": [8, 16], "norm": "none"})
    layout = {"kind": "image", "channels": 1, "height": 8, "width": 8}
    save_model(net.eval(), meta_for(net, class_names=["a", "b"], input_layout=layout), folder)
    return folder


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return {f"{stem}.{k}": v for stem in ("model", "discriminator")
            for k, v in load_file(folder / f"{stem}.safetensors").items()}  # fmt: skip


def _same_run(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    ha = json.loads((a / "metrics.json").read_text())["history"]
    hb = json.loads((b / "metrics.json").read_text())["history"]
    assert ha == hb


@pytest.mark.parametrize("streamed", [False, True], ids=["on device", "streamed"])
def test_adapt_on_the_stored_form_is_bit_identical_to_the_in_memory_run(
    images_npz: Path, evaluator: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, streamed: bool
) -> None:
    in_memory = load_dataset(images_npz)
    train(_spec(), in_memory, tmp_path / "memory", evaluator=evaluator, device="cpu")
    if streamed:
        monkeypatch.setenv(ENV_MAX_DEVICE_BYTES, "0")  # every batch gathered from the memory map
    stored = load_dataset(images_npz, stored=tmp_path / "stored")
    assert stored.is_mapped
    train(_spec(), stored, tmp_path / "mapped", evaluator=evaluator, device="cpu")
    assert stored.is_mapped and stored._x is None  # never built the float32 copy
    _same_run(tmp_path / "memory", tmp_path / "mapped")
    path = json.loads((tmp_path / "mapped" / "spec.json").read_text())["data_path"]
    assert path["on_device"] is (not streamed) and path["storage"]["stored_bytes"] > 40 * 64


def test_adapt_resumes_from_the_stored_form(images_npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_MAX_DEVICE_BYTES, "0")  # the prefetched batch must survive the checkpoint
    stored = load_dataset(images_npz, stored=tmp_path / "stored")
    train(_spec(), stored, tmp_path / "straight", device="cpu")
    polls = 0

    def abort_before_step_3() -> bool:
        nonlocal polls
        polls += 1
        return polls == 4

    with pytest.raises(Aborted):
        train(_spec(), stored, tmp_path / "resumed", should_abort=abort_before_step_3, device="cpu")
    again = load_dataset(images_npz, stored=tmp_path / "stored")  # a new attempt opens the stored form anew
    train(_spec(), again, tmp_path / "resumed", device="cpu")
    _same_run(tmp_path / "straight", tmp_path / "resumed")


def test_streamed_feature_stats_match_the_whole_set() -> None:
    """Past `keep` images, FID's mean and covariance from running sums equal torch.cov of all features."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 6))
    ev = Evaluator(net, "linear", batch_size=7)
    x = np.random.RandomState(2).randint(0, 256, size=(50, 3, 4, 4)).astype(np.uint8)
    whole = FeatureStats.of(ev.features(torch.from_numpy(x).float() / 255))
    exact = FeatureStats.of_batches(ev, Feed(x, "cpu", max_device_bytes=0))
    assert torch.equal(exact.mu, whole.mu) and torch.equal(exact.sigma, whole.sigma)
    summed = FeatureStats.of_batches(ev, Feed(x, "cpu", max_device_bytes=0), keep=20)
    assert torch.allclose(summed.mu, whole.mu, rtol=0, atol=1e-12)
    assert torch.allclose(summed.sigma, whole.sigma, rtol=1e-10, atol=1e-12)
    assert summed.features.shape == (20, 6)
    rows = [int(torch.nonzero((whole.features == f).all(1))[0]) for f in summed.features]
    assert rows == sorted(rows) and len(set(rows)) == 20  # a sample of distinct images, in order


# ------------------------------------------------------------------ images larger than the networks


def test_fit_images_resizes_or_crops_each_batch() -> None:
    from ganft_core.adapt import fit_images
    from ganft_core.data.types import Layout

    data, image = Layout("image", channels=2, height=12, width=10), Layout("image", channels=2, height=8, width=6)
    x = torch.rand(5, 2, 12, 10)
    train_fit, eval_fit, note = fit_images("resize", data, image)
    expected = torch.nn.functional.interpolate(x, size=(8, 6), mode="bilinear", align_corners=False, antialias=True)
    assert torch.equal(train_fit(x), expected) and torch.equal(eval_fit(x), expected)
    assert note is not None and "resized" in note and "10×12 images, 6×8 networks" in note
    train_fit, eval_fit, note = fit_images("random_crop", data, image)
    crops = train_fit(x)
    assert crops.shape == (5, 2, 8, 6) and note is not None and "random crops" in note
    for img, crop in zip(x, crops, strict=True):
        windows = [img[:, t : t + 8, s : s + 6] for t in range(5) for s in range(5)]
        assert any(torch.equal(crop, w) for w in windows)  # a real window of its own image, all channels alike
    assert torch.equal(eval_fit(x), x[:, :, 2:10, 2:8])
    same, _, none = fit_images("resize", data, data)
    assert same(x) is x and none is None


@pytest.mark.parametrize("policy", ["resize", "random_crop"])
def test_adapt_fits_larger_images_to_a_base_model(make_npz: Any, tmp_path: Path, policy: str) -> None:
    rng = np.random.RandomState(1)
    small = make_npz(name="small.npz", x=rng.randint(0, 256, size=(20, 1, 8, 8)).astype(np.uint8))
    big = make_npz(name="big.npz", x=rng.randint(0, 256, size=(20, 1, 16, 16)).astype(np.uint8))
    hp = {**TINY, "steps": 2, "eval_every": 2, "checkpoint_every": 2, "log_every": 1}
    spec = TrainSpec.model_validate({"method": "adapt", "hyperparameters": hp, "seed": 1})
    train(spec, load_dataset(small, stored=tmp_path / "s"), tmp_path / "base", device="cpu")
    notes: list[str] = []
    hp_big = {**hp, "large_images": policy}
    spec_big = TrainSpec.model_validate({"method": "adapt", "hyperparameters": hp_big, "seed": 1})
    train(spec_big, load_dataset(big, stored=tmp_path / "b"), tmp_path / "run", base_model=tmp_path / "base",
          device="cpu", progress=lambda u: notes.append(u.message or ""))  # fmt: skip
    assert any("large images: 16×16 images, 8×8 networks" in n for n in notes)
    layout = json.loads((tmp_path / "run" / "model.json").read_text())["input_layout"]
    assert (layout["height"], layout["width"]) == (8, 8)
    rgb = make_npz(name="rgb.npz", x=rng.randint(0, 256, size=(20, 16, 16, 3)).astype(np.uint8))
    with pytest.raises(ModelError, match="channels"):
        train(spec_big, load_dataset(rgb), tmp_path / "rgb", base_model=tmp_path / "base", device="cpu")
