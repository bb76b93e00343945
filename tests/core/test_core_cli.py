"""`python -m ganft_core train` for people: one-line errors for wrong paths (exit 2), a `.pt2` file as the
base model, the headline on stdout (the full JSON behind --json), and a progress display that fits."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ganft_core.cli import main
from ganft_core.progress_view import Progress, figures_text

ROOT = Path(__file__).resolve().parents[2]
TINY = {"steps": 4, "batch_size": 8, "unlabeled_batch_size": 8, "eval_every": 2, "log_every": 2,
        "checkpoint_every": 4}  # fmt: skip

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/core/conftest.py


def _spec(tmp_path: Path, **hp: object) -> Path:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"method": "ssgan", "seed": 1, "hyperparameters": {**TINY, **hp}}))
    return path


def _core(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ganft_core", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing spec", r"^error: SPEC\.json: no such file: .*nowhere\.json$"),
        ("missing data", r"^error: --data: no such file: .*nowhere\.npz$"),
        ("data not a dataset", r"^error: --data: .*spec\.json: "),
        ("missing base model", r"^error: --base-model: no such file or folder: .*nowhere$"),
        ("file for a folder", r"^error: --base-model: .*spec\.json is a file, not a model folder"),
        ("folder without model.json", r"^error: --base-model: .*empty has no model\.json"),
        ("data is a folder", r"^error: --data: .*empty is a folder; give the dataset file"),
        ("program without class names", r"^error: --base-model: .*user\.pt2 is a program without class names: "
                                        r"pass --class-names"),
    ],
)  # fmt: skip
def test_wrong_paths_are_one_line_and_exit_2(tmp_path: Path, tiny_features_npz: Path, case: str, expected: str) -> None:
    """Each wrong path: exit 2, exactly one line on stderr that names the flag, nothing on stdout, no run folder."""
    spec = _spec(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "user.pt2").write_bytes(b"not checked before the class names are known")
    data, base = str(tiny_features_npz), None
    if case == "missing spec":
        spec = tmp_path / "nowhere.json"
    elif case == "missing data":
        data = str(tmp_path / "nowhere.npz")
    elif case == "data not a dataset":
        data = str(spec)
    elif case == "data is a folder":
        data = str(tmp_path / "empty")
    else:
        base = {"missing base model": tmp_path / "nowhere", "file for a folder": spec,
                "folder without model.json": tmp_path / "empty",
                "program without class names": tmp_path / "user.pt2"}[case]  # fmt: skip
    args = ["train", str(spec), "--data", data, "--out", str(tmp_path / "run")]
    done = _core(*args, *(["--base-model", str(base)] if base else []))
    assert done.returncode == 2, done.stderr
    assert done.stdout == "" and "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and re.search(expected, lines[0]), done.stderr
    assert not (tmp_path / "run").exists()


def test_errors_are_json_with_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With --json the same error is also a JSON document on stdout, with the flag as its field."""
    args = ["train", str(_spec(tmp_path)), "--data", str(tmp_path / "x.npz"), "--out", str(tmp_path / "r"), "--json"]
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert json.loads(out)["error"] == {"code": "invalid_dataset", "field": "data",
                                        "message": f"--data: no such file: {tmp_path / 'x.npz'}"}  # fmt: skip
    assert err.startswith("error: --data: no such file")


