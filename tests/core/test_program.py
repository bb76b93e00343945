"""Bring your own architecture: a user's torch.export program as a trainable classifier."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from ganft_core.errors import ModelError
from ganft_core.models.export import export_program
from ganft_core.models.program import ProgramClassifier, load_user_program
from ganft_core.models.pt2_archive import sanitize_program

CLASSES = ["zero", "one", "two"]


class UserCNN(nn.Module):
    """A classifier we know nothing about: conv, batch norm, dropout, two linear layers."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.fc1 = nn.Linear(4 * 4 * 4, 16)
        self.fc2 = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)  # N×4×4×4
        x = torch.relu(self.fc1(x.flatten(1)))  # N×16
        return self.fc2(self.drop(x))  # N×K


def export_user(
    module: nn.Module,
    path: Path,
    shape: tuple[int, ...] = (1, 8, 8),
    *,
    train: bool = False,
    dynamic: bool = True,
    decompose: bool = False,
) -> Path:
    """What a user does: torch.export.export + torch.export.save."""
    module.train(train)
    dims = ({0: torch.export.Dim("batch")},) if dynamic else None
    program = torch.export.export(module, (torch.rand(4, *shape),), dynamic_shapes=dims)
    if decompose:
        program = program.run_decompositions()
    torch.export.save(program, path)
    return path


@pytest.fixture(scope="module")
def user_pt2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, UserCNN]:
    torch.manual_seed(0)
    net = UserCNN()
    with torch.no_grad():  # non-trivial running statistics
        net.train()(torch.rand(16, 1, 8, 8) * 3)
    return export_user(net, tmp_path_factory.mktemp("user") / "user.pt2"), net.eval()


FRESH_LOAD = """
import sys
for name in ("ganft_core", "ganft", "api", "worker"):
    sys.modules[name] = None  # any import of ours now fails
import torch
x = torch.load("inputs.pt", weights_only=True)
with torch.no_grad():
    torch.save(torch.export.load("model.pt2").module()(x), "outputs.pt")
"""


def run_fresh(workdir: Path, x: torch.Tensor) -> torch.Tensor:
    """`workdir/model.pt2` on `x` in a fresh interpreter outside the repository, without ganft."""
    torch.save(x, workdir / "inputs.pt")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    subprocess.run(
        [sys.executable, "-I", "-c", textwrap.dedent(FRESH_LOAD)],
        cwd=workdir,
        env=env,
        check=True,
        timeout=300,
        capture_output=True,
    )
    return torch.load(workdir / "outputs.pt", weights_only=True)


# Using a program --------------------------------------------------------------------------------


