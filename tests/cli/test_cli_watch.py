"""`ganft jobs watch` as a person sees it, against a real server and database (no worker: the job's
progress and end are written the way a worker writes them, through ganft.repo.lifecycle):
plain progress lines off a terminal, the final summary for ssgan and adapt, no log lines."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine

from ganft.db.session import session_scope
from ganft.repo import jobs, lifecycle
from ganft.repo.lifecycle import ArtifactRecord, EventRecord, MetricPoint, OutputModel
from tests.cli.helpers import Ganft
from tests.sdk.test_client import tiny_npz

WORKER = "w-cli-test"
EVALUATION = {
    "accuracy": 0.5,
    "macro_f1": 0.4,
    "control_accuracy": 0.45,
    "control_macro_f1": 0.4,
    "delta_accuracy": 0.05,
}  # what an ssgan evaluation event carries (ssgan_report.headline)


@pytest.fixture
def ganft(live_server: str, api_key: str) -> Ganft:
    return Ganft(live_server, api_key)


@pytest.fixture(scope="module")
def ssgan_result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The result a worker stores for a real (tiny) ssgan run with its control: metrics.json, NaN as null."""
    pytest.importorskip("torch")
    from ganft_core.config import TrainSpec
    from ganft_core.data import Dataset, Layout
    from ganft_core.train import train
    from worker.progress import json_safe

    rng = np.random.RandomState(0)
    x = np.concatenate([rng.normal(3 * k, 1.0, size=(30, 4)) for k in range(3)]).astype(np.float32)
    y = np.where(np.arange(90) % 30 < 12, np.repeat(np.arange(3), 30), -1)
    data = Dataset(x=x, y=y, classes=["a", "b", "c"], layout=Layout("features", features=4))
    hp = {"steps": 4, "batch_size": 8, "unlabeled_batch_size": 8, "eval_every": 4, "log_every": 2}
    spec = TrainSpec.model_validate({"method": "ssgan", "seed": 1, "hyperparameters": hp})
    run = train(spec, data, tmp_path_factory.mktemp("ssgan"), device="cpu")
    assert run.metrics["verdict"] is not None
    return dict(json_safe(run.metrics))


ADAPT_RESULT = {  # the keys adapt's metrics.json has (ganft_core/adapt.py::_finish)
    "fid": 87.3125, "kid": 0.01234, "augment_p": 0.12, "evaluator": "classifier conv features (evaluator)",
    "fid_reference": "validation", "steps": 10, "seconds": 3.2, "history": [],
}  # fmt: skip


def _job(ganft: Ganft, tmp_path: Path, method: str = "ssgan") -> str:
    dataset = ganft.json("datasets", "upload", str(tiny_npz(tmp_path / "d.npz")))["id"]
    return ganft.ok("jobs", "create", "--method", method, "--dataset", dataset, "--hp", "steps=10").strip()


def _run(engine: Engine, job_id: str, steps: list[tuple[int, dict[str, float], dict[str, float] | None]]) -> None:
    """Claim the job and write its progress as the worker does: (step, latest metrics, evaluation figures)."""
    with session_scope(engine) as session:
        assert lifecycle.claim_job(session, job_id=job_id, worker_id=WORKER, lease_s=60) is not None
    for step, metrics, evaluation in steps:
        evaluated = {"step": step, "total_steps": 10, "metrics": evaluation}
        events = [EventRecord("evaluation", evaluated)] if evaluation else []
        metrics = {**metrics, **(evaluation or {})}
        events.append(EventRecord("progress", {"step": step, "total_steps": 10, "steps_per_second": 2.5,
                                               "metrics": metrics}))  # fmt: skip
        with session_scope(engine) as session:
            lifecycle.record_progress(session, job_id=job_id, worker_id=WORKER, step=step, total_steps=10,
                                      steps_per_second=2.5, events=events,
                                      metrics=[MetricPoint(step, k, v) for k, v in metrics.items()])  # fmt: skip


def _succeed(engine: Engine, job_id: str, result: dict[str, Any], role: str = "classifier") -> str:
    files = [ArtifactRecord("model.pt2", 5, "d" * 64, "application/octet-stream", f"jobs/{job_id}/artifacts/m")]
    model = OutputModel("out", role, {"architecture": "mlp"}, f"jobs/{job_id}/artifacts", 5, "d" * 64)
    with session_scope(engine) as session:
        assert lifecycle.succeed_job(session, job_id=job_id, worker_id=WORKER, result=result, artifacts=files,
                                     output_model=model)  # fmt: skip
        from ganft.db.tables import Job

        row = session.get(Job, job_id)
        assert row is not None
        output = row.output_model_id
    assert output
    return output