@pytest.fixture
def features_program(tmp_path: Path) -> Path:
    """A user's own classifier of the 4-feature tiny data (3 outputs), exported as a .pt2 file."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).eval()
    program = torch.export.export(net, (torch.rand(4, 4),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    path = tmp_path / "mine.pt2"
    torch.export.save(program, path)
    return path


def test_a_pt2_file_with_class_names_is_a_base_model(
    tmp_path: Path, tiny_features_npz: Path, features_program: Path
) -> None:
    """`--base-model FILE.pt2 --class-names 0,1,2` trains from the program and prints the headline (not JSON):
    the accuracy/F1 table against the control and the verdict; the run folder records the staged base model."""
    out = tmp_path / "run"
    done = _core("train", str(_spec(tmp_path)), "--data", str(tiny_features_npz), "--base-model",
                 str(features_program), "--class-names", "0,1,2", "--out", str(out), "--device", "cpu")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not re.search(r"\b(DEBUG|INFO) [\w.]+: ", done.stderr), done.stderr  # no log lines by default (-v)
    lines = done.stdout.splitlines()
    assert lines[0].startswith("ssgan: 4 steps;") and lines[1].split() == ["accuracy", "macro", "F1"]
    assert lines[2].split()[0] == "ssgan" and lines[3].split()[0] == "control" and lines[4].startswith("  difference")
    assert re.fullmatch(r"verdict: (the GAN helped|the GAN hurt|no difference within noise) \([+-]\d+\.\d ± \d+\.\d pt "
                        r"accuracy\): use (model|control)\.pt2", lines[5]), lines[5]  # fmt: skip
    assert all(len(line) <= 80 for line in lines[:-1]), done.stdout  # the run folder's path aside
    assert lines[-1].startswith(f"run folder: {out}")
    with pytest.raises(json.JSONDecodeError):
        json.loads(done.stdout)
    staged = json.loads((out / "base-model" / "model.json").read_text())
    assert staged["format"] == "program" and staged["class_names"] == ["0", "1", "2"]
    assert json.loads((out / "spec.json").read_text())["base_model"] == str(out / "base-model")
    assert (out / "model.pt2").is_file()


def test_a_pt2_file_takes_its_class_names_from_a_sidecar_json(
    tmp_path: Path, tiny_features_npz: Path, features_program: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`mine.pt2` beside `mine.json` ({"class_names": [...]}): no --class-names needed; --json prints all metrics."""
    features_program.with_suffix(".json").write_text(json.dumps({"class_names": ["0", "1", "2"]}))
    out = tmp_path / "run"
    args = ["train", str(_spec(tmp_path, run_control=False)), "--data", str(tiny_features_npz), "--base-model",
            str(features_program), "--out", str(out), "--device", "cpu", "--json"]  # fmt: skip
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["metrics"]["class_names"] == ["0", "1", "2"] and "confusion_matrix" in json.dumps(result)
    assert json.loads((out / "base-model" / "model.json").read_text())["class_names"] == ["0", "1", "2"]


def test_bad_sidecar_and_class_names_are_clear(tmp_path: Path, tiny_features_npz: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    program = tmp_path / "mine.pt2"
    program.write_bytes(b"x")
    program.with_suffix(".json").write_text(json.dumps({"classes": ["a"]}))
    base = ["train", str(_spec(tmp_path)), "--data", str(tiny_features_npz), "--out", str(tmp_path / "r")]
    assert main([*base, "--base-model", str(program)]) == 2
    assert "mine.json has no class_names list" in capsys.readouterr().err
    assert main([*base, "--base-model", str(program), "--class-names", "a,,b"]) == 2
    assert "--class-names: expected comma-separated names" in capsys.readouterr().err
    assert main([*base, "--class-names", "a,b"]) == 2
    assert "no --base-model was given" in capsys.readouterr().err
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "model.json").write_text("{}")
    assert main([*base, "--base-model", str(tmp_path / "folder"), "--class-names", "a,b"]) == 2
    assert "--class-names: only for a .pt2 file" in capsys.readouterr().err


# ---------------------------------------------------------------- data


