"""ssgan through `train()` on tiny data: artifacts, metrics schema, base models, freezing, EMA, NaN, abort."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import precision_recall_fscore_support

from ganft_core import ssgan
from ganft_core.classify_metrics import classification_metrics
from ganft_core.config import TrainSpec
from ganft_core.data import Dataset, Layout
from ganft_core.errors import Aborted, GanftError, NanLossError, SpecError
from ganft_core.models import registry
from ganft_core.models.io import load_model, meta_for, save_model
from ganft_core.run import latest_checkpoint, list_checkpoints, load_checkpoint
from ganft_core.train import ProgressUpdate, train

CLASSES = ["a", "b", "c"]
TINY = {
    "steps": 20,
    "batch_size": 8,
    "unlabeled_batch_size": 8,
    "log_every": 5,
    "eval_every": 10,
    "checkpoint_every": 10,
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/core/conftest.py


def blobs(n_per_class: int, labeled_per_class: int, seed: int = 0) -> Dataset:
    """3 Gaussian blobs in 4-d, far apart; the first `labeled_per_class` of each class keep their label."""
    rng = np.random.RandomState(seed)
    centres = np.array([[4, 0, 0, 0], [0, 4, 0, 0], [0, 0, 4, 0]], dtype=np.float32)
    x = np.concatenate([c + rng.randn(n_per_class, 4) for c in centres]).astype(np.float32)
    y = np.repeat(np.arange(3), n_per_class)
    y = np.where(np.tile(np.arange(n_per_class), 3) < labeled_per_class, y, -1)
    return Dataset(x=x, y=y, classes=list(CLASSES), layout=Layout("features", features=4))


def band_images(n_per_class: int, labeled_per_class: int, seed: int = 0) -> Dataset:
    """1×8×8 images in [0, 1]: class k is a bright band at rows 2k..2k+1, over noise."""
    rng = np.random.RandomState(seed)
    x = rng.uniform(0, 0.25, size=(3 * n_per_class, 1, 8, 8)).astype(np.float32)
    for k in range(3):
        x[k * n_per_class : (k + 1) * n_per_class, :, 2 * k : 2 * k + 2] = 0.9
    y = np.repeat(np.arange(3), n_per_class)
    y = np.where(np.tile(np.arange(n_per_class), 3) < labeled_per_class, y, -1)
    return Dataset(x=x, y=y, classes=list(CLASSES), layout=Layout("image", channels=1, height=8, width=8))


def spec(**hp: Any) -> TrainSpec:
    features_net = {"architecture_arguments": {"hidden": [16, 16]}}
    return TrainSpec.model_validate({"method": "ssgan", "seed": 3, "hyperparameters": {**TINY, **features_net, **hp}})


def newest(folder: Path) -> Path:
    """The newest checkpoint of a run folder that must have one."""
    path = latest_checkpoint(folder)
    assert path is not None
    return path


def run_ssgan(out: Path, data: Dataset, **kwargs: Any) -> tuple[Any, list[ProgressUpdate]]:
    updates: list[ProgressUpdate] = []
    validation = kwargs.pop("validation", blobs(6, 6, seed=1) if data.layout.kind == "features" else None)
    result = train(kwargs.pop("spec", spec()), data, out, validation=validation, progress=updates.append, **kwargs)
    return result, updates


def test_features_run_writes_every_artifact_and_both_metrics(tmp_path: Path) -> None:
    result, updates = run_ssgan(tmp_path, blobs(20, 5))
    for name in (
        "model.safetensors",
        "model.json",
        "model.pt2",
        "generator.safetensors",
        "generator.json",
        "control.safetensors",
        "control.json",
        "metrics.json",
        "curves.png",
        "spec.json",
        "metrics.jsonl",
    ):
        assert (tmp_path / name).is_file(), name
    assert not (tmp_path / "samples.png").exists()  # feature data: no picture of samples
    assert set(result.artifacts) <= {p.name for p in tmp_path.iterdir()}

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for part in ("ssgan", "control"):
        m = metrics[part]
        assert set(m) >= {"accuracy", "macro_precision", "macro_recall", "macro_f1", "per_class", "confusion_matrix"}
        assert [c["class"] for c in m["per_class"]] == CLASSES
        assert np.array(m["confusion_matrix"]).shape == (3, 3)
        assert np.array(m["confusion_matrix"]).sum() == 18  # the 18 validation examples
    assert metrics["delta_accuracy"] == pytest.approx(metrics["ssgan"]["accuracy"] - metrics["control"]["accuracy"])
    assert metrics["labeled_examples"] == 15 and metrics["unlabeled_examples"] == 60
    assert result.metrics == metrics

    kinds = [u.kind for u in updates]
    assert {"step", "evaluation", "checkpoint", "artifact"} <= set(kinds)
    evaluation = next(u for u in updates if u.kind == "evaluation")
    assert {"accuracy", "control_accuracy", "delta_accuracy"} <= set(evaluation.metrics)
    step = next(u for u in updates if u.kind == "step")
    assert {"loss_d", "loss_g", "loss_control"} <= set(step.metrics) and step.total_steps == 20
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if r["event"] == "step"] == [5, 10, 15, 20]
    assert json.loads((tmp_path / "spec.json").read_text())["hyperparameters"]["steps"] == 20


def test_exported_model_predicts_like_the_saved_one(tmp_path: Path) -> None:
    run_ssgan(tmp_path, blobs(20, 5))
    net, meta = load_model(tmp_path)
    assert meta.class_names == CLASSES and meta.role == "classifier"
    x = torch.from_numpy(blobs(10, 0, seed=7).x)
    program = torch.export.load(str(tmp_path / "model.pt2")).module()
    with torch.no_grad():
        assert torch.allclose(program(x), net.eval()(x), atol=1e-5)


def test_images_in_input_space_write_a_sample_grid(tmp_path: Path) -> None:
    data = band_images(12, 4)
    hp = {"architecture_arguments": {"widths": [4, 8]}, "z_dim": 16}
    result, _ = run_ssgan(tmp_path, data, spec=spec(**hp), validation=band_images(4, 4, seed=5))
    from PIL import Image

    assert Image.open(tmp_path / "samples.png").size[0] > 64
    assert json.loads((tmp_path / "model.json").read_text())["architecture"] == "convnet"
    assert json.loads((tmp_path / "generator.json").read_text())["input_layout"]["kind"] == "image"
    assert "samples.png" in result.artifacts


def test_feature_space_generator_makes_backbone_features(tmp_path: Path) -> None:
    data = band_images(12, 4)
    hp = {"architecture_arguments": {"widths": [4, 8]}, "generator_space": "feature", "z_dim": 16}
    run_ssgan(tmp_path, data, spec=spec(**hp), validation=band_images(4, 4, seed=5))
    g_meta = json.loads((tmp_path / "generator.json").read_text())
    assert g_meta["input_layout"] == {"kind": "features", "features": 8}  # convnet features: widths[-1]
    assert g_meta["arguments"]["out_shape"] == [8]
    assert not (tmp_path / "samples.png").exists()


def save_base(folder: Path, num_classes: int, class_names: list[str]) -> dict[str, torch.Tensor]:
    net = registry.build("mlp", {"in_shape": [4], "num_classes": num_classes, "hidden": [16, 16]})
    save_model(net, meta_for(net, class_names=class_names, input_layout={"kind": "features", "features": 4}), folder)
    return {k: v.clone() for k, v in net.state_dict().items()}


def test_base_model_with_other_classes_gets_a_new_head_and_says_so(tmp_path: Path) -> None:
    base = tmp_path / "base"
    save_base(base, 5, ["v", "w", "x", "y", "z"])
    out = tmp_path / "run"
    _, updates = run_ssgan(out, blobs(20, 5), base_model=base)
    message = "head replaced: 5 -> 3 classes"
    assert any(u.kind == "log" and u.message == message for u in updates)
    assert message in json.loads((out / "spec.json").read_text())["notes"]
    assert any(json.loads(line).get("message") == message for line in (out / "metrics.jsonl").read_text().splitlines())
    meta = json.loads((out / "model.json").read_text())
    assert meta["arguments"]["num_classes"] == 3 and message in meta["notes"]


def test_freeze_blocks_keeps_the_base_weights_of_those_blocks(tmp_path: Path) -> None:
    base = tmp_path / "base"
    before = save_base(base, 3, CLASSES)
    out = tmp_path / "run"
    run_ssgan(out, blobs(20, 5), base_model=base, spec=spec(freeze_blocks=1, lr_d=1e-2))
    for stem in ("model", "control"):
        after = load_file(str(out / f"{stem}.safetensors"))
        frozen = [k for k in before if k.startswith("layers.0.")]
        trained = [k for k in before if k.startswith("layers.1.")]
        assert frozen and trained
        assert all(torch.equal(before[k], after[k]) for k in frozen), stem
        assert not all(torch.equal(before[k], after[k]) for k in trained), stem


def test_saved_model_is_the_ema_of_the_classifier(tmp_path: Path) -> None:
    run_ssgan(tmp_path / "ema", blobs(20, 5), spec=spec(ema_decay=0.9))
    ckpt = load_checkpoint(newest(tmp_path / "ema"))
    saved = load_file(str(tmp_path / "ema" / "model.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in ckpt["ema"]["module"].items())
    assert not all(torch.equal(saved[k], v) for k, v in ckpt["classifier"].items())

    run_ssgan(tmp_path / "raw", blobs(20, 5), spec=spec(ema_decay=0.0))
    ckpt = load_checkpoint(newest(tmp_path / "raw"))
    saved = load_file(str(tmp_path / "raw" / "model.safetensors"))
    assert ckpt["ema"] is None and all(torch.equal(saved[k], v) for k, v in ckpt["classifier"].items())


def test_nan_loss_raises_and_keeps_the_last_good_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = ssgan.unsupervised_d_loss
    calls = {"n": 0}

    def poisoned(logits_unl: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        loss = real(logits_unl, logits_fake)
        return loss * float("nan") if calls["n"] > 12 else loss  # NaN from step 13 on

    monkeypatch.setattr(ssgan, "unsupervised_d_loss", poisoned)
    with pytest.raises(NanLossError) as info:
        run_ssgan(tmp_path, blobs(20, 5), spec=spec(checkpoint_every=5))
    assert info.value.code == "nan_loss" and "step 15" in info.value.message
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt-00000005.pt", "ckpt-00000010.pt"]
    good = load_checkpoint(newest(tmp_path))
    assert all(v.isfinite().all() for v in good["classifier"].values())
    assert not (tmp_path / "model.safetensors").exists()


def test_abort_writes_a_checkpoint_then_raises(tmp_path: Path) -> None:
    polls = {"n": 0}

    def abort_after_7_steps() -> bool:
        polls["n"] += 1
        return polls["n"] > 7

    with pytest.raises(Aborted) as info:
        run_ssgan(tmp_path, blobs(20, 5), should_abort=abort_after_7_steps)
    assert info.value.code == "cancelled"
    assert load_checkpoint(newest(tmp_path))["step"] == 7
    assert not (tmp_path / "model.safetensors").exists()


def test_without_control_the_deltas_are_null(tmp_path: Path) -> None:
    result, _ = run_ssgan(tmp_path, blobs(20, 5), spec=spec(run_control=False))
    assert result.metrics["control"] is None and result.metrics["delta_accuracy"] is None
    assert not (tmp_path / "control.safetensors").exists()


def test_user_program_as_base_model(tmp_path: Path) -> None:
    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU())
            self.fc = torch.nn.Linear(16, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.body(x))

    base = tmp_path / "base"
    base.mkdir()
    batch = torch.export.Dim("batch")
    program = torch.export.export(Tiny(), (torch.zeros(2, 4),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(base / "model.pt2"))
    (base / "model.json").write_text(json.dumps({"format": "program", "class_names": ["p", "q"]}))
    out = tmp_path / "run"
    _, updates = run_ssgan(out, blobs(20, 5), base_model=base)
    assert any(u.message == "head replaced: 2 -> 3 classes" for u in updates)
    assert json.loads((out / "model.json").read_text())["format"] == "program"
    reloaded = torch.export.load(str(out / "model.pt2")).module()
    assert reloaded(torch.zeros(5, 4)).shape == (5, 3)


def test_classification_metrics_match_scikit_learn() -> None:
    rng = np.random.RandomState(0)
    y_true, y_pred = rng.randint(0, 4, 200), rng.randint(0, 4, 200)
    y_pred[y_pred == 3] = 2  # class 3 is never predicted: precision 0 by convention
    m = classification_metrics(y_true, y_pred, ["w", "x", "y", "z"])
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=[0, 1, 2, 3], zero_division=0)
    assert m["macro_precision"] == pytest.approx(p.mean()) and m["macro_recall"] == pytest.approx(r.mean())
    assert m["macro_f1"] == pytest.approx(f.mean())
    assert [c["f1"] for c in m["per_class"]] == pytest.approx(list(f))
    assert [c["support"] for c in m["per_class"]] == list(s)
    assert m["confusion_matrix"] == sk_confusion(y_true, y_pred, labels=[0, 1, 2, 3]).tolist()
    assert m["accuracy"] == pytest.approx(float((y_true == y_pred).mean()))


def test_out_of_memory_is_a_typed_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def out_of_memory(*_: torch.Tensor) -> torch.Tensor:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(ssgan, "unsupervised_d_loss", out_of_memory)
    with pytest.raises(GanftError) as info:
        run_ssgan(tmp_path, blobs(20, 5))
    assert info.value.code == "out_of_memory" and "batch_size" in info.value.message


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_asking_for_cuda_without_it_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        train(spec(), blobs(20, 5), tmp_path, device="cuda")
    assert info.value.field == "device"


def test_evaluation_batches_shrink_for_large_inputs() -> None:
    """Evaluation passes hold at most EVAL_INPUT_BYTES of float32 input (their activations grow with it):
    1024 examples up to 28×28 grey and for feature vectors, 256 at 64×64×3, 20 at 224×224×3, never 0."""
    from ganft_core.ssgan import eval_batch

    assert [eval_batch(s) for s in [(64,), (1, 28, 28), (3, 64, 64), (3, 224, 224), (3, 4096, 4096)]] == [
        1024, 1024, 256, 20, 1
    ]  # fmt: skip
