"""`mlp_g` / `mlp_d`: dense GAN nets for feature vectors and tiny images.

`mlp_g` defaults to Improved-GAN's MNIST generator (Salimans et al. 2016, `mnist_feature_matching.py`):
z(100) -> 500 -> 500 with softplus and batch norm, then a weight-normalised dense output with a
sigmoid (pixels in [0, 1]). With `output="linear"` it makes raw feature vectors, e.g. GAN-BERT's
feature-space generator (Croce et al. 2020: one hidden layer, leaky ReLU, dropout 0.1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ganft_core.models.arguments import require_all_positive, require_range, require_shape
from ganft_core.models.layers import GaussianNoise, activation, normalization_buffers, with_norm


@dataclass(frozen=True)
class MLPGeneratorArgs:
    out_shape: tuple[int, ...]  # one sample: (F,) feature vector or (C, H, W) image
    z_dim: int = 100  # latent size: forward takes N×z_dim
    hidden: tuple[int, ...] = (500, 500)  # hidden widths (Improved-GAN MNIST G)
    activation: Literal["softplus", "relu", "leaky_relu"] = "softplus"  # hidden non-linearity
    batch_norm: bool = True  # batch norm after each hidden linear layer
    dropout: float = 0.0  # dropout after each hidden activation (GAN-BERT's G: 0.1)
    output: Literal["sigmoid", "linear"] = "sigmoid"  # sigmoid: images in [0, 1]; linear: raw features
    output_weight_norm: bool = True  # weight-normalised output layer (Improved-GAN)

    def __post_init__(self) -> None:
        require_shape("out_shape", self.out_shape)
        require_all_positive("z_dim", (self.z_dim,))
        require_all_positive("hidden", self.hidden)
        require_range("dropout", self.dropout, 0.0, 1.0)


@dataclass(frozen=True)
class MLPDiscriminatorArgs:
    in_shape: tuple[int, ...]  # one example: (F,) feature vector or (C, H, W) image, flattened inside
    hidden: tuple[int, ...] = (256, 256)  # hidden widths
    activation: Literal["leaky_relu", "relu", "softplus"] = "leaky_relu"  # hidden non-linearity
    norm: Literal["none", "weight", "spectral"] = "none"  # of every linear layer
    dropout: float = 0.0  # dropout after each hidden activation, training only
    input_noise_std: float = 0.0  # Gaussian noise on the normalised input, training only
    mean: tuple[float, ...] = ()  # input normalisation per feature/channel; () = 0
    std: tuple[float, ...] = ()  # () = 1

    def __post_init__(self) -> None:
        require_shape("in_shape", self.in_shape)
        require_all_positive("hidden", self.hidden)
        require_range("dropout", self.dropout, 0.0, 1.0)
        require_range("input_noise_std", self.input_noise_std, 0.0, 10.0)


class MLPGenerator(nn.Module):
    """forward(z: N×z_dim) -> N×F or N×C×H×W (in [0, 1] with the sigmoid output)."""

    def __init__(self, args: MLPGeneratorArgs) -> None:
        super().__init__()
        self.z_dim = args.z_dim
        self.out_shape = args.out_shape
        widths = [args.z_dim, *args.hidden]
        layers = []
        for n_in, n_out in zip(widths, widths[1:], strict=False):
            block: list[nn.Module] = [nn.Linear(n_in, n_out, bias=not args.batch_norm)]
            if args.batch_norm:
                block.append(nn.BatchNorm1d(n_out))
            block.append(activation(args.activation))
            if args.dropout > 0:
                block.append(nn.Dropout(args.dropout))
            layers.append(nn.Sequential(*block))
        self.layers = nn.ModuleList(layers)
        out = nn.Linear(widths[-1], math.prod(args.out_shape))
        self.out = with_norm(out, "weight" if args.output_weight_norm else "none")
        self.sigmoid = args.output == "sigmoid"

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z
        for layer in self.layers:
            x = layer(x)
        x = self.out(x)  # N×prod(out_shape)
        if self.sigmoid:
            x = torch.sigmoid(x)
        return x.view(x.shape[0], *self.out_shape)  # N×F or N×C×H×W

    def blocks(self) -> list[nn.Module]:
        """Hidden layers from z up, then the output layer."""
        return [*self.layers, self.out]


class MLPDiscriminator(nn.Module):
    """forward(x: N×F or N×C×H×W) -> (N,) logits."""

    norm_mean: torch.Tensor  # (1, C, 1, 1) or (1, F)
    norm_std: torch.Tensor

    def __init__(self, args: MLPDiscriminatorArgs) -> None:
        super().__init__()
        image = len(args.in_shape) == 3
        mean, std = normalization_buffers(args.mean, args.std, args.in_shape[0], image=image)
        self.register_buffer("norm_mean", mean, persistent=False)
        self.register_buffer("norm_std", std, persistent=False)
        self.noise = GaussianNoise(args.input_noise_std)
        widths = [math.prod(args.in_shape), *args.hidden]
        layers = []
        for n_in, n_out in zip(widths, widths[1:], strict=False):
            block: list[nn.Module] = [with_norm(nn.Linear(n_in, n_out), args.norm), activation(args.activation)]
            if args.dropout > 0:
                block.append(nn.Dropout(args.dropout))
            layers.append(nn.Sequential(*block))
        self.layers = nn.ModuleList(layers)
        self.out = with_norm(nn.Linear(widths[-1], 1), args.norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.noise(((x - self.norm_mean) / self.norm_std).flatten(1))  # N×prod(in_shape)
        for layer in self.layers:
            x = layer(x)
        return self.out(x).flatten()  # (N,)

    def blocks(self) -> list[nn.Module]:
        """Hidden layers from the input up, then the output layer (FreezeD freezes the lowest)."""
        return [*self.layers, self.out]