def test_train_reads_the_stored_form_and_reuses_it(
    tmp_path: Path, tiny_images_npz: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`train` decodes --data into its memory-mapped stored form (RUN_DIR/stored by default, --stored DIR when
    given) and trains from it, as the worker's child does; a second run over the same file reuses it."""
    out = tmp_path / "run"
    base = ["train", str(_spec(tmp_path, architecture="convnet")), "--data", str(tiny_images_npz), "--device", "cpu",
            "--json"]  # fmt: skip
    assert main([*base, "--out", str(out)]) == 0, capsys.readouterr().err
    folder = out / "stored" / "data-tiny_images.npz.stored"
    storage = json.loads((out / "spec.json").read_text())["data_path"]["storage"]
    assert storage["folder"] == str(folder) and storage["stored_bytes"] > 0  # trained from the stored form
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["examples"] == 36 and manifest["dtype"] == "uint8"
    stamp = (folder / "manifest.json").stat().st_mtime_ns
    assert json.loads(capsys.readouterr().out)["metrics"]["steps"] == TINY["steps"]
    assert main([*base, "--out", str(out)]) == 0  # resumed from the final checkpoint: the stored form is reused
    assert (folder / "manifest.json").stat().st_mtime_ns == stamp
    shared = tmp_path / "cache"
    assert main([*base, "--out", str(tmp_path / "other"), "--stored", str(shared)]) == 0
    assert (shared / "data-tiny_images.npz.stored" / "manifest.json").is_file()
    assert not (tmp_path / "other" / "stored").exists()


# ---------------------------------------------------------------- progress


def test_evaluation_figures_headline_first() -> None:
    """The score first (FID/KID before adapt's p), accuracy and F1 with four decimals, the control after."""
    assert figures_text({"augment_p": 0.16, "ada_rt": 0.6875, "fid": 105.3, "kid": 1.16}) == (
        "FID 105.3 KID 1.16 p 0.16 ada_rt 0.6875"
    )
    assert figures_text({"control_accuracy": 0.9278, "delta_accuracy": -0.028, "accuracy": 0.9, "macro_f1": 0.8984,
                         "loss_d": float("nan")}) == "acc 0.9000 F1 0.8984 | control acc 0.9278 | -2.8 pt"  # fmt: skip


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plain_progress_off_a_terminal() -> None:
    """Off a terminal: one plain line per `every_s` seconds (no carriage returns, no bar frames), every
    evaluation as its own line at once, and one line for the last step."""
    stream, clock = io.StringIO(), FakeClock()
    progress = Progress(stream, every_s=10, clock=clock, terminal=False)
    assert not progress.live
    for step in range(0, 101, 5):
        clock.now = step * 0.5  # 2 steps a second
        progress.advance(step, 100, {"loss_d": 1.0 / (step + 1)})
        if step == 50:
            progress.evaluation(step, 100, {"accuracy": 0.8125, "macro_f1": 0.75, "control_accuracy": 0.75,
                                            "delta_accuracy": 0.0625})  # fmt: skip
    progress.advance(100, 100, {})  # artifact updates after the last step: no more lines
    progress.close()
    text = stream.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert lines == [
        "step 0/100 (0%) eta -:--:-- D 1",
        "step 20/100 (20%) 2.0 step/s eta 0:00:40 D 0.04762",
        "step 40/100 (40%) 2.0 step/s eta 0:00:30 D 0.02439",
        "eval 50/100: acc 0.8125 F1 0.7500 | control acc 0.7500 | +6.2 pt",
        "step 60/100 (60%) 2.0 step/s eta 0:00:20 acc 0.8125 D 0.01639",
        "step 80/100 (80%) 2.0 step/s eta 0:00:10 acc 0.8125 D 0.01235",
        "step 100/100 (100%) 2.0 step/s eta 0:00:00 acc 0.8125 D 0.009901",
    ]


def test_the_bar_fits_80_columns() -> None:
    """On an 80-column terminal the bar is one line of at most 80 characters with step/total, rate, ETA and
    the headline figures (not every metric); an evaluation prints above it as its own line."""
    stream, clock = io.StringIO(), FakeClock()
    progress = Progress(stream, clock=clock, terminal=True, width=80)
    metrics = {"loss_d": 0.0431, "loss_d_supervised": 0.02, "loss_d_unsupervised": 0.023, "loss_g": 0.51,
               "loss_control": 0.01, "lr_d": 0.0002}  # fmt: skip
    progress.advance(0, 1500, metrics)
    clock.now = 25.0
    progress.advance(1150, 1500, metrics)
    progress.evaluation(1150, 1500, {"accuracy": 0.873, "macro_f1": 0.87})
    progress.close()
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", stream.getvalue()).replace("\r", "\n")
    bars = [line for line in screen.splitlines() if "1150/1500" in line]
    assert bars, screen
    bar = bars[-1]
    assert len(bar) <= 80 and "46.0 step/s" in bar and "eta 0:00:08" in bar and "acc 0.8730 D 0.0431" in bar
    assert "lr_d" not in bar and "G " not in bar
    assert "eval 1150/1500: acc 0.8730 F1 0.8700" in screen.split(bar)[0]  # printed above the bar
