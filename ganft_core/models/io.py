"""Model folders: `stem.safetensors` (weights) + `stem.json` (`ModelMeta`: how to rebuild them).

Weights are safetensors only: nothing is ever unpickled. A file that is really a pickle or a zip
(`torch.save`, TorchScript) is refused by its header before any parser sees it. Loading checks
names, shapes and finiteness and says what is wrong in a `ModelError`, never a torch traceback.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ganft_core.errors import ModelError
from ganft_core.models import registry

FORMAT_VERSION = 1
MAX_HEADER_BYTES = 100 * 2**20  # a safetensors JSON header larger than this is not a real model


class ModelMeta(BaseModel):
    """What `model.json` holds next to `model.safetensors`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    architecture: str  # a name in registry.ARCHITECTURES
    arguments: dict[str, Any]  # its arguments (all of them, defaults included, when we write the file)
    class_names: list[str] = []  # classifier: index = class; empty for generators and GAN discriminators
    input_layout: dict[str, Any] = {}  # Layout.to_dict() of the data: {"kind": "image", "channels": ...}
    role: Literal["classifier", "generator", "discriminator"]
    normalization: dict[str, list[float]] | None = None  # {"mean", "std"} applied inside the model; informative
    format_version: Literal[1] = 1  # FORMAT_VERSION
    notes: list[str] = []  # human remarks, e.g. "head replaced: 10 -> 5 classes"


def meta_for(
    module: nn.Module,
    *,
    class_names: Sequence[str] = (),
    input_layout: Mapping[str, Any] | None = None,
    notes: Sequence[str] = (),
) -> ModelMeta:
    """The ModelMeta describing a registry-built `module` as it is now (after any replace_head)."""
    name, arguments = registry.current_arguments(module)
    normalization = None
    if "mean" in arguments:
        normalization = {"mean": list(arguments["mean"]), "std": list(arguments["std"])}
    return ModelMeta(
        architecture=name,
        arguments=arguments,
        class_names=list(class_names),
        input_layout=dict(input_layout or {}),
        role=registry.entry(name).role,
        normalization=normalization,
        notes=list(notes),
    )


