"""`conv_g` / `conv_d`: small conv GAN nets for small images whose sides are multiples of 4 (8-64 px).

`conv_g` is DCGAN-shaped (Radford et al. 2016) but starts from a dense layer to an H/4×W/4 map, so
8×8 digits, 28×28 and 12×16 images all work; `conv_d` mirrors it with stride-2 convs and a global
average pool, so it takes any size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ganft_core.errors import ModelError
from ganft_core.models.arguments import require_all_positive
from ganft_core.models.layers import init_dcgan_weights, with_norm


@dataclass(frozen=True)
class ConvGeneratorArgs:
    z_dim: int = 64  # latent size: forward takes N×z_dim
    channels: int = 1  # C of the N×C×H×W output
    height: int = 8  # H: a multiple of 4
    width: int = 8  # W: a multiple of 4
    base: int = 64  # channels of the H/2 stage; the H/4 stage has twice as many

    def __post_init__(self) -> None:
        require_all_positive("z_dim", (self.z_dim,))
        require_all_positive("channels", (self.channels,))
        require_all_positive("base", (self.base,))
        for name in ("height", "width"):
            value = getattr(self, name)
            if value <= 0 or value % 4 or value > 256:
                raise ModelError(f"argument {name!r} must be a multiple of 4 up to 256, got {value}", field=name)


@dataclass(frozen=True)
class ConvDiscriminatorArgs:
    channels: int = 1  # C of the N×C×H×W input
    widths: tuple[int, ...] = (64, 128)  # channels per stride-2 stage (each halves H and W)
    norm: Literal["none", "batch", "spectral"] = "none"  # of every conv after the first

    def __post_init__(self) -> None:
        require_all_positive("channels", (self.channels,))
        require_all_positive("widths", self.widths, allow_empty=False)


class ConvGenerator(nn.Module):
    """forward(z: N×z_dim) -> N×C×H×W in [0, 1]."""

    def __init__(self, args: ConvGeneratorArgs) -> None:
        super().__init__()
        self.z_dim = args.z_dim
        self.start = (args.base * 2, args.height // 4, args.width // 4)  # C0×H/4×W/4
        c0, h0, w0 = self.start
        n0 = c0 * h0 * w0
        self.fc = nn.Sequential(nn.Linear(args.z_dim, n0, bias=False), nn.BatchNorm1d(n0), nn.ReLU())  # N×n0
        self.up1 = nn.Sequential(  # H/4 -> H/2
            nn.ConvTranspose2d(c0, args.base, 4, 2, 1, bias=False), nn.BatchNorm2d(args.base), nn.ReLU()
        )
        self.up2 = nn.ConvTranspose2d(args.base, args.channels, 4, 2, 1)  # H/2 -> H
        init_dcgan_weights(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(z.shape[0], *self.start)  # N×C0×H/4×W/4
        return torch.sigmoid(self.up2(self.up1(x)))  # N×C×H×W

    def blocks(self) -> list[nn.Module]:
        """From z to pixels."""
        return [self.fc, self.up1, self.up2]


class ConvDiscriminator(nn.Module):
    """forward(x: N×C×H×W in [0, 1]) -> (N,) logits."""

    def __init__(self, args: ConvDiscriminatorArgs) -> None:
        super().__init__()
        stages = []
        c_in = args.channels
        for i, width in enumerate(args.widths):
            norm = "none" if i == 0 else args.norm
            conv = nn.Conv2d(c_in, width, 4, 2, 1)
            layers: list[nn.Module] = [with_norm(conv, "spectral" if norm == "spectral" else "none")]
            if norm == "batch":
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.LeakyReLU(0.2))
            stages.append(nn.Sequential(*layers))  # H -> H/2 (rounded down)
            c_in = width
        self.stages = nn.ModuleList(stages)
        self.out = with_norm(nn.Linear(c_in, 1), "spectral" if args.norm == "spectral" else "none")
        init_dcgan_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * 2 - 1  # [0, 1] -> [-1, 1]
        for stage in self.stages:
            x = stage(x)
        return self.out(x.mean(dim=(2, 3))).flatten()  # global average pool, then (N,)

    def blocks(self) -> list[nn.Module]:
        """Stride-2 stages from pixels up, then the output layer (FreezeD freezes the lowest)."""
        return [*self.stages, self.out]
