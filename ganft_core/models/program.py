"""Bring your own architecture: a user's `torch.export` program (`.pt2`) as a trainable classifier.

The archive is screened first (`pt2_archive.sanitize_program`: nothing unpickled, no compiled code),
then `torch.export.load(...).module()` gives a `GraphModule` of ATen ops with the user's parameters.
We cut the graph at its last linear layer (`aten.linear` or `aten.addmm`, which must produce the
program's output): the graph up to that layer's input is `features(x)`, and the layer itself becomes
an ordinary `nn.Linear` `head`, so `replace_head` works exactly as for our own networks.

Train/eval mode. An exported graph has the mode of dropout and batch norm baked into its nodes
(`aten.dropout(x, p, train)`, `aten.batch_norm(..., training, ...)`) and `.module()` makes `.train()`
raise. torch 2.13 has no public helper for this (the pt2e `move_exported_model_to_train` helpers left
torch.ao for torchao). So `ProgramClassifier.train(mode)` rewrites those flags in the graph and
recompiles it: after `.train()` dropout is active and batch norm uses batch statistics and updates
its running statistics, after `.eval()` neither, whichever mode the user exported in. The flags
rewritten are those of `aten.dropout`, `aten.feature_dropout`, `aten.alpha_dropout`,
`aten.feature_alpha_dropout`, and `aten.batch_norm` / `aten.instance_norm` when they keep running
statistics. A program already lowered to core ATen (`run_decompositions()`) has mode-specific ops
(`native_dropout`, `_native_batch_norm_legit_no_training`, ...) instead; those run as exported and
`notes` says so.
"""

from __future__ import annotations

import copy
import functools
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import fx, nn

from ganft_core.errors import ModelError
from ganft_core.models.pt2_archive import sanitize_program
from ganft_core.models.registry import LayoutLike

aten = torch.ops.aten
_LINEAR = (aten.linear.default, aten.addmm.default)
# op -> index of its train/training/use_input_stats argument
_MODE_ARG = {
    aten.dropout.default: 2,
    aten.feature_dropout.default: 2,
    aten.alpha_dropout.default: 2,
    aten.feature_alpha_dropout.default: 2,
    aten.batch_norm.default: 5,
    aten.instance_norm.default: 5,
}
_RUNNING_STATS = (aten.batch_norm.default, aten.instance_norm.default)  # arg 3 = running_mean


