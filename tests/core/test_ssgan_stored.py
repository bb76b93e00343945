"""ssgan from the stored form: a run on a memory-mapped dataset is bit-identical to the in-memory run on the CPU
in deterministic mode (on-device and streamed paths alike), and it resumes from the stored form."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ganft_core.config import TrainSpec
from ganft_core.data import load_dataset
from ganft_core.data.feed import ENV_MAX_DEVICE_BYTES
from ganft_core.errors import Aborted
from ganft_core.train import train

pytestmark = pytest.mark.usefixtures("one_thread")

# Tiny mode: 8 steps, two evaluations, two checkpoints; weak augmentation, DiffAugment, pseudo-labels and EMA on
# (the defaults), so every random draw of a real run happens here too.
TINY = {
    "steps": 8, "batch_size": 8, "unlabeled_batch_size": 8, "log_every": 2, "eval_every": 4, "checkpoint_every": 4,
    "architecture_arguments": {"widths": [8, 8]}, "z_dim": 16, "ema_decay": 0.9, "pseudo_label_threshold": 0.4,
    "augment": {"translate": 0.25, "hflip": True}, "deterministic": True,
}  # fmt: skip
OUTPUTS = ("model", "control", "generator")


@pytest.fixture(autouse=True)
def reset_determinism() -> Iterator[None]:
    yield
    torch.use_deterministic_algorithms(False)  # deterministic runs switch it on process-wide


def _spec() -> TrainSpec:
    return TrainSpec.model_validate({"method": "ssgan", "hyperparameters": TINY, "seed": 7})


@pytest.fixture
def images_npz(make_npz: Any) -> Path:
    """60 uint8 RGB 8×8 images, channels last (the loader transposes them), 3 classes, a third unlabeled."""
    rng = np.random.RandomState(4)
    x = rng.randint(0, 256, size=(60, 8, 8, 3)).astype(np.uint8)
    y = np.arange(60) % 3
    x[np.arange(60), :, :, y] //= 4  # a darker channel per class: something to learn
    y[np.arange(60) % 3 == 0] = -1
    y[:3] = [0, 1, 2]  # every class keeps labeled examples
    return make_npz(x=x, y=y, classes=np.array(["r", "g", "b"]))  # type: ignore[no-any-return]


def _same_run(a: Path, b: Path) -> None:
    for stem in OUTPUTS:
        wa, wb = load_file(a / f"{stem}.safetensors"), load_file(b / f"{stem}.safetensors")
        assert wa.keys() == wb.keys()
        for key in wa:
            assert torch.equal(wa[key], wb[key]), f"{stem}.{key}"
    assert json.loads((a / "metrics.json").read_text()) == json.loads((b / "metrics.json").read_text())
    assert (a / "samples.png").read_bytes() == (b / "samples.png").read_bytes()


@pytest.mark.parametrize("streamed", [False, True], ids=["on device", "streamed"])
def test_ssgan_on_the_stored_form_is_bit_identical_to_the_in_memory_run(
    images_npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, streamed: bool
) -> None:
    in_memory = load_dataset(images_npz)
    assert not in_memory.is_mapped
    train(_spec(), in_memory, tmp_path / "memory", device="cpu")
    if streamed:
        monkeypatch.setenv(ENV_MAX_DEVICE_BYTES, "0")  # every batch (labeled, unlabeled, validation) from the map
    stored = load_dataset(images_npz, stored=tmp_path / "stored")
    assert stored.is_mapped and stored.source.dtype == np.uint8
    train(_spec(), stored, tmp_path / "mapped", device="cpu")
    assert stored._x is None  # the float32 copy was never built
    _same_run(tmp_path / "memory", tmp_path / "mapped")
    path = json.loads((tmp_path / "mapped" / "spec.json").read_text())["data_path"]
    assert path["on_device"] is (not streamed)
    assert path["storage"]["folder"] == str(tmp_path / "stored") and path["storage"]["stored_bytes"] > 60 * 192
    memory_path = json.loads((tmp_path / "memory" / "spec.json").read_text())["data_path"]
    assert memory_path["storage"] is None


def test_ssgan_resumes_from_the_stored_form(images_npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_MAX_DEVICE_BYTES, "0")  # streamed: the resumed attempt reads the map, not a device copy
    stored = load_dataset(images_npz, stored=tmp_path / "stored")
    train(_spec(), stored, tmp_path / "straight", device="cpu")
    polls = 0

    def abort_before_step_6() -> bool:
        nonlocal polls
        polls += 1
        return polls == 7  # polled before each step: steps 0..5 run, the stop checkpoints at step 6

    with pytest.raises(Aborted):
        train(_spec(), stored, tmp_path / "resumed", should_abort=abort_before_step_6, device="cpu")
    assert (tmp_path / "resumed" / "checkpoints" / "ckpt-00000006.pt").is_file()
    manifest = (tmp_path / "stored" / "manifest.json").stat().st_mtime_ns
    again = load_dataset(images_npz, stored=tmp_path / "stored")  # a new attempt opens the stored form anew
    assert (tmp_path / "stored" / "manifest.json").stat().st_mtime_ns == manifest  # reused, not stored again
    updates: list[Any] = []
    train(_spec(), again, tmp_path / "resumed", device="cpu", progress=updates.append)
    assert any("resumed from checkpoint at step 6" in (u.message or "") for u in updates)
    _same_run(tmp_path / "straight", tmp_path / "resumed")
