"""`convnet`: a small conv classifier for small images (8-32 px, e.g. scikit-learn's 8×8 digits).

Each stage is two 3×3 convs; every stage after the first halves H and W (stride 2). A global average
pool makes the net size-agnostic, so one set of weights serves any input size. `norm="weight"` with
`input_noise_std` is the Improved-GAN recipe for a semi-supervised discriminator (their CIFAR net
uses weight norm, not batch norm: real and fake batches pass through D separately).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ganft_core.models.arguments import require_all_positive, require_range
from ganft_core.models.layers import GaussianNoise, normalization_buffers, with_norm


@dataclass(frozen=True)
class ConvNetArgs:
    in_channels: int  # C of the N×C×H×W input
    num_classes: int  # K: logits per example
    widths: tuple[int, ...] = (32, 64, 128)  # channels per stage; stages after the first halve H and W
    norm: Literal["batch", "weight", "none"] = "batch"  # normalisation of every conv
    dropout: float = 0.0  # dropout probability after each stage, training only
    input_noise_std: float = 0.0  # Gaussian noise on the normalised input, training only
    mean: tuple[float, ...] = ()  # per-channel input normalisation; () = 0
    std: tuple[float, ...] = ()  # () = 1

    def __post_init__(self) -> None:
        require_all_positive("in_channels", (self.in_channels,))
        require_all_positive("num_classes", (self.num_classes,))
        require_all_positive("widths", self.widths, allow_empty=False)
        require_range("dropout", self.dropout, 0.0, 1.0)
        require_range("input_noise_std", self.input_noise_std, 0.0, 10.0)


def _conv(c_in: int, c_out: int, stride: int, norm: str) -> list[nn.Module]:
    conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=norm != "batch")
    layers: list[nn.Module] = [with_norm(conv, "weight" if norm == "weight" else "none")]
    if norm == "batch":
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(nn.LeakyReLU(0.2))
    return layers


class ConvNet(nn.Module):
    """forward(x: N×C×H×W in [0,1]) -> N×K logits; features(x) -> N×widths[-1]."""

    norm_mean: torch.Tensor  # (1, C, 1, 1) or (1, F)
    norm_std: torch.Tensor

    def __init__(self, args: ConvNetArgs) -> None:
        super().__init__()
        mean, std = normalization_buffers(args.mean, args.std, args.in_channels, image=True)
        self.register_buffer("norm_mean", mean, persistent=False)
        self.register_buffer("norm_std", std, persistent=False)
        self.noise = GaussianNoise(args.input_noise_std)
        stages = []
        c_in = args.in_channels
        for i, width in enumerate(args.widths):
            stride = 1 if i == 0 else 2  # H×W, then H/2, H/4, ... (rounded up)
            layers = _conv(c_in, width, stride, args.norm) + _conv(width, width, 1, args.norm)
            if args.dropout > 0:
                layers.append(nn.Dropout(args.dropout))
            stages.append(nn.Sequential(*layers))
            c_in = width
        self.stages = nn.ModuleList(stages)
        self.head = nn.Linear(c_in, args.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.noise((x - self.norm_mean) / self.norm_std)
        for stage in self.stages:
            x = stage(x)
        return x.mean(dim=(2, 3))  # global average pool: N×widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # N×K

    def blocks(self) -> list[nn.Module]:
        """Conv stages, lowest first (for freezing)."""
        return list(self.stages)

    def replace_head(self, num_classes: int) -> None:
        self.head = nn.Linear(self.head.in_features, num_classes)
