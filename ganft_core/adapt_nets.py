"""The two networks of an `adapt` run: loaded from a base model folder, or built from scratch.

A base model folder holds `generator.json/.safetensors` and `discriminator.json/.safetensors`
(what a finished adapt job writes; `model.*` is the generator again). A folder with only a
generator as `model.*` is accepted too: D then starts from scratch, and the run says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ganft_core.config import AdaptHyperparameters
from ganft_core.data.types import Layout
from ganft_core.errors import ModelError, SpecError
from ganft_core.models import registry
from ganft_core.models.io import ModelMeta, load_model


@dataclass
class GanNets:
    generator: nn.Module  # forward(z: N×z_dim) -> N×C×H×W in [0, 1]
    discriminator: nn.Module  # forward(x: N×C×H×W) -> (N,) logits; blocks() lowest first
    z_dim: int
    pretrained_g: bool
    pretrained_d: bool
    notes: list[str] = field(default_factory=list)  # what the run should tell the user
    # the images G makes and D takes (C×H×W): the data's, or smaller for a base model made for smaller images
    # (the data is then fitted to it at training time by the `large_images` policy; adapt.py)
    image: Layout | None = None


def build_nets(hp: AdaptHyperparameters, layout: Layout, base_model: Path | None) -> GanNets:
    """G and D for `layout` images: from `base_model` when given, else registry defaults (or the named ones)."""
    if layout.kind != "image":
        raise SpecError("adapt trains image GANs; this dataset holds feature vectors", field="dataset_id")
    if base_model is None:
        g, d = _fresh(hp, layout)
        nets = GanNets(
            g,
            d,
            _z_dim(g),
            pretrained_g=False,
            pretrained_d=False,
            notes=[f"no base model: training {g.architecture} / {d.architecture} from scratch"],
        )
    else:
        nets = _load(hp, Path(base_model), layout)
    nets.image = _check_shapes(nets, layout)
    return nets


def _fresh(hp: AdaptHyperparameters, layout: Layout) -> tuple[nn.Module, nn.Module]:
    (g_name, g_args), (d_name, d_args) = registry.default_gan_for(layout, hp.z_dim)
    if hp.generator_architecture is not None and hp.generator_architecture != g_name:
        g_name, g_args = hp.generator_architecture, _arguments_for(hp.generator_architecture, layout, hp.z_dim)
    if hp.discriminator_architecture is not None and hp.discriminator_architecture != d_name:
        d_name, d_args = hp.discriminator_architecture, _arguments_for(hp.discriminator_architecture, layout, hp.z_dim)
    return registry.build(g_name, g_args), registry.build(d_name, d_args)


def _arguments_for(name: str, layout: Layout, z_dim: int) -> dict[str, object]:
    """Shape arguments of a GAN architecture for `layout` (the rest stay at their defaults)."""
    c, h, w = layout.channels, layout.height, layout.width
    if name == "mlp_g":
        return {"out_shape": [c, h, w], "z_dim": z_dim}
    if name == "mlp_d":
        return {"in_shape": [c, h, w]}
    if name == "conv_g":
        return {"z_dim": z_dim, "channels": c, "height": h, "width": w}
    if name == "conv_d":
        return {"channels": c}
    if h != w:
        raise SpecError(f"{name} needs square images, the data is {layout.describe()}", field="hyperparameters")
    if name == "dcgan_g":
        return {"z_dim": z_dim, "resolution": h, "channels": c}
    return {"resolution": h, "channels": c}  # dcgan_d


def _load(hp: AdaptHyperparameters, folder: Path, layout: Layout) -> GanNets:
    if (folder / "model.pt2").exists() and not (folder / "model.safetensors").exists():
        raise ModelError(
            "adapt needs a GAN (generator + discriminator weights), not an exported program", field="base_model_id"
        )
    stem = "generator" if (folder / "generator.json").exists() else "model"
    g, g_meta = load_model(folder, stem)
    _require_role(g_meta, "generator", f"{stem}.json")
    notes = [f"base generator: {g_meta.architecture} from {stem}.safetensors"]
    z_dim = _z_dim(g)
    if "z_dim" in hp.model_fields_set and hp.z_dim != z_dim:
        raise SpecError(f"z_dim={hp.z_dim} but the base generator takes z_dim={z_dim}", field="hyperparameters.z_dim")
    if hp.generator_architecture not in (None, g_meta.architecture):
        raise SpecError(
            f"generator_architecture={hp.generator_architecture!r} but the base generator is {g_meta.architecture!r}",
            field="hyperparameters.generator_architecture",
        )
    if (folder / "discriminator.json").exists():
        d, d_meta = load_model(folder, "discriminator")
        _require_role(d_meta, "discriminator", "discriminator.json")
        if hp.discriminator_architecture not in (None, d_meta.architecture):
            raise SpecError(
                f"discriminator_architecture={hp.discriminator_architecture!r} but the base "
                f"discriminator is {d_meta.architecture!r}",
                field="hyperparameters.discriminator_architecture",
            )
        notes.append(f"base discriminator: {d_meta.architecture}")
        pretrained_d = True
    else:
        made = _made_by(g, z_dim)  # a fresh D takes what G makes (smaller than the data: the large-image policy)
        target = layout if made.channels != layout.channels else made
        _, (d_name, d_args) = registry.default_gan_for(target, z_dim)
        if hp.discriminator_architecture is not None:
            d_name, d_args = hp.discriminator_architecture, _arguments_for(hp.discriminator_architecture, target, 0)
        d = registry.build(d_name, d_args)
        notes.append(f"the base model has no discriminator: {d_name} starts from scratch")
        pretrained_d = False
    return GanNets(g, d, z_dim, pretrained_g=True, pretrained_d=pretrained_d, notes=notes)


def _z_dim(g: nn.Module) -> int:
    z_dim = getattr(g, "z_dim", None)
    if not isinstance(z_dim, int):
        raise ModelError("the generator does not say its latent size (z_dim)", field="base_model_id")
    return z_dim


def d_blocks(d: nn.Module) -> list[nn.Module]:
    """D's blocks, lowest first (the contract of a GAN discriminator)."""
    blocks = getattr(d, "blocks", None)
    if not callable(blocks):
        raise ModelError("the discriminator does not list its blocks (needed for FreezeD)", field="base_model_id")
    return list(blocks())


