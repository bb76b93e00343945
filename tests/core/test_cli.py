"""`python -m ganft_core`: inspect (torch-free, JSON on stdout, exit 2 on errors) and train."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ganft_core.cli import _StopOnInterrupt, main
from ganft_core.data import dataset_stats, load_dataset

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -m ganft_core ARGS` in a fresh interpreter, from the repository root."""
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_inspect_prints_the_dataset_summary(tiny_imagefolder: Path) -> None:
    """`inspect` on an imagefolder zip exits 0 and prints dataset_stats plus the detected format as JSON."""
    done = run_cli("-m", "ganft_core", "inspect", str(tiny_imagefolder))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {**dataset_stats(load_dataset(tiny_imagefolder)), "format": "imagefolder"}


def test_inspect_never_imports_torch(tiny_images_npz: Path) -> None:
    """`python -X importtime -m ganft_core inspect` on an npz lists numpy among its imports but never torch."""
    done = run_cli("-X", "importtime", "-m", "ganft_core", "inspect", str(tiny_images_npz))
    assert done.returncode == 0, done.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "numpy" in imported and "PIL.Image" in imported  # the listing does see what was imported
    assert not {name for name in imported if name == "torch" or name.startswith("torch.")}


def test_inspect_reports_errors_as_json_with_exit_2(make_zip: Callable[..., Path]) -> None:
    """`inspect` on a zip with a '../evil' entry exits 2 with {"error": {code, message}} on stdout."""
    path = make_zip({"a/1.png": b"x", "../evil.png": b"x"})
    done = run_cli("-m", "ganft_core", "inspect", str(path))
    assert done.returncode == 2
    error = json.loads(done.stdout)["error"]
    assert error["code"] == "invalid_dataset" and "../evil.png" in error["message"]


def test_inspect_format_option(tiny_csv: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--format csv` reads a csv; `--format npz` on the same file is an invalid_dataset error (exit 2)."""
    assert main(["inspect", str(tiny_csv), "--format", "csv"]) == 0
    assert json.loads(capsys.readouterr().out)["classes"] == ["blue", "green", "red"]
    assert main(["inspect", str(tiny_csv), "--format", "npz"]) == 2
    assert json.loads(capsys.readouterr().out)["error"]["code"] == "invalid_dataset"


def _spec(tmp_path: Path, spec: object) -> Path:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec) if not isinstance(spec, str) else spec)
    return path


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"method": "ssgan", "hyperparameters": {"steps": 0}}, "hyperparameters.steps"),
        ({"method": "ssgan", "hyperparameters": {"stepz": 10}}, "hyperparameters.stepz"),
        ({"method": "gan"}, "method"),
        ("{not json", None),
    ],
    ids=["out of bounds", "unknown field", "unknown method", "not json"],
)
def test_train_refuses_a_bad_spec(
    tmp_path: Path, tiny_features_npz: Path, capsys: pytest.CaptureFixture[str], spec: object, field: str | None
) -> None:
    """A spec with steps=0, an unknown field, an unknown method or broken JSON: exit 2, invalid_spec with the field."""
    code = main(
        ["train", str(_spec(tmp_path, spec)), "--data", str(tiny_features_npz), "--out", str(tmp_path / "r"), "--json"]
    )
    error = json.loads(capsys.readouterr().out)["error"]
    assert code == 2 and error["code"] == "invalid_spec" and error.get("field") == field
    assert not (tmp_path / "r").exists()


def test_train_refuses_bad_data_before_training(
    tmp_path: Path, tiny_features_npz: Path, make_csv: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A non-numeric csv cell, or a validation set with a class the data lacks, exits 2 before any run folder exists."""
    spec = _spec(tmp_path, {"method": "ssgan"})
    broken = make_csv(["f", "label"], [["x", "a"]])
    assert main(["train", str(spec), "--data", str(broken), "--out", str(tmp_path / "r"), "--json"]) == 2
    assert "'x' is not a number" in json.loads(capsys.readouterr().out)["error"]["message"]
    other = make_csv(["a", "b", "c", "d", "label"], [[0, 0, 0, 0, "zebra"]], name="val.csv")
    args = [
        "train",
        str(spec),
        "--data",
        str(tiny_features_npz),
        "--validation",
        str(other),
        "--out",
        str(tmp_path / "r"),
        "--json",
    ]
    assert main(args) == 2
    assert "'zebra'" in json.loads(capsys.readouterr().out)["error"]["message"]
    assert not (tmp_path / "r").exists()


def test_train_reports_trainer_errors_as_json(
    tmp_path: Path, tiny_features_npz: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Data and spec pass, then ganft_core.train.train refuses --device tpu: exit 2 with its invalid_spec on stdout."""
    pytest.importorskip("ganft_core.train")
    spec = _spec(tmp_path, {"method": "ssgan"})
    args = [
        "train",
        str(spec),
        "--data",
        str(tiny_features_npz),
        "--out",
        str(tmp_path / "r"),
        "--device",
        "tpu",
        "--json",
    ]
    assert main(args) == 2
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["code"] == "invalid_spec" and error["field"] == "device"


def test_first_interrupt_asks_to_stop_instead_of_killing() -> None:
    """A SIGINT inside the trainer's context sets the abort flag (no KeyboardInterrupt); the old handler comes back."""
    before = signal.getsignal(signal.SIGINT)
    with _StopOnInterrupt() as stop:
        assert not stop()
        os.kill(os.getpid(), signal.SIGINT)
        assert stop()
    assert signal.getsignal(signal.SIGINT) is before


def _values_named(key: str, tree: object) -> list[float]:
    """Every value stored under `key` anywhere in nested dicts (metrics may be grouped per model)."""
    if not isinstance(tree, dict):
        return []
    found = [float(v) for k, v in tree.items() if k == key and isinstance(v, int | float)]
    return found + [v for child in tree.values() for v in _values_named(key, child)]


def test_train_end_to_end_tiny_ssgan(tmp_path: Path, tiny_features_npz: Path) -> None:
    """A 6-step ssgan run on tiny feature vectors via the CLI: exit 0, metrics JSON (--json) on stdout, a model."""
    pytest.importorskip("ganft_core.train")
    pytest.importorskip("ganft_core.ssgan")
    hp = {"steps": 6, "batch_size": 8, "unlabeled_batch_size": 8, "eval_every": 3, "checkpoint_every": 3}
    spec = _spec(
        tmp_path, {"method": "ssgan", "seed": 1, "hyperparameters": {**hp, "log_every": 2, "run_control": False}}
    )
    out = tmp_path / "run"
    args = ["-m", "ganft_core", "train", str(spec), "--data", str(tiny_features_npz), "--out", str(out)]
    done = run_cli(*args, "--device", "cpu", "--json", timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["run_dir"] == str(out) and "model.safetensors" in result["artifacts"]
    assert any(np.isfinite(v) for v in _values_named("accuracy", result["metrics"]))
    assert (out / "model.safetensors").is_file() and (out / "spec.json").is_file()
    assert "6/6" in done.stderr  # the progress bar reached the end