def test_plain_progress_lines_off_a_terminal(ganft: Ganft, engine: Engine, tmp_path: Path) -> None:
    """stderr is a pipe: no bar frames (no carriage returns or escape codes), a plain line per progress report
    with `--every 0`, each evaluation as its own line, status changes; nothing but the summary on stdout."""
    job_id = _job(ganft, tmp_path)
    _run(engine, job_id, [(2, {"loss_d": 1.5}, None), (5, {"loss_d": 0.9}, EVALUATION),
                          (10, {"loss_d": 0.05}, None)])  # fmt: skip
    with session_scope(engine) as session:  # preempted at the last step; the trainer finishes first (legal)
        jobs.append_event(session, job_id=job_id, type="status",
                          data={"status": "pausing", "reason": "preempted", "by": "job_high"})  # fmt: skip
    _succeed(engine, job_id, {"ssgan": {"accuracy": 0.5, "macro_f1": 0.4}, "control": None, "verdict": None})
    done = ganft.run("jobs", "watch", job_id, "--every", "0")
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr and "\x1b" not in done.stderr
    lines = done.stderr.splitlines()
    assert lines == [
        "status: queued",
        "status: running",
        "step 2/10 (20%) 2.5 step/s eta 0:00:03 D 1.5",
        "eval 5/10: acc 0.5000 F1 0.4000 | control acc 0.4500 F1 0.4000 | +5.0 pt",
        "step 5/10 (50%) 2.5 step/s eta 0:00:02 acc 0.5000 D 0.9",
        "step 10/10 (100%) 2.5 step/s eta 0:00:00 acc 0.5000 D 0.05",
        "status: pausing (preempted by job_high)",
        "status: succeeded",
    ], done.stderr
    assert done.stdout.startswith(f"{job_id} succeeded: ssgan")
    assert "no supervised control was run" in done.stdout
    slow = ganft.run("jobs", "watch", job_id, "--every", "3601")
    assert slow.returncode == 2 and "between 0 and 3600" in slow.stderr


def test_ssgan_summary(ganft: Ganft, engine: Engine, tmp_path: Path, ssgan_result: dict[str, Any]) -> None:
    """A succeeded ssgan job ends with accuracy and F1 of the GAN and the control, their difference, the
    verdict, the output model and the command that downloads the weights."""
    job_id = _job(ganft, tmp_path)
    _run(engine, job_id, [(10, {"loss_d": 0.1}, None)])
    model_id = _succeed(engine, job_id, ssgan_result)
    done = ganft.run("jobs", "watch", job_id)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    ours, control, verdict = ssgan_result["ssgan"], ssgan_result["control"], ssgan_result["verdict"]
    assert re.match(rf"{job_id} succeeded: ssgan, 10 steps in \d+s$", lines[0]), lines[0]
    assert lines[1].split() == ["accuracy", "macro", "F1"]
    assert lines[2].split() == ["ssgan", f"{ours['accuracy']:.4f}", f"{ours['macro_f1']:.4f}"]
    assert lines[3].split() == ["control", f"{control['accuracy']:.4f}", f"{control['macro_f1']:.4f}"]
    delta_f1 = (ours["macro_f1"] - control["macro_f1"]) * 100
    assert lines[4].split() == ["difference", f"{verdict['delta'] * 100:+.2f}", "pt", f"{delta_f1:+.2f}", "pt"]
    said = {"helped": "the GAN helped", "hurt": "the GAN hurt", "no_difference": "no difference within noise"}
    use = "control.pt2" if verdict["use"] == "control" else "model.pt2"
    assert lines[5] == (f"verdict: {said[verdict['outcome']]} ({verdict['delta'] * 100:+.1f} ± "
                        f"{verdict['margin'] * 100:.1f} pt accuracy): use {use}")  # fmt: skip
    assert lines[6].startswith(f"output model: {model_id} (")
    assert lines[7] == f"download:     ganft artifacts download {job_id} {use}"
    assert len(lines) == 8
    assert all(len(line) <= 80 for line in lines), done.stdout  # an 80-column terminal wraps none of them