class ProgramClassifier(nn.Module):
    """A user's exported classifier: forward(x) -> N×K logits, features(x) -> N×D (input of `head`)."""

    def __init__(
        self,
        body: fx.GraphModule,
        head: nn.Linear,
        input_shape: tuple[int | None, ...],
        notes: list[str],
        head_name: str = "head",
    ) -> None:
        super().__init__()
        self.body = body  # the program up to its last linear layer's input
        self.head = head
        self.head_name = head_name  # the head's module path in the user's program (see `as_program`)
        self.input_shape = input_shape  # per-dimension size, None where dynamic (the batch)
        self.notes = notes  # what loading changed or could not change, for the trainer to log
        self.freeze_batch_norm = False  # True: batch norms use their running statistics in training mode too
        self.train()

    def _check(self, x: torch.Tensor) -> None:
        if not _fits(self.input_shape[1:], tuple(x.shape[1:])):
            want = "×".join("N" if s is None else str(s) for s in self.input_shape)
            raise ModelError(f"the program takes {want} inputs, got {'×'.join(map(str, x.shape))}", field="program")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self.body(x)  # N×D

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # N×K

    def blocks(self) -> list[nn.Module]:
        """The program's submodules in the order the graph first uses them (lowest first).

        An exported graph keeps module paths but not classes, so the depth is a heuristic: the first
        of depths 1-4 with at least 3 submodules holding parameters (`layer1`, `layer2`... or `layers.0`,
        `layers.1`...), else the depth with the most.
        """
        targets = [n.target for n in self.body.graph.nodes if n.op == "get_attr"]
        best: list[str] = []
        for depth in range(1, 5):
            groups = list(dict.fromkeys(".".join(t.split(".")[:depth]) for t in targets if t.count(".") >= depth))
            if len(groups) > len(best):
                best = groups
            if len(best) >= 3:
                break
        modules = [self.body.get_submodule(name) for name in best]
        return [m for m in modules if any(True for _ in m.parameters())]

    def replace_head(self, num_classes: int) -> None:
        self.head = nn.Linear(self.head.in_features, num_classes, device=self.head.weight.device)

    def train(self, mode: bool = True) -> ProgramClassifier:
        super().train(mode)
        if _set_graph_mode(self.body.graph, mode, batch_norm_training=mode and not self.freeze_batch_norm):
            self.body.recompile()
        return self

    def as_program(self) -> fx.GraphModule:
        """A copy of the classifier as one GraphModule, for `export_program` and saving its weights.

        Its parameters keep the user's names (`trunk.0.weight`, `classify.weight`) rather than this
        wrapper's (`body.trunk.0.weight`, `head.weight`): the exported program's weights then fit
        the user's own module, and a program exported from a program exported from a program (a
        job chained on a job's output) keeps the same names, so `blocks()` finds the same blocks.
        """
        with warnings.catch_warnings():  # copying an unlifted GraphModule trips a torch pytree deprecation notice
            warnings.simplefilter("ignore", FutureWarning)
            root = copy.deepcopy(self.body)
        graph = root.graph
        output = graph.output_node()
        (features,) = cast(tuple[fx.Node], output.args[0])  # one N×D tensor, as `_cut_head` left it
        name = _add_head(root, self.head_name, copy.deepcopy(self.head))
        with graph.inserting_before(output):
            logits = graph.call_module(name, (features,))  # N×K
        output.replace_input_with(features, logits)
        graph.lint()
        root.recompile()
        return root.train(self.training)


def load_user_program(
    path: Path | str, class_names: Sequence[str], *, layout: LayoutLike | None = None
) -> ProgramClassifier:
    """Load a user's `.pt2` classifier as a `ProgramClassifier` with `len(class_names)` outputs.

    A head with another class count is replaced (noted in `.notes`). ModelError when the file is not
    a safe torch.export archive, takes other than one tensor input of `layout`'s shape, does not return
    one N×K tensor, or has no final linear layer producing that output.
    """
    path = Path(path)
    if not class_names:
        raise ModelError("a program needs at least one class name", field="class_names")
    with tempfile.TemporaryDirectory(prefix="ganft-program-") as tmp:
        clean = Path(tmp) / "program.pt2"
        sanitize_program(path, clean)
        try:
            program = torch.export.load(str(clean))
        except Exception as e:  # deserialisation raises many types; the user needs one message
            raise ModelError(
                f"the program cannot be loaded by torch.export.load: {type(e).__name__}: {e}", field="program"
            ) from None
    gm = program.module(check_guards=False)
    input_shape = _input_shape(gm)
    if input_shape[0] is not None:
        gm = _with_dynamic_batch(gm, program)
        input_shape = (None, *input_shape[1:])
    if layout is not None and not _fits(input_shape[1:], layout.shape()):
        want = "×".join(map(str, layout.shape()))
        got = "×".join("N" if s is None else str(s) for s in input_shape)
        raise ModelError(f"the program takes {got} inputs but the dataset has N×{want}", field="program")
    # .module() forbids train()/eval() and checks inputs in hooks; we do both ourselves.
    for name in ("train", "eval"):
        gm.__dict__.pop(name, None)
    gm._forward_pre_hooks.clear()
    gm._forward_hooks.clear()
    head, head_name = _cut_head(gm)
    for p in gm.parameters():
        p.requires_grad_(True)
    notes = _fixed_mode_notes(gm.graph)
    classifier = ProgramClassifier(gm, head, input_shape, notes, head_name)
    if head.out_features != len(class_names):
        notes.append(f"head replaced: {head.out_features} -> {len(class_names)} classes")
        classifier.replace_head(len(class_names))
    return classifier


