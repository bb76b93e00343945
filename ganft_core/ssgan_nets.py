"""Networks of an ssgan run: the classifier (= discriminator), its generator, freezing, saving.

Kept apart from `ssgan.py` so that the training loop there reads top to bottom. Two kinds of
classifier exist: one built by the architecture registry (from scratch or a `model.json` +
`model.safetensors` base model), and a user's exported program (`model.pt2` + a model.json
saying `{"format": "program", "class_names": [...]}`), which has no registry description and is
saved back in that same program format.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from ganft_core.config import SsganHyperparameters
from ganft_core.data.types import Dataset
from ganft_core.errors import ModelError, SpecError
from ganft_core.models import registry
from ganft_core.models.export import export_program
from ganft_core.models.io import fit_head, load_model, meta_for, save_model
from ganft_core.models.layers import batched_normalization
from ganft_core.models.program import ProgramClassifier, load_user_program
from ganft_core.run import iter_trainable as run_iter_trainable
from ganft_core.run import write_json

# Learning rates when the spec leaves them out (Salimans et al. 2016 code: 3e-3 for the dense
# MNIST nets, 3e-4 for the CIFAR conv nets). Fine-tuning a base model: 1e-3 for the head, and the
# backbone at `backbone_lr_scale` (0.1) of it, 1e-4 (discriminative learning rates, as in ULMFiT).
LR_SCRATCH_DENSE = 3e-3
LR_SCRATCH_CONV = 3e-4
# The narrow `convnet` from scratch (images over 16 px) trains D and its control at 1e-3, G stays at 3e-4: on
# Fashion-MNIST (2000 steps, seeds 1-3) both nets gained 2-3.5 points over 3e-4 and ssgan moved ahead of its control
# (bench/RESULTS.md, "ssgan on images: session 7 notes"). 8×8 images keep 3e-4, where it was measured.
LR_SCRATCH_CONV_LARGE = 1e-3
LR_FINE_TUNE = 1e-3

# ssgan's own defaults for a classifier built from scratch, under the spec's architecture_arguments.
# The dense D keeps Improved-GAN's noise and weight norm but is 500-250-250 wide instead of
# 1000-500-250-250-250: ~4x cheaper per step, and at least as accurate on digits (bench/RESULTS.md).
SCRATCH_ARGUMENTS: dict[str, dict[str, Any]] = {"mlp": {"hidden": [500, 250, 250]}}
# `convnet` from scratch on images over 16 px: half the registry widths, (16, 32, 64) instead of (32, 64, 128).
# A step costs ~1/3.4 of the wide net's at 28×28 on CPU. Per step the wide net is more accurate, per CPU second
# not: Fashion-MNIST seed 1 (bench/RESULTS.md, "ssgan on images: fashion"), control 80.9% after 2000 narrow
# steps (675 CPU-s for the whole job) against 82.0% after 1000 wide steps (862 CPU-s); a default job must fit
# minutes on a CPU. Up to 16 px (8×8 digits) the wide net is cheap and is kept.
NARROW_CONVNET_ABOVE_PX = 16
NARROW_CONVNET_WIDTHS = [16, 32, 64]


@dataclass
class Classifier:
    """The classifier an ssgan run starts from, and how to describe it in model.json."""

    net: nn.Module  # forward -> N×K logits, features -> N×D, head, blocks()
    is_program: bool  # a user's exported program (saved as model.pt2 + a program model.json)
    from_scratch: bool  # True when no base model was given
    head_replaced: bool = False  # the base model's head was replaced by a fresh one (other classes)
    notes: list[str] = field(default_factory=list)  # what loading changed (head replaced, ...)


def _architecture_args(name: str, train: Dataset, overrides: dict[str, Any]) -> dict[str, Any]:
    """Arguments for registry classifier `name` fitted to the data: input shape, classes, normalisation."""
    layout = train.layout
    known = {f.name for f in dataclasses.fields(registry.entry(name).args_type)}
    args: dict[str, Any] = {}
    if "in_shape" in known:
        args["in_shape"] = list(layout.shape())
    if "in_channels" in known:
        if layout.kind != "image":
            raise SpecError(
                f"architecture {name!r} needs images, the dataset holds {layout.describe()}", field="architecture"
            )
        args["in_channels"] = layout.channels
    if "small_input" in known and layout.kind == "image":
        args["small_input"] = max(layout.height, layout.width) <= 64
    args["num_classes"] = len(train.classes)
    if "mean" in known and "mean" not in overrides:
        # Normalisation lives inside the model (exported classifiers take raw inputs). Read in batches: the
        # whole sample in float64 was 2.4 GB at 64×64×3 (bench/RESULTS.md, "core: datasets at scale").
        sample = normalization_sample(train)
        rows = max(1, NORMALIZATION_BATCH_VALUES // math.prod(layout.shape()))
        args.update(batched_normalization(sample.batches(rows)))
    args.update(SCRATCH_ARGUMENTS.get(name, {}))
    if name == "convnet" and layout.kind == "image" and max(layout.height, layout.width) > NARROW_CONVNET_ABOVE_PX:
        args["widths"] = list(NARROW_CONVNET_WIDTHS)
    args.update(overrides)
    return args


NORMALIZATION_SAMPLE = 10_000  # examples the input mean/std are computed from (all, up to this many)
NORMALIZATION_BATCH_VALUES = 1 << 21  # values read (float32) and summed (float64) at a time: 8 + 16 MiB


def normalization_sample(train: Dataset) -> Dataset:
    """The examples whose mean/std become the net's input normalisation: all of them up to 10,000, else a
    seeded sample of 10,000 (a stored dataset is read in batches, never materialised whole)."""
    if len(train) <= NORMALIZATION_SAMPLE:
        return train
    pick = np.random.RandomState(0).choice(len(train), NORMALIZATION_SAMPLE, replace=False)
    return train.subset(np.sort(pick))


def value_range(train: Dataset) -> tuple[float, float]:
    """(min, max) of the examples, read in batches."""
    low, high = math.inf, -math.inf
    for part in train.batches(65_536):
        if part.size:
            low, high = min(low, float(part.min())), max(high, float(part.max()))
    return low, high


def build_classifier(hp: SsganHyperparameters, train: Dataset, base_model: Path | None) -> Classifier:
    """The starting classifier: the base model (head fitted to the dataset's classes) or a fresh registry net."""
    if base_model is None:
        name = hp.architecture or registry.default_classifier_for(train.layout)[0]
        if registry.entry(name).role != "classifier":
            raise SpecError(f"architecture {name!r} is not a classifier", field="architecture")
        args = _architecture_args(name, train, dict(hp.architecture_arguments))
        notes = []
        if name == "convnet" and "widths" not in hp.architecture_arguments and "widths" in args:
            notes.append(f"convnet widths {tuple(args['widths'])} for images over {NARROW_CONVNET_ABOVE_PX} px "
                         "(about 3.4x cheaper per step than the registry's (32, 64, 128); set "
                         "architecture_arguments.widths to change)")
        return Classifier(registry.build(name, args), is_program=False, from_scratch=True, notes=notes)
    folder = Path(base_model)
    config = _read_config(folder)
    if config.get("format") == "program":
        names = config.get("class_names")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or not names:
            raise ModelError("model.json of a program must list its class_names", field="class_names")
        program = load_user_program(folder / "model.pt2", names, layout=train.layout)
        notes = list(program.notes)
        note = fit_head(program, names, train.classes)
        return Classifier(program, is_program=True, from_scratch=False, notes=notes + ([note] if note else []),
                          head_replaced=_replaced(note))
    net, meta = load_model(folder)
    if meta.role != "classifier":
        raise ModelError(f"the base model is a {meta.role}, ssgan needs a classifier", field="base_model_id")
    if meta.input_layout and meta.input_layout != train.layout.to_dict():
        raise ModelError(
            f"the base model takes {meta.input_layout}, the dataset holds {train.layout.describe()}",
            field="base_model_id",
        )
    base_names = meta.class_names or [str(i) for i in range(cast(Any, net).head.out_features)]
    note = fit_head(net, base_names, train.classes)
    return Classifier(net, is_program=False, from_scratch=False, notes=[note] if note else [],
                      head_replaced=_replaced(note))


def _replaced(note: str | None) -> bool:
    return note is not None and note.startswith("head replaced")


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / "model.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError("the base model has no model.json", field="base_model_id") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"the base model's model.json is not valid JSON: {e}", field="base_model_id") from None
    if not isinstance(data, dict):
        raise ModelError("the base model's model.json must be a JSON object", field="base_model_id")
    return data


def resolved_lr(hp: SsganHyperparameters, clf: Classifier, train: Dataset | None = None) -> tuple[float, float]:
    """(lr_d, lr_g): the spec's values, or defaults for training from scratch vs fine-tuning (and image size)."""
    layout, arch, lr_g = train.layout if train is not None else None, getattr(clf.net, "architecture", ""), None
    if hp.lr_d is not None:
        lr_d = hp.lr_d
    elif not clf.from_scratch:
        lr_d = LR_FINE_TUNE
    elif arch == "convnet" and layout is not None and layout.kind == "image" and max(
        layout.height, layout.width
    ) > NARROW_CONVNET_ABOVE_PX:
        lr_d, lr_g = LR_SCRATCH_CONV_LARGE, LR_SCRATCH_CONV
    else:
        lr_d = LR_SCRATCH_DENSE if arch == "mlp" else LR_SCRATCH_CONV
    return lr_d, hp.lr_g if hp.lr_g is not None else (lr_g if lr_g is not None else lr_d)


def build_generator(hp: SsganHyperparameters, train: Dataset, feature_dim: int) -> nn.Module:
    """G for the run: z -> inputs shaped like the data, or (GAN-BERT) z -> D-dimensional backbone features."""
    if hp.generator_space == "feature":
        # Croce et al. 2020: one hidden layer, leaky ReLU, dropout 0.1, linear output.
        args: dict[str, Any] = {
            "out_shape": [feature_dim],
            "z_dim": hp.z_dim,
            "hidden": [feature_dim],
            "activation": "leaky_relu",
            "batch_norm": False,
            "dropout": 0.1,
            "output": "linear",
            "output_weight_norm": False,
        }
        return registry.build("mlp_g", args)
    layout = train.layout
    if layout.kind == "features":
        # Improved-GAN's MNIST G; its sigmoid output fits data in [0, 1], anything else gets a linear output.
        low, high = value_range(train)
        in_unit_range = len(train) > 0 and low >= 0.0 and high <= 1.0
        args = {"out_shape": [layout.features], "z_dim": hp.z_dim, "output": "sigmoid" if in_unit_range else "linear"}
        return registry.build("mlp_g", args)
    try:
        (name, g_args), _ = registry.default_gan_for(layout, hp.z_dim)
    except ModelError:  # odd image sizes: a dense generator works for any shape
        name, g_args = "mlp_g", {"out_shape": list(layout.shape()), "z_dim": hp.z_dim}
    return registry.build(name, g_args)


def freeze_lowest_blocks(net: nn.Module, count: int) -> list[nn.Module]:
    """Stop gradients to the lowest `count` of `net.blocks()`; returns the frozen blocks."""
    blocks: list[nn.Module] = list(cast(Any, net).blocks())
    if count > len(blocks):
        raise SpecError(
            f"freeze_blocks is {count} but the classifier has only {len(blocks)} blocks", field="freeze_blocks"
        )
    for block in blocks[:count]:
        block.requires_grad_(False)
    return blocks[:count]


def set_train_mode(net: nn.Module, frozen: list[nn.Module], *, bn_frozen: bool = False) -> None:
    """Training mode, except batch norms inside frozen blocks (all of them when `bn_frozen`) keep their
    running statistics: they normalise with them and do not update them."""
    if isinstance(net, ProgramClassifier):
        net.freeze_batch_norm = bn_frozen  # (a program's batch norms are flags in its graph)
    net.train()
    for block in [net] if bn_frozen else frozen:
        for m in block.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


@contextlib.contextmanager
def running_stats_frozen(net: nn.Module) -> Iterator[None]:
    """Batch norms in training mode still normalise with the batch's statistics, but do not fold them into their
    running ones (momentum 0): generated batches, which pass through D on their own, must not become part of the
    statistics the classifier is evaluated and exported with. (A user's program keeps its own graph's batch norms.)"""
    norms = [m for m in net.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, saved, strict=True):
            m.momentum = momentum


def optimizer_groups(net: nn.Module, backbone_scale: float) -> list[dict[str, Any]]:
    """Adam parameter groups: the backbone's trainable parameters (lr × `backbone_scale`) and the head's.

    The training loop sets each group's lr from its `scale` and, during a head warm-up, zeroes the
    groups marked `backbone`.
    """
    head = {id(p) for p in cast(Any, net).head.parameters()}
    trainable = list(run_iter_trainable(net))
    body = [p for p in trainable if id(p) not in head]
    groups = [{"params": [p for p in trainable if id(p) in head], "scale": 1.0, "backbone": False}]
    if body:
        groups.append({"params": body, "scale": backbone_scale, "backbone": True})
    return groups


def save_classifier(
    net: nn.Module, clf: Classifier, train: Dataset, out_dir: Path, stem: str, notes: list[str], *, export: bool
) -> list[str]:
    """Write `stem.safetensors` + `stem.json` (and `stem.pt2` when `export`); returns the file names."""
    net = net.eval()
    if clf.is_program:
        # A program stays a program (model.pt2 is the model; a later job loads it as its base), named
        # as the user named it; the safetensors hold the same weights under the same names.
        assert isinstance(net, ProgramClassifier)
        from safetensors.torch import save_file

        net = net.as_program()
        state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
        save_file(state, str(out_dir / f"{stem}.safetensors"))
        write_json(
            out_dir / f"{stem}.json",
            {
                "format": "program",
                "class_names": list(train.classes),
                "input_layout": train.layout.to_dict(),
                "notes": notes,
            },
        )
    else:
        meta = meta_for(net, class_names=train.classes, input_layout=train.layout.to_dict(), notes=notes)
        save_model(net, meta, out_dir, stem=stem)
    names = [f"{stem}.safetensors", f"{stem}.json"]
    if export:
        example = torch.from_numpy(np.ascontiguousarray(train.subset(np.arange(min(2, len(train)))).x)).float()
        export_program(net, example, out_dir / f"{stem}.pt2")
        names.append(f"{stem}.pt2")
    return names


def save_generator(g: nn.Module, out_dir: Path, layout: dict[str, Any], notes: list[str]) -> list[str]:
    """`generator.safetensors` + `generator.json`; `layout` is what G makes (the data's, or backbone features)."""
    meta = meta_for(g, input_layout=layout, notes=notes)
    save_model(g, meta, out_dir, stem="generator")
    return ["generator.safetensors", "generator.json"]