@pytest.mark.parametrize("case", ["control preferred", "older result", "no control"])
def test_ssgan_summary_variants(
    ganft: Ganft, engine: Engine, tmp_path: Path, ssgan_result: dict[str, Any], case: str
) -> None:
    """The verdict says to use the control: the download is control.pt2. A result from before verdicts (no
    `verdict` key) still shows the table. No control (verdict null): said, with no difference row."""
    result = copy.deepcopy(ssgan_result)
    if case == "control preferred":
        result["verdict"] |= {"outcome": "hurt", "delta": -0.05, "margin": 0.02, "use": "control"}
    elif case == "older result":
        del result["verdict"]
    else:
        result |= {"control": None, "verdict": None}
    job_id = _job(ganft, tmp_path)
    _run(engine, job_id, [(10, {}, None)])
    _succeed(engine, job_id, result)
    out = ganft.ok("jobs", "watch", job_id)
    if case == "control preferred":
        assert "verdict: the GAN hurt (-5.0 ± 2.0 pt accuracy): use control.pt2\n" in out
        assert out.rstrip().endswith(f"ganft artifacts download {job_id} control.pt2")
        assert "(the GAN's classifier)" in out  # the output model is not the one the verdict prefers
    elif case == "older result":
        assert "difference" in out and "no verdict in this result (an older job)" in out
        assert out.rstrip().endswith(f"ganft artifacts download {job_id} model.pt2")
    else:
        assert "control" not in out.split("no supervised control")[0] and "difference" not in out
        assert "no supervised control was run (run_control=false)" in out


def test_adapt_summary(ganft: Ganft, engine: Engine, tmp_path: Path) -> None:
    """A succeeded adapt job ends with FID and KID, the evaluator they were measured with, the output model
    (the generator) and the download command; without an evaluator it says why there are no figures."""
    job_id = _job(ganft, tmp_path, "adapt")
    _run(engine, job_id, [(10, {"loss_d": 1.2}, {"fid": 87.3125, "kid": 0.01234})])
    model_id = _succeed(engine, job_id, ADAPT_RESULT, role="gan")
    lines = ganft.ok("jobs", "watch", job_id).splitlines()
    assert lines[0].startswith(f"{job_id} succeeded: adapt, 10 steps")
    assert lines[1].split() == ["FID", "87.3125", "KID", "0.0123", "(lower", "is", "better)"]
    assert lines[2] == "  features: classifier conv features (evaluator); against: validation"
    assert lines[3].startswith(f"output model: {model_id}")
    assert lines[4] == f"download:     ganft artifacts download {job_id} model.pt2"

    other = _job(ganft, tmp_path, "adapt")
    _run(engine, other, [(10, {}, None)])
    _succeed(engine, other, {**ADAPT_RESULT, "fid": None, "kid": None, "evaluator": "none"}, role="gan")
    lines = ganft.ok("jobs", "watch", other).splitlines()
    assert lines[1:3] == ["no FID/KID: the run had no evaluator network",
                          "  (GANFT_INCEPTION_WEIGHTS on the worker, or evaluator_model_id)"]  # fmt: skip


def test_failed_job_summary(ganft: Ganft, engine: Engine, tmp_path: Path) -> None:
    """A failed job: exit 3, the error code and message with the step it reached, and where to read more."""
    job_id = _job(ganft, tmp_path)
    _run(engine, job_id, [(5, {"loss_d": 0.5}, None)])
    with session_scope(engine) as session:
        lifecycle.end_job(session, job_id=job_id, worker_id=WORKER, status="failed", error_code="nan_loss",
                          error_message="loss_d became NaN at step 5")  # fmt: skip
    done = ganft.run("jobs", "watch", job_id)
    assert done.returncode == 3
    assert done.stdout.splitlines() == [f"{job_id} failed at 5/10 steps: nan_loss: loss_d became NaN at step 5",
                                        f"events and log lines: ganft jobs logs {job_id}"]  # fmt: skip


def test_verbose_logs_only_when_asked(ganft: Ganft, tmp_path: Path) -> None:
    """Default: no log lines (helpers.Ganft checks every run); `-vv` shows httpx's request lines."""
    tiny = str(tiny_npz(tmp_path / "d.npz"))
    quiet = ganft.run("datasets", "upload", tiny)
    assert quiet.returncode == 0 and quiet.stderr == ""
    loud = ganft.run("datasets", "upload", tiny, "-vv", check_logs=False)
    assert loud.returncode == 0 and "HTTP Request: POST" in loud.stderr
