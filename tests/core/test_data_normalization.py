"""The classifier's input normalisation, computed in batches: the whole-array formula's values, bounded memory."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from ganft_core import ssgan_nets
from ganft_core.data import load_dataset
from ganft_core.data.types import Dataset, Layout
from ganft_core.models.layers import batched_normalization, data_normalization

pytestmark = pytest.mark.usefixtures("one_thread")


def _whole_array(x: np.ndarray) -> dict[str, list[float]]:
    """The formula the trainer used before (float64 of the whole array at once)."""
    t = torch.from_numpy(np.ascontiguousarray(x)).double()
    dims = (0, 2, 3) if t.dim() == 4 else (0,)
    mean, std = t.mean(dim=dims), t.std(dim=dims, unbiased=False)
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    return {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}


def _close(got: dict[str, list[float]], want: dict[str, list[float]]) -> None:
    for key in ("mean", "std"):
        assert np.allclose(got[key], want[key], rtol=1e-12, atol=0), key


@pytest.mark.parametrize("rows", [1, 7, 64, 1000])
def test_batches_give_the_whole_array_formula(rows: int) -> None:
    rng = np.random.RandomState(0)
    images = (rng.randint(0, 256, size=(203, 3, 5, 4)) / 255).astype(np.float32)
    images[:, 1] = 0.5  # a constant channel: std 1
    # raw features far from 0 with a small spread: E[x²] - E[x]² would cancel here, the pairwise update does not
    features = (1e6 + rng.normal(size=(203, 6)) * 1e-2).astype(np.float32)
    for x in (images, features):
        got = batched_normalization(x[start : start + rows] for start in range(0, len(x), rows))
        _close(got, _whole_array(x))
    assert batched_normalization([images])["std"][1] == 1.0
    _close(data_normalization(torch.from_numpy(features)), _whole_array(features))
    with pytest.raises(ValueError, match="no examples"):
        batched_normalization([images[:0]])


def test_stored_dataset_normalisation_is_the_sample_formula_and_is_never_materialised(
    make_npz: Callable[..., Path], tmp_path: Path
) -> None:
    """Over NORMALIZATION_SAMPLE examples: the seeded sample's mean/std, read from the stored form a batch at a time.

    numpy's allocations are traced: the sample alone is 123 MiB as float32 (246 MiB in float64, as before); the
    batched reading holds one batch (2 MiB uint8 read, 8 MiB float32, 16 MiB float64: measured 26 MiB)."""
    n = ssgan_nets.NORMALIZATION_SAMPLE + 500
    x = np.random.RandomState(1).randint(0, 256, size=(n, 32, 32, 3)).astype(np.uint8)  # 30 MiB
    y = np.where(np.arange(n) % 2 == 0, (np.arange(n) // 2) % 4, -1)
    source = make_npz(x=x, y=y, compressed=False)
    del x
    stored = load_dataset(source, stored=tmp_path / "stored")
    assert stored.is_mapped
    tracemalloc.start()
    try:
        args = ssgan_nets._architecture_args("convnet", stored, {})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20, f"normalisation traced a {peak >> 20} MiB peak"
    assert not stored.is_mapped or stored._x is None  # the float32 examples were never built
    sample = ssgan_nets.normalization_sample(load_dataset(source))  # in memory: the same rows, as float32
    assert len(sample) == ssgan_nets.NORMALIZATION_SAMPLE
    _close({"mean": args["mean"], "std": args["std"]}, _whole_array(sample.x))


def test_small_dataset_uses_every_example() -> None:
    x = np.random.RandomState(2).rand(50, 7).astype(np.float32) * 3 - 1
    ds = Dataset(x, np.zeros(50, dtype=np.int64), ["a"], Layout("features", features=7))
    args = ssgan_nets._architecture_args("mlp", ds, {})
    _close({"mean": args["mean"], "std": args["std"]}, _whole_array(x))
