"""Building blocks shared by the networks: input normalisation, Gaussian noise, norm wrappers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

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


def data_normalization(x: torch.Tensor) -> dict[str, list[float]]:
    """Per-channel (N×C×H×W) or per-feature (N×F) mean and std of a batch of training inputs.

    The trainer passes the result as a classifier's `mean`/`std` arguments; a zero std (a constant
    channel or feature) becomes 1 so that normalising never divides by zero.
    """
    dims = (0, 2, 3) if x.dim() == 4 else (0,)
    x = x.double()
    mean = x.mean(dim=dims)
    std = x.std(dim=dims, unbiased=False)
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
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
