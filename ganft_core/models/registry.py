"""The one registry of architectures: name -> (typed arguments, builder, role).

Nothing else looks classes up by string. `build(name, args)` checks the arguments (unknown name,
unknown argument, wrong type, bad value: `ModelError` naming it) and returns the module with its
name and arguments attached, so `current_arguments(module)` can describe it for `model.json`
even after `replace_head`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

from torch import nn

from ganft_core.errors import ModelError
from ganft_core.models.arguments import arguments_to_json, parse_arguments
from ganft_core.models.conv_gan import ConvDiscriminator, ConvDiscriminatorArgs, ConvGenerator, ConvGeneratorArgs
from ganft_core.models.convnet import ConvNet, ConvNetArgs
from ganft_core.models.dcgan import DCGANDiscriminator, DCGANDiscriminatorArgs, DCGANGenerator, DCGANGeneratorArgs
from ganft_core.models.minilm import MiniLMArgs, MiniLMClassifier
from ganft_core.models.mlp import MLP, MLPArgs
from ganft_core.models.mlp_gan import MLPDiscriminator, MLPDiscriminatorArgs, MLPGenerator, MLPGeneratorArgs
from ganft_core.models.resnet import ResNet18, ResNet18Args

Role = Literal["classifier", "generator", "discriminator"]


@dataclass(frozen=True)
class ArchEntry:
    args_type: type  # frozen dataclass of the arguments, one commented field each
    builder: Callable[[Any], nn.Module]  # args instance -> module
    role: Role  # what the net is: classifier (K logits), generator (z -> x) or GAN discriminator (x -> (N,))


ARCHITECTURES: dict[str, ArchEntry] = {
    "mlp": ArchEntry(MLPArgs, MLP, "classifier"),
    "convnet": ArchEntry(ConvNetArgs, ConvNet, "classifier"),
    "resnet18": ArchEntry(ResNet18Args, ResNet18, "classifier"),
    "minilm": ArchEntry(MiniLMArgs, MiniLMClassifier, "classifier"),  # text: ganft_core/ssgan_text.py
    "dcgan_g": ArchEntry(DCGANGeneratorArgs, DCGANGenerator, "generator"),
    "dcgan_d": ArchEntry(DCGANDiscriminatorArgs, DCGANDiscriminator, "discriminator"),
    "mlp_g": ArchEntry(MLPGeneratorArgs, MLPGenerator, "generator"),
    "mlp_d": ArchEntry(MLPDiscriminatorArgs, MLPDiscriminator, "discriminator"),
    "conv_g": ArchEntry(ConvGeneratorArgs, ConvGenerator, "generator"),
    "conv_d": ArchEntry(ConvDiscriminatorArgs, ConvDiscriminator, "discriminator"),
}


def entry(name: str) -> ArchEntry:
    if name not in ARCHITECTURES:
        raise ModelError(f"unknown architecture {name!r}; known: {sorted(ARCHITECTURES)}", field="architecture")
    return ARCHITECTURES[name]


def parse(name: str, args: Mapping[str, Any]) -> Any:
    """The typed arguments of architecture `name` (defaults filled in), or ModelError."""
    return parse_arguments(entry(name).args_type, args, architecture=name)


def build(name: str, args: Mapping[str, Any]) -> nn.Module:
    """A freshly initialised `name` network built from JSON-ish `args`."""
    typed = parse(name, args)
    module = entry(name).builder(typed)
    # Plain attributes (not state): what `current_arguments` reports for model.json.
    vars(module).update(architecture=name, arch_args=typed)
    return module


def current_arguments(module: nn.Module) -> tuple[str, dict[str, Any]]:
    """(name, JSON arguments) that rebuild `module`'s shapes, with num_classes following replace_head."""
    name = getattr(module, "architecture", None)
    typed = getattr(module, "arch_args", None)
    if not isinstance(name, str) or typed is None:
        raise ModelError("this module was not built by the architecture registry", field="architecture")
    if ARCHITECTURES[name].role == "classifier":
        head = getattr(module, "head", None)
        assert isinstance(head, nn.Linear), f"{name} has no linear head"
        typed = replace(typed, num_classes=head.out_features)
    return name, arguments_to_json(typed)


class LayoutLike(Protocol):
    """`ganft_core.data.Layout`, which this module does not import (the data package is torch-free)."""

    @property
    def kind(self) -> str: ...
    @property
    def channels(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def width(self) -> int: ...
    @property
    def features(self) -> int: ...

    def shape(self) -> tuple[int, ...]: ...


def default_classifier_for(layout: LayoutLike, num_classes: int | None = None) -> tuple[str, dict[str, Any]]:
    """A sensible classifier when no base model is given.

    Feature vectors -> `mlp` (Improved-GAN MNIST D); images up to 32 px -> `convnet` (the size of the
    Improved-GAN CIFAR/SVHN discriminators, and many times cheaper than a ResNet-18 at these sizes);
    larger images -> `resnet18` (CIFAR-style 3×3 stem up to 64 px). Normalisation arguments are left to the
    trainer.
    """
    args: dict[str, Any]
    if layout.kind == "features":
        name, args = "mlp", {"in_shape": [layout.features]}
    elif max(layout.height, layout.width) <= 32:
        name, args = "convnet", {"in_channels": layout.channels}
    else:
        small = max(layout.height, layout.width) <= 64
        name, args = "resnet18", {"in_channels": layout.channels, "small_input": small}
    if num_classes is not None:
        args["num_classes"] = num_classes
    return name, args


def default_gan_for(layout: LayoutLike, z_dim: int) -> tuple[tuple[str, dict[str, Any]], tuple[str, dict[str, Any]]]:
    """((G name, G args), (D name, D args)) for training a GAN from scratch on `layout` data.

    Feature vectors -> `mlp_g` (linear output) / `mlp_d`; square power-of-two images of 32-128 px ->
    `dcgan_g` / `dcgan_d`; other images whose sides are multiples of 4 (8×8 digits, 28×28) ->
    `conv_g` / `conv_d`. Anything else is a ModelError asking for a resize.
    """
    if layout.kind == "features":
        g = ("mlp_g", {"out_shape": [layout.features], "z_dim": z_dim, "output": "linear", "output_weight_norm": False})
        return g, ("mlp_d", {"in_shape": [layout.features]})
    h, w, c = layout.height, layout.width, layout.channels
    if h == w and h in (32, 64, 128):
        return ("dcgan_g", {"z_dim": z_dim, "resolution": h, "channels": c}), (
            "dcgan_d",
            {"resolution": h, "channels": c},
        )
    if h % 4 == 0 and w % 4 == 0 and max(h, w) <= 64:
        return ("conv_g", {"z_dim": z_dim, "channels": c, "height": h, "width": w}), ("conv_d", {"channels": c})
    raise ModelError(
        f"no default GAN for {c}×{h}×{w} images: use square 32, 64 or 128 px images, "
        "or sides that are multiples of 4 up to 64 px",
        field="dataset",
    )