def save_model(module: nn.Module, meta: ModelMeta, folder: Path | str, stem: str = "model") -> None:
    """Write `stem.safetensors` and `stem.json` atomically (tmp + os.replace), weights first.

    The state_dict is checked against a shape-only build of `meta` first, so a model.json that
    would not load again (e.g. num_classes left stale after replace_head) fails here, not for users.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    _check_state(_expected_state(meta), state, source="the module")
    _check_finite(state, source="the module")
    if meta.role == "classifier" and meta.class_names and len(meta.class_names) != _num_classes(meta):
        raise ModelError(f"{len(meta.class_names)} class names for a {_num_classes(meta)}-class model")
    weights = folder / f"{stem}.safetensors"
    _atomic_write(weights, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    text = meta.model_dump_json(indent=2)
    _atomic_write(folder / f"{stem}.json", lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))


def read_meta(folder: Path | str, stem: str = "model") -> ModelMeta:
    """Parse `stem.json`; a missing file or a bad field is a ModelError naming it."""
    path = Path(folder) / f"{stem}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{path.name} is missing", field="config") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{path.name} is not valid JSON: {e}", field="config") from None
    try:
        meta = ModelMeta.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "config"
        raise ModelError(f"{path.name}: {where}: {err['msg']}", field=where) from None
    registry.entry(meta.architecture)  # unknown names fail here, listing the known ones
    return meta


def load_model(
    folder: Path | str, stem: str = "model", *, device: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelMeta]:
    """Build the module `stem.json` describes and load `stem.safetensors` into it (strict)."""
    meta = read_meta(folder, stem)
    module = registry.build(meta.architecture, meta.arguments)
    state = read_weights(Path(folder) / f"{stem}.safetensors")
    _check_state({k: v.shape for k, v in module.state_dict().items()}, state, source=f"{stem}.safetensors")
    module.load_state_dict(state, strict=True)
    return module.to(device), meta


def read_weights(path: Path | str) -> dict[str, torch.Tensor]:
    """A safetensors file as a state_dict, refusing pickles, zips and non-finite values."""
    path = Path(path)
    _check_safetensors_header(path)
    try:
        state = load_file(str(path))
    except (SafetensorError, ValueError, OSError) as e:
        raise ModelError(f"{path.name} is not a readable safetensors file: {e}", field="weights") from None
    _check_finite(state, source=path.name)
    return state


def load_weights_into(module: nn.Module, path: Path | str, *, allow_head_mismatch: bool = False) -> str | None:
    """Load a safetensors state_dict into a built `module` (names and shapes must match).

    With `allow_head_mismatch`, a head whose class count differs is left freshly initialised and the
    returned message says so ("head replaced: 10 -> 5 classes"); the trainer logs it. Otherwise None.
    """
    state = read_weights(path)
    expected = {k: v.shape for k, v in module.state_dict().items()}
    message = None
    head = getattr(module, "head", None)
    if allow_head_mismatch and isinstance(head, nn.Module):
        prefix = next(name for name, m in module.named_modules() if m is head) + "."
        theirs = {k: v for k, v in state.items() if k.startswith(prefix)}
        ours = {k: s for k, s in expected.items() if k.startswith(prefix)}
        if set(theirs) == set(ours) and any(theirs[k].shape != ours[k] for k in ours):
            old = _out_features(theirs)
            message = f"head replaced: {old} -> {head.out_features} classes"  # type: ignore[union-attr]
            state = {k: v for k, v in state.items() if not k.startswith(prefix)}
            state.update({k: v for k, v in module.state_dict().items() if k.startswith(prefix)})
    _check_state(expected, state, source=Path(path).name)
    module.load_state_dict(state, strict=True)
    return message


def fit_head(module: nn.Module, base_classes: Sequence[str], classes: Sequence[str]) -> str | None:
    """Make a loaded classifier's head answer for `classes` (the dataset's), given the base model's.

    Same classes: nothing. Same set in another order: the head rows are permuted (the learned head is
    kept). Otherwise the head is replaced and the returned message says so for the trainer to log.
    """
    head = _head(module)
    base, new = list(base_classes), list(classes)
    if base == new:
        return None
    if sorted(base) == sorted(new) and len(set(new)) == len(new):
        order = torch.tensor([base.index(c) for c in new])
        with torch.no_grad():
            for p in head.parameters():  # plain or weight-normed Linear: every tensor is K-first
                p.copy_(p[order])
        return "head rows reordered to match the dataset's class order"
    old = head.out_features
    module.replace_head(len(new))  # type: ignore[operator]
    return f"head replaced: {old} -> {len(new)} classes"


# Checks ------------------------------------------------------------------------------------------


def _expected_state(meta: ModelMeta) -> dict[str, torch.Size]:
    """Key -> shape of the module `meta` describes, built on the meta device (no memory, no init)."""
    with torch.device("meta"):
        module = registry.build(meta.architecture, meta.arguments)
    return {k: v.shape for k, v in module.state_dict().items()}


def _check_state(expected: Mapping[str, torch.Size], state: Mapping[str, torch.Tensor], *, source: str) -> None:
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(s)})"
        for k, s in expected.items()
        if k in state and state[k].shape != s
    ]
    problems = []
    if missing:
        problems.append(f"missing {_first(missing)}")
    if unexpected:
        problems.append(f"unexpected {_first(unexpected)}")
    if wrong:
        problems.append(f"wrong shape {_first(wrong)}")
    if problems:
        raise ModelError(f"{source} does not fit the architecture: " + "; ".join(problems), field="weights")


def _check_finite(state: Mapping[str, torch.Tensor], *, source: str) -> None:
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ModelError(f"{source} holds NaN or infinite values in {_first(bad)}", field="weights")


def _check_safetensors_header(path: Path) -> None:
    """A safetensors file is a little-endian u64 header length, then that much JSON starting with '{'."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(9)
    except FileNotFoundError:
        raise ModelError(f"{path.name} is missing", field="weights") from None
    if len(head) == 9:
        (n,) = struct.unpack("<Q", head[:8])
        if n <= min(MAX_HEADER_BYTES, size - 8) and head[8:9] == b"{":
            return
    if head.startswith(b"PK"):
        raise ModelError(
            f"{path.name} is a zip archive (torch.save or TorchScript), not safetensors; "
            "save the state_dict with safetensors.torch.save_file",
            field="weights",
        )
    if head[:1] == b"\x80":
        raise ModelError(f"{path.name} is a Python pickle, not safetensors; pickles are never loaded", field="weights")
    raise ModelError(f"{path.name} is not a safetensors file (bad header)", field="weights")


def _atomic_write(path: Path, write: Any) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _head(module: nn.Module) -> nn.Linear:
    head = getattr(module, "head", None)
    if not isinstance(head, nn.Linear):
        raise ModelError("the model is not a classifier with a linear head")
    return head


def _num_classes(meta: ModelMeta) -> int:
    return int(meta.arguments.get("num_classes", 0))


def _out_features(head_state: Mapping[str, torch.Tensor]) -> int:
    return max(v.shape[0] for v in head_state.values() if v.dim() >= 1)


def _first(items: Sequence[str], n: int = 5) -> str:
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more