def test_user_program_fine_tunes_and_reexports(user_pt2: tuple[Path, UserCNN], tmp_path: Path) -> None:
    path, original = user_pt2
    clf = load_user_program(path, CLASSES)
    assert isinstance(clf, ProgramClassifier) and clf.notes == []
    x = torch.rand(6, 1, 8, 8)
    clf.eval()
    torch.testing.assert_close(clf(x), original(x))
    assert clf.features(x).shape == (6, 16) and isinstance(clf.head, nn.Linear)
    torch.testing.assert_close(clf.head(clf.features(x)), clf(x))
    assert len(clf.blocks()) == 3  # conv, bn, fc1 in graph order (fc2 became the head)

    # Training mode: dropout on, batch statistics used and running statistics updated.
    clf.train()
    running = clf.body.get_buffer("bn.running_mean").clone()
    assert not torch.allclose(clf(x), clf(x))
    assert not torch.allclose(clf.body.get_buffer("bn.running_mean"), running)
    # Eval mode: deterministic, running statistics frozen.
    clf.eval()
    running = clf.body.get_buffer("bn.running_mean").clone()
    torch.testing.assert_close(clf(x), clf(x))
    torch.testing.assert_close(clf.body.get_buffer("bn.running_mean"), running)

    # A few optimiser steps move every parameter, the backbone's included.
    clf.train()
    before = {n: p.detach().clone() for n, p in clf.named_parameters()}
    assert all(p.requires_grad for p in clf.parameters())
    opt = torch.optim.Adam(clf.parameters(), lr=1e-2)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    for _ in range(5):
        opt.zero_grad()
        nn.functional.cross_entropy(clf(x), y).backward()
        opt.step()
    assert all(not torch.equal(p, before[n]) for n, p in clf.named_parameters())

    # Re-export and compare with a fresh process that has no ganft.
    clf.eval()
    export_program(clf, x, tmp_path / "model.pt2")
    x_new = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        want = clf(x_new)
    torch.testing.assert_close(run_fresh(tmp_path, x_new), want, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(want, original(x_new))  # it really is the fine-tuned program


def test_head_is_replaced_for_another_class_count(user_pt2: tuple[Path, UserCNN]) -> None:
    clf = load_user_program(user_pt2[0], ["a", "b", "c", "d", "e"])
    assert clf.notes == ["head replaced: 3 -> 5 classes"]
    assert clf(torch.rand(2, 1, 8, 8)).shape == (2, 5)
    clf.replace_head(2)
    assert clf(torch.rand(2, 1, 8, 8)).shape == (2, 2)


def test_a_program_exported_in_train_mode_evaluates_deterministically(tmp_path: Path) -> None:
    torch.manual_seed(1)
    net = UserCNN()
    clf = load_user_program(export_user(net, tmp_path / "train.pt2", train=True), CLASSES)
    x = torch.rand(4, 1, 8, 8)
    clf.eval()
    torch.testing.assert_close(clf(x), net.eval()(x))


def test_a_fixed_batch_program_is_made_dynamic(tmp_path: Path) -> None:
    net = UserCNN().eval()
    clf = load_user_program(export_user(net, tmp_path / "fixed.pt2", dynamic=False), CLASSES).eval()
    assert clf.input_shape == (None, 1, 8, 8)
    x = torch.rand(7, 1, 8, 8)
    torch.testing.assert_close(clf(x), net(x))


def test_a_decomposed_program_runs_as_exported_and_says_so(tmp_path: Path) -> None:
    net = UserCNN().eval()
    clf = load_user_program(export_user(net, tmp_path / "core.pt2", decompose=True), CLASSES)
    assert clf.notes and "fixed at export" in clf.notes[0]
    x = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(clf.eval()(x), net(x))  # the final addmm was found and cut
    assert clf.features(x).shape == (3, 16)


@dataclass(frozen=True)
class _Layout:
    kind: str
    channels: int = 0
    height: int = 0
    width: int = 0
    features: int = 0

    def shape(self) -> tuple[int, ...]:
        return (self.channels, self.height, self.width) if self.kind == "image" else (self.features,)


def test_input_shape_is_checked(user_pt2: tuple[Path, UserCNN]) -> None:
    with pytest.raises(ModelError, match=r"takes N×1×8×8 inputs but the dataset has N×3×8×8"):
        load_user_program(user_pt2[0], CLASSES, layout=_Layout("image", 3, 8, 8))
    clf = load_user_program(user_pt2[0], CLASSES, layout=_Layout("image", 1, 8, 8))
    with pytest.raises(ModelError, match="takes N×1×8×8 inputs, got 2×64"):
        clf(torch.rand(2, 64))


# Programs that cannot be used -------------------------------------------------------------------


class Softmaxed(UserCNN):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(super().forward(x), dim=1)


class NoLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))


class PerPixel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)  # N×1×8×3


class TwoOutputs(UserCNN):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        y = super().forward(x)
        return y, y


class Vectors(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.view(x.shape[0], 5, -1).mean(2))  # N×5×L


@pytest.mark.parametrize(
    ("module", "shape", "message"),
    [
        (Softmaxed(), (1, 8, 8), "must be its last linear layer"),
        (NoLinear(), (1, 8, 8), "no linear layer"),
        (PerPixel(), (1, 8, 8), "must return N×K logits"),
        (TwoOutputs(), (1, 8, 8), "single logits tensor"),
        (Vectors(), (5, 4), "N×F or N×C×H×W inputs"),
    ],
)
def test_unusable_programs_are_model_errors(
    tmp_path: Path, module: nn.Module, shape: tuple[int, ...], message: str
) -> None:
    path = export_user(module, tmp_path / "bad.pt2", shape)
    with pytest.raises(ModelError, match=message) as e:
        load_user_program(path, CLASSES)
    assert e.value.code == "invalid_model" and e.value.field == "program"


# Hostile or foreign files -----------------------------------------------------------------------


def _rewrite(
    src: Path, dst: Path, change: Callable[[str, bytes], bytes | None], extra: dict[str, bytes] | None = None
) -> Path:
    """Copy a .pt2 zip entry by entry through `change(name, data)` (None drops the entry)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        root = zin.namelist()[0].split("/")[0]
        for name in zin.namelist():
            data = change(name.split("/", 1)[1], zin.read(name))
            if data is not None:
                zout.writestr(name, data)
        for name, data in (extra or {}).items():
            zout.writestr(f"{root}/{name}", data)
    return dst


def _edit_json(target: str, edit: Callable[[dict[str, Any]], object]) -> Callable[[str, bytes], bytes]:
    """A change of the archive's file `target`: `edit` changes its JSON in place (what it returns is ignored)."""

    def change(name: str, data: bytes) -> bytes:
        if name != target:
            return data
        obj = json.loads(data)
        edit(obj)
        return json.dumps(obj).encode()

    return change


