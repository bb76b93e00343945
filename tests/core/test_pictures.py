"""Live pictures: every evaluation rewrites samples.png (G on fixed latents) and curves.png in the run
folder, atomically, and reports each as an `artifact` update; an aborted run keeps the latest ones."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from ganft_core.adapt import GRID_SAMPLES, GRID_SEED
from ganft_core.config import TrainSpec
from ganft_core.data import Dataset, Layout
from ganft_core.errors import Aborted
from ganft_core.images import save_grid
from ganft_core.models.io import load_model
from ganft_core.train import ProgressUpdate, train

PICTURES = ("samples.png", "curves.png")
LAYOUT = Layout("image", channels=1, height=8, width=8)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/core/conftest.py


def band_images(n_per_class: int, labeled_per_class: int, seed: int = 0) -> Dataset:
    """1×8×8 images in [0, 1], 3 classes (a bright band at rows 2k..2k+1), the rest unlabeled."""
    rng = np.random.RandomState(seed)
    x = rng.uniform(0, 0.25, size=(3 * n_per_class, 1, 8, 8)).astype(np.float32)
    for k in range(3):
        x[k * n_per_class : (k + 1) * n_per_class, :, 2 * k : 2 * k + 2] = 0.9
    y = np.repeat(np.arange(3), n_per_class)
    y = np.where(np.tile(np.arange(n_per_class), 3) < labeled_per_class, y, -1)
    return Dataset(x=x, y=y, classes=["a", "b", "c"], layout=LAYOUT)


SPECS: dict[str, dict[str, Any]] = {
    "ssgan": {
        "steps": 6, "batch_size": 8, "unlabeled_batch_size": 8, "log_every": 1, "eval_every": 2,
        "checkpoint_every": 6, "architecture_arguments": {"widths": [4, 8]}, "z_dim": 16,
    },
    "adapt": {
        "steps": 6, "batch_size": 8, "eval_every": 2, "eval_samples": 16, "log_every": 1, "checkpoint_every": 6,
        "ada": False, "r1_gamma": 0.0, "z_dim": 16,
    },
}  # fmt: skip


def _spec(method: str) -> TrainSpec:
    return TrainSpec.model_validate({"method": method, "seed": 3, "hyperparameters": SPECS[method]})


def _png(path: Path) -> bytes:
    """The file's bytes, after checking that it is a whole PNG."""
    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "PNG"
        img.load()  # decodes every byte: a half-written file fails here
    return data


def _run(method: str, out: Path, **kwargs: Any) -> tuple[list[ProgressUpdate], dict[tuple[int, str], bytes]]:
    """Train, snapshotting each picture when its `artifact` update arrives (what a watcher would read)."""
    updates: list[ProgressUpdate] = []
    seen: dict[tuple[int, str], bytes] = {}

    def progress(update: ProgressUpdate) -> None:
        updates.append(update)
        if update.kind == "artifact" and update.path in PICTURES:
            seen[update.step, update.path] = _png(out / update.path)
            assert not list(out.glob("*.tmp")), "a temp file was left behind"

    validation = band_images(4, 4, seed=5) if method == "ssgan" else None
    train(_spec(method), band_images(12, 4), out, validation=validation, progress=progress, device="cpu", **kwargs)
    return updates, seen


@pytest.mark.parametrize("method", ["ssgan", "adapt"])
def test_every_evaluation_rewrites_the_pictures_before_the_run_ends(method: str, tmp_path: Path) -> None:
    updates, seen = _run(method, tmp_path)
    evaluations = [u.step for u in updates if u.kind == "evaluation"]
    assert evaluations == [2, 4, 6]
    for step in evaluations:  # each evaluation is followed by both pictures, while the run goes on
        assert {(step, name) for name in PICTURES} <= set(seen)
    first_artifact = next(i for i, u in enumerate(updates) if u.kind == "artifact")
    assert updates[first_artifact - 1].kind == "evaluation" and updates[first_artifact].step == 2
    assert seen[2, "curves.png"] != seen[6, "curves.png"]  # the curves grow
    assert (tmp_path / "samples.png").read_bytes() == seen[6, "samples.png"]  # the last evaluation's are final


@pytest.mark.parametrize("method", ["ssgan", "adapt"])
def test_the_sample_grid_is_the_generator_on_fixed_latents(method: str, tmp_path: Path) -> None:
    """The final grid is exactly the exported generator on the documented latents (the same at every evaluation)."""
    _run(method, tmp_path / "run")
    g, meta = load_model(tmp_path / "run", "model" if method == "adapt" else "generator")
    z_dim = meta.arguments["z_dim"]
    if method == "adapt":
        z = torch.randn(GRID_SAMPLES, z_dim, generator=torch.Generator().manual_seed(GRID_SEED))
    else:  # ssgan: the job's seed
        z = torch.randn(64, z_dim, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        save_grid(g.eval()(z).float(), tmp_path / "expected.png", nrow=8)
    assert (tmp_path / "run" / "samples.png").read_bytes() == (tmp_path / "expected.png").read_bytes()


@pytest.mark.parametrize("method", ["ssgan", "adapt"])
def test_an_aborted_run_keeps_the_pictures_of_its_last_evaluation(method: str, tmp_path: Path) -> None:
    stop = {"now": False}

    def should_abort() -> bool:
        return stop["now"]

    def progress(update: ProgressUpdate) -> None:
        if update.kind == "artifact":
            stop["now"] = True  # as a cancel arriving right after the first evaluation

    validation = band_images(4, 4, seed=5) if method == "ssgan" else None
    with pytest.raises(Aborted):
        train(_spec(method), band_images(12, 4), tmp_path, validation=validation, progress=progress,
              should_abort=should_abort, device="cpu")  # fmt: skip
    for name in PICTURES:
        _png(tmp_path / name)
    assert not (tmp_path / "model.safetensors").exists()  # the run did not end