def _require_role(meta: ModelMeta, role: str, name: str) -> None:
    if meta.role != role:
        raise ModelError(f"{name} describes a {meta.role}, adapt needs a {role} there", field="base_model_id")


@torch.no_grad()
def _made_by(g: nn.Module, z_dim: int) -> Layout:
    """The shape of the images G makes."""
    mode = g.training
    g.eval()
    try:
        c, h, w = g(torch.randn(2, z_dim)).shape[1:]
    finally:
        g.train(mode)
    return Layout("image", channels=int(c), height=int(h), width=int(w))


@torch.no_grad()
def _check_shapes(nets: GanNets, layout: Layout) -> Layout:
    """G must make images of the data's shape, or of the data's channels and at most its height and width
    (larger data is fitted to it at training time), and D must score them; returns that shape."""
    g, d = nets.generator, nets.discriminator
    g_mode, d_mode = g.training, d.training
    g.eval()
    d.eval()
    try:
        x = g(torch.randn(2, nets.z_dim))
        c, h, w = (int(v) for v in x.shape[1:])
        if c != layout.channels or h > layout.height or w > layout.width:
            raise ModelError(
                f"the generator makes {c}×{h}×{w} images but the dataset holds "
                f"{layout.describe()}; use a base model for images of the data's channels and at most "
                "its size (larger data is resized or cropped to fit: `large_images`)",
                field="base_model_id",
            )
        try:
            logits = d(x)
        except RuntimeError as exc:  # a conv/linear shape mismatch deep inside D
            raise ModelError(
                f"the discriminator cannot take {layout.describe()}: {exc}", field="base_model_id"
            ) from None
        if tuple(logits.shape) != (2,):
            raise ModelError(
                f"the discriminator returns shape {tuple(logits.shape)}, expected (N,)", field="base_model_id"
            )
    finally:
        g.train(g_mode)
        d.train(d_mode)
    return Layout("image", channels=c, height=h, width=w)


def freeze_lowest_blocks(d: nn.Module, count: int) -> list[nn.Module]:
    """FreezeD (Mo et al. 2020): the lowest `count` blocks of D keep their weights.

    Their parameters stop requiring grad (so they stay out of the optimizer) and the blocks are
    put in eval mode by `set_train_mode`, so batch-norm statistics and spectral-norm vectors stay
    as pretrained too: the frozen part is a fixed feature extractor, bit for bit.
    """
    if count == 0:
        return []
    blocks = d_blocks(d)
    if count >= len(blocks):
        raise SpecError(
            f"freeze_d_blocks={count} but the discriminator has {len(blocks)} blocks; at least the last one must train",
            field="hyperparameters.freeze_d_blocks",
        )
    frozen = blocks[:count]
    for block in frozen:
        block.requires_grad_(False)
    return frozen


def set_train_mode(d: nn.Module, frozen: list[nn.Module]) -> None:
    """D in training mode except its frozen blocks."""
    d.train()
    for block in frozen:
        block.eval()
