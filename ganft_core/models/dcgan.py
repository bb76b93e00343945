"""`dcgan_g` / `dcgan_d`: DCGAN (Radford et al. 2016) for square power-of-two images, 32-128 px.

The layer layout follows pytorch/examples `dcgan/main.py` (an `nn.Sequential` named `main`), so at
resolution 64, width 64, z_dim 100 the state_dict keys and shapes are those of that example and its
weights load unchanged. Other resolutions add or drop one stride-2 stage per factor of two.
G outputs tanh·0.5+0.5, i.e. images in [0, 1]; D maps its [0, 1] input to [-1, 1] first and returns
raw logits (N,) (the example's final sigmoid is left to the loss).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ganft_core.models.arguments import require_all_positive, require_power_of_two
from ganft_core.models.layers import LayerNorm, init_dcgan_weights, with_norm


def _stages(resolution: int) -> int:
    """Stride-2 stages between 4×4 and the resolution: 32 -> 3, 64 -> 4, 128 -> 5."""
    return resolution.bit_length() - 3


@dataclass(frozen=True)
class DCGANGeneratorArgs:
    z_dim: int = 100  # latent size: forward takes N×z_dim
    resolution: int = 64  # output H = W: a power of two in 32..128
    channels: int = 3  # C of the N×C×H×W output
    width: int = 64  # ngf: channels of the last hidden stage; doubles at every stage towards z

    def __post_init__(self) -> None:
        require_all_positive("z_dim", (self.z_dim,))
        require_power_of_two("resolution", self.resolution, 32, 128)
        require_all_positive("channels", (self.channels,))
        require_all_positive("width", (self.width,))


@dataclass(frozen=True)
class DCGANDiscriminatorArgs:
    resolution: int = 64  # input H = W: a power of two in 32..128
    channels: int = 3  # C of the N×C×H×W input
    width: int = 64  # ndf: channels of the first stage; doubles at every stage
    norm: Literal["batch", "spectral", "none"] = "batch"  # of every conv after the first (DCGAN: batch)

    def __post_init__(self) -> None:
        require_power_of_two("resolution", self.resolution, 32, 128)
        require_all_positive("channels", (self.channels,))
        require_all_positive("width", (self.width,))


class DCGANGenerator(nn.Module):
    """forward(z: N×z_dim) -> N×C×R×R in [0, 1]."""

    def __init__(self, args: DCGANGeneratorArgs) -> None:
        super().__init__()
        self.z_dim = args.z_dim
        n = _stages(args.resolution)
        c = args.width * 2 ** (n - 1)
        layers: list[nn.Module] = [  # N×z×1×1 -> N×c×4×4
            nn.ConvTranspose2d(args.z_dim, c, 4, 1, 0, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(True),
        ]
        for _ in range(n - 1):  # each: H -> 2H, channels halve
            layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c // 2), nn.ReLU(True)]
            c //= 2
        layers += [nn.ConvTranspose2d(c, args.channels, 4, 2, 1, bias=False), nn.Tanh()]  # -> N×C×R×R
        self.main = nn.Sequential(*layers)
        init_dcgan_weights(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z[:, :, None, None]) * 0.5 + 0.5  # [-1, 1] -> [0, 1]

    def blocks(self) -> list[nn.Module]:
        """(ConvT, BN, ReLU) stages from z to pixels, then the output conv."""
        return [self.main[i : i + 3] for i in range(0, len(self.main) - 2, 3)] + [self.main[-2:]]


class DCGANDiscriminator(nn.Module):
    """forward(x: N×C×R×R in [0, 1]) -> (N,) logits."""

    def __init__(self, args: DCGANDiscriminatorArgs) -> None:
        super().__init__()
        n = _stages(args.resolution)
        c = args.width
        spectral: LayerNorm = "spectral" if args.norm == "spectral" else "none"
        layers: list[nn.Module] = [  # N×C×R×R -> N×c×R/2×R/2
            with_norm(nn.Conv2d(args.channels, c, 4, 2, 1, bias=False), spectral),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        for _ in range(n - 1):  # each: H -> H/2, channels double
            conv = nn.Conv2d(c, c * 2, 4, 2, 1, bias=False)
            if args.norm == "spectral":
                layers += [with_norm(conv, "spectral"), nn.Identity()]  # Identity keeps the example's indices
            else:
                layers += [conv, nn.BatchNorm2d(c * 2) if args.norm == "batch" else nn.Identity()]
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            c *= 2
        final = nn.Conv2d(c, 1, 4, 1, 0, bias=False)  # N×c×4×4 -> N×1×1×1
        layers.append(with_norm(final, spectral))
        self.main = nn.Sequential(*layers)
        init_dcgan_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x * 2 - 1).flatten()  # (N,)

    def blocks(self) -> list[nn.Module]:
        """Stride-2 stages from pixels up, then the output conv (FreezeD freezes the lowest)."""
        return [self.main[0:2]] + [self.main[i : i + 3] for i in range(2, len(self.main) - 1, 3)] + [self.main[-1:]]