def _first_node(obj: dict) -> dict:
    return obj["graph_module"]["graph"]["nodes"][0]


def _torch_save(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _set_expr(obj: object, expr: str) -> int:
    """Replace every symbolic shape expression in the graph JSON; returns how many there were."""
    count = 0
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key == "expr_str":
                obj[key] = expr
                count += 1
            else:
                count += _set_expr(value, expr)
    elif isinstance(obj, list):
        count += sum(_set_expr(v, expr) for v in obj)
    return count


HOSTILE = {
    "aotinductor": (lambda n, d: d, {"data/aotinductor/model/model.so": b"\x7fELF"}, "compiled code"),
    "pickled weight": (
        _edit_json(
            "data/weights/model_weights_config.json", lambda o: next(iter(o["config"].values())).update(use_pickle=True)
        ),
        None,
        "pickled or custom object",
    ),
    "pickled sample inputs": (
        lambda n, d: _torch_save({"x": nn.Linear(1, 1)}) if n.startswith("data/sample") else d,
        None,
        "sample inputs are not plain tensors",
    ),
    "callable target": (
        _edit_json("models/model.json", lambda o: _first_node(o).update(target="torch.os.getpid")),
        None,
        "calls 'torch.os.getpid'",
    ),
    "file op target": (
        _edit_json("models/model.json", lambda o: _first_node(o).update(target="torch.ops.aten.from_file.default")),
        None,
        "only ATen operators",
    ),
    "evaluated expression": (
        _edit_json(
            "models/model.json", lambda o: _set_expr(o, "__import__('os').getpid()") > 0 or pytest.fail("no expression")
        ),
        None,
        "unexpected shape expression",
    ),
    "pytree import": (
        _edit_json(
            "models/model.json",
            lambda o: o["graph_module"]["module_call_graph"][0]["signature"].update(
                out_spec='[1, {"type": "collections.defaultdict", "context": '
                '"{\\"default_factory_module\\": \\"os\\"}", "children_spec": []}]'
            ),
        ),
        None,
        "names a Python module",
    ),
    "unknown entry": (
        lambda n, d: d,
        {"data/weights/model.pt": _torch_save({"w": torch.zeros(1)})},
        "unexpected entry",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archives_are_refused_before_torch_reads_them(
    user_pt2: tuple[Path, UserCNN], tmp_path: Path, case: str
) -> None:
    change, extra, message = HOSTILE[case]
    bad = _rewrite(user_pt2[0], tmp_path / "bad.pt2", change, extra)
    with pytest.raises(ModelError, match=message):
        load_user_program(bad, CLASSES)


def test_foreign_files_are_refused(tmp_path: Path) -> None:
    net = UserCNN().eval()
    torch.jit.trace(net, torch.rand(2, 1, 8, 8)).save(str(tmp_path / "script.pt2"))
    with pytest.raises(ModelError, match="TorchScript"):
        load_user_program(tmp_path / "script.pt2", CLASSES)
    (tmp_path / "pickle.pt2").write_bytes(_torch_save(net.state_dict()))
    with pytest.raises(ModelError, match="torch.save pickle"):
        load_user_program(tmp_path / "pickle.pt2", CLASSES)
    (tmp_path / "junk.pt2").write_bytes(b"not a zip at all" * 10)
    with pytest.raises(ModelError, match="not a torch.export program"):
        load_user_program(tmp_path / "junk.pt2", CLASSES)


def test_sanitized_copy_drops_guard_code(user_pt2: tuple[Path, UserCNN], tmp_path: Path) -> None:
    evil = _rewrite(
        user_pt2[0],
        tmp_path / "guards.pt2",
        _edit_json("models/model.json", lambda o: o.update(guards_code=["open('pwned', 'w')"])),
    )
    sanitize_program(evil, tmp_path / "clean.pt2")
    with zipfile.ZipFile(tmp_path / "clean.pt2") as zf:
        graph = next(n for n in zf.namelist() if n.endswith("models/model.json"))
        assert json.loads(zf.read(graph))["guards_code"] == []
    clf = load_user_program(evil, CLASSES)
    assert clf(torch.rand(2, 1, 8, 8)).shape == (2, 3)