def _fits(want: Sequence[int | None], got: Sequence[int]) -> bool:
    """Same rank, and every static size (not None) equal."""
    return len(want) == len(got) and all(w is None or w == g for w, g in zip(want, got, strict=True))


# Graph surgery ------------------------------------------------------------------------------------


def _input_shape(gm: fx.GraphModule) -> tuple[int | None, ...]:
    inputs = [n for n in gm.graph.nodes if n.op == "placeholder"]
    vals = [n.meta.get("val") for n in inputs]
    if len(inputs) != 1 or not isinstance(vals[0], torch.Tensor):
        raise ModelError(
            f"the program must take exactly one tensor input, it takes {len(inputs)} inputs", field="program"
        )
    if vals[0].dtype != torch.float32:
        raise ModelError(f"the program must take float32 inputs, it takes {vals[0].dtype}", field="program")
    if vals[0].dim() not in (2, 4):
        raise ModelError(
            f"the program must take N×F or N×C×H×W inputs, it takes {vals[0].dim()}-d inputs", field="program"
        )
    return tuple(d if isinstance(d, int) else None for d in vals[0].shape)


def _with_dynamic_batch(gm: fx.GraphModule, program: torch.export.ExportedProgram) -> fx.GraphModule:
    """Re-export a program whose batch size was fixed at export time with a dynamic batch dimension."""
    (example,), _ = program.example_inputs
    example = example.expand(max(2, example.shape[0]), *example.shape[1:]).contiguous()
    try:
        again = torch.export.export(gm, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    except Exception as e:
        raise ModelError(
            "the program was exported with a fixed batch size and does not work with others; export it with "
            "dynamic_shapes=({0: torch.export.Dim('batch')},)",
            field="program",
        ) from e
    return again.module(check_guards=False)


def _cut_head(gm: fx.GraphModule) -> tuple[nn.Linear, str]:
    """Remove the final linear layer from `gm` (which then returns its input); return it as nn.Linear,
    with its module path in the program ("head" when its weight is computed rather than a parameter)."""
    graph = gm.graph
    output = graph.output_node()
    outs = output.args[0]
    if not isinstance(outs, (tuple, list)) or len(outs) != 1 or not isinstance(outs[0], fx.Node):
        raise ModelError("the program must return a single logits tensor", field="program")
    out = outs[0]
    val = out.meta.get("val")
    if not isinstance(val, torch.Tensor) or val.dim() != 2:
        shape = getattr(val, "shape", None)
        raise ModelError(f"the program must return N×K logits, it returns shape {shape}", field="program")
    linears = [n for n in graph.nodes if n.op == "call_function" and n.target in _LINEAR]
    if not linears:
        raise ModelError("the program has no linear layer to use as the classification head", field="program")
    last = linears[-1]
    if last is not out:
        raise ModelError(
            "the program's output must be its last linear layer (raw logits: no softmax or other operation after it)",
            field="program",
        )
    x, weight, bias = _linear_parts(gm, last)
    w_node = last.args[1] if last.target == aten.linear.default else None
    name = "head"
    if isinstance(w_node, fx.Node) and w_node.op == "get_attr" and "." in str(w_node.target):
        name = str(w_node.target).rpartition(".")[0]
    head = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        head.weight.copy_(weight)
        if bias is not None:
            head.bias.copy_(bias)
    output.replace_input_with(last, x)
    _erase_unused(gm, [last])
    return head, name


def _add_head(gm: fx.GraphModule, preferred: str, head: nn.Module) -> str:
    """Add `head` to `gm` at path `preferred` when nothing is there (`_cut_head` removed the user's
    layer unless its weights were tied elsewhere), else at a free top-level name; returns the path."""
    try:
        taken = functools.reduce(getattr, preferred.split("."), gm) is not None
    except AttributeError:
        taken = False
    if not taken and gm.add_submodule(preferred, head):  # creates missing parents as plain Modules
        return preferred
    name, i = "head", 0
    while hasattr(gm, name):
        i += 1
        name = f"head_{i}"
    gm.add_submodule(name, head)
    return name


def _linear_parts(gm: fx.GraphModule, node: fx.Node) -> tuple[fx.Node, torch.Tensor, torch.Tensor | None]:
    """(input node, weight K×D, bias K or None) of an aten.linear / aten.addmm node.

    Weights may be computed from parameters (weight norm): they are evaluated once, so the head
    becomes a plain nn.Linear with the same function.
    """
    if node.target == aten.linear.default:
        x, w_node, b_node = (list(node.args) + [None])[:3]
        weight = _evaluate(gm, w_node)
    else:
        if node.kwargs:
            raise ModelError(
                "the program's last addmm has beta/alpha scaling; export a plain nn.Linear head", field="program"
            )
        b_node, x, w_t = node.args
        weight = _evaluate(gm, w_t).T  # addmm(bias, x, Wᵀ)
    bias = None if b_node is None else _evaluate(gm, b_node)
    if not isinstance(x, fx.Node) or weight.dim() != 2 or (bias is not None and bias.shape != weight.shape[:1]):
        raise ModelError("the program's last linear layer is not a plain dense layer", field="program")
    return x, weight.detach().clone(), None if bias is None else bias.detach().clone()


@torch.no_grad()
def _evaluate(gm: fx.GraphModule, node: Any) -> torch.Tensor:
    """The value of a node that depends on parameters only (not on the input)."""
    if not isinstance(node, fx.Node):
        raise ModelError("the program's last linear layer has no weight tensor", field="program")
    if node.op == "get_attr":
        value = functools.reduce(getattr, str(node.target).split("."), gm)
        if not isinstance(value, torch.Tensor):
            raise ModelError("the program's last linear layer has no weight tensor", field="program")
        return value
    if node.op != "call_function" or not callable(node.target):
        raise ModelError("the weights of the program's last linear layer depend on its input", field="program")
    args = fx.node.map_arg(node.args, lambda n: _evaluate(gm, n))
    kwargs = fx.node.map_arg(node.kwargs, lambda n: _evaluate(gm, n))
    return node.target(*args, **kwargs)


def _erase_unused(gm: fx.GraphModule, roots: list[fx.Node]) -> None:
    """Erase `roots` and, transitively, the producers (weights, their transforms) only they used."""
    graph = gm.graph
    pending = list(roots)
    dropped: set[str] = set()
    while pending:
        node = pending.pop()
        if node.users or node.op not in ("get_attr", "call_function") or (node not in roots and node.is_impure()):
            continue
        pending.extend(node.all_input_nodes)
        if node.op == "get_attr":
            dropped.add(str(node.target))
        graph.erase_node(node)
    still_used = {n.target for n in graph.nodes if n.op == "get_attr"}
    for target in dropped - still_used:
        owner_name, _, leaf = target.rpartition(".")
        delattr(gm.get_submodule(owner_name), leaf)
    gm.delete_all_unused_submodules()
    graph.lint()
    gm.recompile()


def _set_graph_mode(graph: fx.Graph, training: bool, *, batch_norm_training: bool | None = None) -> bool:
    """Set the train flag of every mode-dependent node to `training` (that of batch/instance norms with
    running statistics to `batch_norm_training`, default `training`); True if any changed."""
    changed = False
    for node in graph.nodes:
        index = _MODE_ARG.get(node.target) if node.op == "call_function" else None
        if index is None or len(node.args) <= index:
            continue
        want = training
        if node.target in _RUNNING_STATS:
            if node.args[3] is None:
                continue  # no running statistics: batch statistics in both modes
            want = training if batch_norm_training is None else batch_norm_training
        if node.args[index] is not want:
            node.update_arg(index, want)
            changed = True
    return changed


def _fixed_mode_notes(graph: fx.Graph) -> list[str]:
    fixed = sorted(
        {
            str(n.target)
            for n in graph.nodes
            if n.op == "call_function" and ("native_dropout" in str(n.target) or "native_batch_norm" in str(n.target))
        }
    )
    if not fixed:
        return []
    return [
        f"the program holds decomposed ops whose train/eval behaviour was fixed at export ({', '.join(fixed)}); "
        "they run as exported"
    ]
