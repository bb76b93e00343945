"""`mlp`: a classifier for feature vectors and tiny images, after Improved-GAN's MNIST discriminator.

Salimans et al. 2016, "Improved Techniques for Training GANs", code `mnist_feature_matching.py`:
Gaussian noise on the input (std 0.3) and before every later dense layer (std 0.5), dense layers of
1000-500-250-250-250 units with weight normalisation, ReLU, and a 10-way output. Noise is on in
training only. Feature matching uses the last hidden layer *before* its noise (their `disc_layers[-3]`),
so `features(x)` is that activation and `forward` adds the last noise between features and head.
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
class MLPArgs:
    in_shape: tuple[int, ...]  # one example: (F,) feature vector or (C, H, W) image, flattened inside
    num_classes: int  # K: logits per example
    hidden: tuple[int, ...] = (1000, 500, 250, 250, 250)  # hidden widths (Improved-GAN MNIST D); () = linear
    input_noise_std: float = 0.3  # Gaussian noise on the normalised input, training only
    hidden_noise_std: float = 0.5  # Gaussian noise before every later linear layer (head too), training only
    weight_norm: bool = True  # weight-normalised linear layers (Salimans & Kingma 2016), as in Improved-GAN
    dropout: float = 0.0  # dropout probability after each hidden activation, training only
    activation: Literal["relu", "leaky_relu", "softplus"] = "relu"  # hidden non-linearity
    mean: tuple[float, ...] = ()  # input normalisation per feature (vectors) or channel (images); () = 0
    std: tuple[float, ...] = ()  # () = 1

    def __post_init__(self) -> None:
        require_shape("in_shape", self.in_shape)
        require_all_positive("num_classes", (self.num_classes,))
        require_all_positive("hidden", self.hidden)
        require_range("input_noise_std", self.input_noise_std, 0.0, 10.0)
        require_range("hidden_noise_std", self.hidden_noise_std, 0.0, 10.0)
        require_range("dropout", self.dropout, 0.0, 1.0)


class _Block(nn.Module):
    """noise -> linear -> activation -> dropout: one dense layer of the Improved-GAN discriminator."""

    def __init__(self, noise_std: float, n_in: int, n_out: int, args: MLPArgs) -> None:
        super().__init__()
        self.noise = GaussianNoise(noise_std)
        self.linear = with_norm(nn.Linear(n_in, n_out), "weight" if args.weight_norm else "none")
        self.act = activation(args.activation)
        self.drop = nn.Dropout(args.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.act(self.linear(self.noise(x))))


class MLP(nn.Module):
    """forward(x: N×F or N×C×H×W) -> N×K logits; features(x) -> N×hidden[-1]."""

    norm_mean: torch.Tensor  # (1, C, 1, 1) or (1, F)
    norm_std: torch.Tensor

    def __init__(self, args: MLPArgs) -> None:
        super().__init__()
        self.weight_norm = args.weight_norm
        image = len(args.in_shape) == 3
        mean, std = normalization_buffers(args.mean, args.std, args.in_shape[0], image=image)
        # Non-persistent: the values live in the arguments, the state_dict holds learned weights only.
        self.register_buffer("norm_mean", mean, persistent=False)
        self.register_buffer("norm_std", std, persistent=False)
        widths = [math.prod(args.in_shape), *args.hidden]
        noise = [args.input_noise_std] + [args.hidden_noise_std] * len(args.hidden)
        self.layers = nn.ModuleList(_Block(noise[i], widths[i], widths[i + 1], args) for i in range(len(args.hidden)))
        self.head_noise = GaussianNoise(noise[-1])
        self.head = self._new_head(widths[-1], args.num_classes)

    def _new_head(self, n_in: int, k: int) -> nn.Module:
        return with_norm(nn.Linear(n_in, k), "weight" if self.weight_norm else "none")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = ((x - self.norm_mean) / self.norm_std).flatten(1)  # N×F (images: N×C·H·W)
        for block in self.layers:
            x = block(x)
        return x  # N×hidden[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_noise(self.features(x)))  # N×K

    def blocks(self) -> list[nn.Module]:
        """Hidden layers, lowest first (for freezing)."""
        return list(self.layers)

    def replace_head(self, num_classes: int) -> None:
        self.head = self._new_head(self.head.in_features, num_classes)  # type: ignore[arg-type]
