"""Weights I/O: model.safetensors + model.json written atomically, loaded strictly, hostile files refused."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ganft_core.errors import ModelError
from ganft_core.models import registry
from ganft_core.models.io import (
    ModelMeta,
    fit_head,
    load_model,
    load_weights_into,
    meta_for,
    read_meta,
    save_model,
)
from ganft_core.models.mlp import MLP
from ganft_core.models.resnet import ResNet18
from tests.core.nets import build_as

ARGS = {"in_shape": [6], "num_classes": 3, "hidden": [8, 8]}
CLASSES = ["cat", "dog", "emu"]
LAYOUT = {"kind": "features", "features": 6}

StateChange = Callable[[dict[str, torch.Tensor]], object]  # edits a state_dict in place


def _saved(tmp_path: Path, stem: str = "model") -> MLP:
    torch.manual_seed(0)
    net = build_as(MLP, "mlp", ARGS)
    save_model(net, meta_for(net, class_names=CLASSES, input_layout=LAYOUT), tmp_path, stem=stem)
    return net


def test_round_trip_restores_weights_and_meta(tmp_path: Path) -> None:
    net = _saved(tmp_path, stem="classifier")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classifier.json", "classifier.safetensors"]  # no tmp left
    loaded, meta = load_model(tmp_path, stem="classifier")
    assert meta.architecture == "mlp" and meta.role == "classifier" and meta.class_names == CLASSES
    assert meta.input_layout == LAYOUT and meta.format_version == 1
    assert meta.normalization == {"mean": [], "std": []}
    for (k, a), (k2, b) in zip(net.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)
    x = torch.randn(4, 6)
    torch.testing.assert_close(net.eval()(x), loaded.eval()(x))
    on_disk = json.loads((tmp_path / "classifier.json").read_text())
    assert on_disk["arguments"]["hidden"] == [8, 8] and on_disk["arguments"]["weight_norm"] is True


def test_generator_round_trip(tmp_path: Path) -> None:
    g = registry.build("conv_g", {"z_dim": 4, "base": 4})
    save_model(g, meta_for(g), tmp_path, stem="generator")
    loaded, meta = load_model(tmp_path, stem="generator")
    assert meta.role == "generator" and loaded.z_dim == 4


def test_save_refuses_a_meta_that_would_not_load(tmp_path: Path) -> None:
    net = build_as(MLP, "mlp", ARGS)
    stale = meta_for(net, class_names=CLASSES)
    net.replace_head(5)  # the meta still says 3 classes
    with pytest.raises(ModelError, match="wrong shape head"):
        save_model(net, stale, tmp_path)
    with pytest.raises(ModelError, match="2 class names for a 5-class model"):
        save_model(net, meta_for(net, class_names=["a", "b"]), tmp_path)
    assert not list(tmp_path.iterdir())


def test_save_refuses_non_finite_weights(tmp_path: Path) -> None:
    net = build_as(MLP, "mlp", ARGS)
    assert isinstance(net.head, torch.nn.Linear)  # (weight-normed: a parametrized Linear)
    with torch.no_grad():
        net.head.bias[0] = float("nan")
    with pytest.raises(ModelError, match="NaN or infinite"):
        save_model(net, meta_for(net), tmp_path)


def _rewrite_weights(tmp_path: Path, change: StateChange) -> None:
    path = tmp_path / "model.safetensors"
    state = dict(registry.build("mlp", ARGS).state_dict())
    change(state)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.pop("head.bias"), "missing head.bias"),
        (lambda s: s.update(extra=torch.zeros(2)), "unexpected extra"),
        (lambda s: s.update({"head.bias": torch.zeros(4)}), r"wrong shape head.bias \(4,\) \(expected \(3,\)\)"),
        (lambda s: s.update({"head.bias": torch.tensor([0.0, float("inf"), 0.0])}), "NaN or infinite.*head.bias"),
    ],
)
def test_load_checks_names_shapes_and_values(tmp_path: Path, change: StateChange, message: str) -> None:
    _saved(tmp_path)
    _rewrite_weights(tmp_path, change)
    with pytest.raises(ModelError, match=message) as e:
        load_model(tmp_path)
    assert e.value.code == "invalid_model"


def _torch_save_bytes() -> bytes:
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buf)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (pickle.dumps({"w": [1.0, 2.0]}), "Python pickle"),
        (_torch_save_bytes(), "zip archive"),
        (b"\x10\x00\x00\x00\x00\x00\x00\x00[not json]......", "bad header"),
        (b"abc", "bad header"),
        (b"\xff" * 64, "bad header"),
    ],
)
def test_load_refuses_files_that_are_not_safetensors(tmp_path: Path, content: bytes, message: str) -> None:
    _saved(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(content)
    with pytest.raises(ModelError, match=message):
        load_model(tmp_path)


def test_load_refuses_a_truncated_file(tmp_path: Path) -> None:
    _saved(tmp_path)
    path = tmp_path / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ModelError, match="safetensors"):
        load_model(tmp_path)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda m: m.update(architecture="vgg"), "architecture"),
        (lambda m: m.update(colour="red"), "colour"),
        (lambda m: m.update(role="critic"), "role"),
        (lambda m: m.update(format_version=2), "format_version"),
        (lambda m: m["arguments"].update(hidden="big"), "hidden"),
        (lambda m: m["arguments"].update(depth=3), "depth"),
    ],
)
def test_bad_model_json_names_the_field(tmp_path: Path, edit, field: str) -> None:
    _saved(tmp_path)
    path = tmp_path / "model.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))
    with pytest.raises(ModelError) as e:
        load_model(tmp_path)
    assert e.value.field == field


def test_model_json_must_exist_and_parse(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model.json is missing"):
        read_meta(tmp_path)
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        read_meta(tmp_path)


def test_user_written_meta_with_few_fields(tmp_path: Path) -> None:
    """What a user uploads: architecture + the arguments they care about (defaults fill the rest)."""
    net = registry.build("resnet18", {"num_classes": 2, "small_input": True})
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "model.json").write_text(
        json.dumps(
            {
                "architecture": "resnet18",
                "arguments": {"num_classes": 2, "small_input": True},
                "class_names": ["a", "b"],
                "role": "classifier",
            }
        )
    )
    loaded, meta = load_model(tmp_path)
    assert isinstance(loaded, ResNet18)
    assert meta.class_names == ["a", "b"] and loaded.fc.out_features == 2


def test_load_weights_into_with_another_head(tmp_path: Path) -> None:
    base = _saved(tmp_path)
    wider = build_as(MLP, "mlp", {**ARGS, "num_classes": 5})
    with pytest.raises(ModelError, match="wrong shape head"):
        load_weights_into(wider, tmp_path / "model.safetensors")
    message = load_weights_into(wider, tmp_path / "model.safetensors", allow_head_mismatch=True)
    assert message == "head replaced: 3 -> 5 classes"
    torch.testing.assert_close(wider.eval().features(torch.ones(2, 6)), base.eval().features(torch.ones(2, 6)))
    same = registry.build("mlp", ARGS)
    assert load_weights_into(same, tmp_path / "model.safetensors", allow_head_mismatch=True) is None
    torch.testing.assert_close(same.eval()(torch.ones(2, 6)), base(torch.ones(2, 6)))


def test_fit_head_keeps_reorders_or_replaces() -> None:
    net = registry.build("mlp", ARGS).eval()
    x = torch.randn(4, 6)
    before = net(x)
    assert fit_head(net, CLASSES, CLASSES) is None
    assert fit_head(net, CLASSES, ["emu", "cat", "dog"]) == "head rows reordered to match the dataset's class order"
    torch.testing.assert_close(net(x), before[:, [2, 0, 1]])
    assert fit_head(net, CLASSES, ["x", "y"]) == "head replaced: 3 -> 2 classes"
    assert net(x).shape == (4, 2) and registry.current_arguments(net)[1]["num_classes"] == 2


def test_meta_is_strict_pydantic() -> None:
    meta = ModelMeta(architecture="mlp", arguments={}, role="generator")
    assert meta.class_names == [] and meta.notes == []
    with pytest.raises(ValueError):
        ModelMeta(architecture="mlp", arguments={}, role="generator", unknown=1)  # type: ignore[call-arg]


def test_a_zip_named_safetensors_is_never_opened_as_zip(tmp_path: Path) -> None:
    _saved(tmp_path)
    with zipfile.ZipFile(tmp_path / "model.safetensors", "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps(object()))
    with pytest.raises(ModelError, match="zip archive"):
        load_model(tmp_path)
