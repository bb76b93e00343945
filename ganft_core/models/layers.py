"""Building blocks shared by the networks: input normalisation, Gaussian noise, norm wrappers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrizations

from ganft_core.errors import ModelError

Activation = Literal["relu", "leaky_relu", "softplus"]
LayerNorm = Literal["none", "batch", "weight", "spectral"]


def normalization_buffers(
    mean: Sequence[float], std: Sequence[float], size: int, *, image: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean/std tensors that broadcast over a batch: (1, C, 1, 1) for images, (1, F) for vectors.

    `mean`/`std` hold 0 values (identity), 1 value (shared by all channels/features) or `size` values.
    """
    shape = (1, size, 1, 1) if image else (1, size)
    if not all(float(v) > 0 for v in std):  # checked on the values: the tensors may live on the meta device
        raise ModelError("std values must be positive", field="std")
    out = []
    for name, values, neutral in (("mean", mean, 0.0), ("std", std, 1.0)):
        if len(values) == 0:
            out.append(torch.full(shape, neutral))
        elif len(values) in (1, size):
            out.append(torch.tensor([float(v) for v in values]).expand(size).reshape(shape).clone())
        else:
            raise ModelError(f"{name} holds {len(values)} values; expected 0, 1 or {size}", field=name)
    return out[0], out[1]


def data_normalization(x: torch.Tensor | np.ndarray) -> dict[str, list[float]]:
    """Per-channel (N×C×H×W) or per-feature (N×F) mean and std of a batch of training inputs.

    The trainer passes the result as a classifier's `mean`/`std` arguments; a zero std (a constant
    channel or feature) becomes 1 so that normalising never divides by zero. `x` is read a few
    thousand rows at a time (`batched_normalization`).
    """
    values = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    step = max(1, _BATCH_VALUES // max(1, values[0].size if len(values) else 1))
    return batched_normalization(values[start : start + step] for start in range(0, len(values), step))


_BATCH_VALUES = 1 << 21  # values converted to float64 at a time by `data_normalization` (16 MiB)


def batched_normalization(batches: Iterable[np.ndarray]) -> dict[str, list[float]]:
    """`data_normalization` of the examples that `batches` yields (N×C×H×W or N×F arrays, a few at a time).

    Memory is one batch in float64, never the dataset: each batch's mean and sum of squared deviations
    (float64, per channel or feature) are merged into the running ones with Chan, Golub and LeVeque's
    pairwise update (1979; "parallel algorithm" in Welford's family), which does not cancel as the
    textbook E[x²] - E[x]² would on raw features far from 0. The result is the whole-array float64
    mean and population std up to float rounding.
    """
    count, mean, m2 = 0, np.zeros(0), np.zeros(0)
    for part in batches:
        if not len(part):
            continue
        values = np.array(part, dtype=np.float64)  # a copy: squared deviations are computed in place
        axes = (0, 2, 3) if values.ndim == 4 else (0,)
        n = values.size // values.shape[1]  # values per channel or feature in this batch
        part_mean = values.mean(axis=axes, keepdims=True)
        np.subtract(values, part_mean, out=values)
        np.square(values, out=values)
        part_m2 = values.sum(axis=axes).reshape(-1)
        part_mean = part_mean.reshape(-1)
        del part, values  # before the next batch is read: one batch in memory, not two
        if count == 0:
            count, mean, m2 = n, part_mean, part_m2
            continue
        total = count + n
        delta = part_mean - mean
        mean = mean + delta * (n / total)
        m2 = m2 + part_m2 + delta**2 * (count * n / total)
        count = total
    if count == 0:
        raise ValueError("no examples to compute a normalisation from")
    std = np.sqrt(m2 / count)
    std = np.where(std > 1e-8, std, 1.0)
    return {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}


class GaussianNoise(nn.Module):
    """Adds N(0, std²) noise in training only (Salimans et al. 2016, `GaussianNoiseLayer` in their code)."""

    def __init__(self, std: float) -> None:
        super().__init__()
        self.std = std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.std > 0:
            return x + torch.randn_like(x) * self.std
        return x

    def extra_repr(self) -> str:
        return f"std={self.std}"


def activation(name: Activation) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(0.2)  # the slope DCGAN and most GAN discriminators use
    return nn.Softplus()


def with_norm(layer: nn.Linear | nn.Conv2d, norm: LayerNorm) -> nn.Module:
    """Weight or spectral normalisation of a layer's weight; other norms are separate layers."""
    if norm == "weight":
        return parametrizations.weight_norm(layer, dim=0)
    if norm == "spectral":
        return parametrizations.spectral_norm(layer)
    return layer


def init_dcgan_weights(module: nn.Module) -> None:
    """N(0, 0.02) conv weights, N(1, 0.02) batch-norm scales (Radford et al. 2016, pytorch/examples dcgan)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and not hasattr(m, "parametrizations"):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
