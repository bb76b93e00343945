"""Kept checkpoints, forks and exports with a real API server and worker (deterministic CPU training).

A fork with no overrides ends with the same weights as its parent continued; a fork with overrides
trains with them; an export registers the model of an earlier step.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ganft.client import Client, Job
from tests.e2e.conftest import Stack
from tests.worker.helpers import features_npz

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# About 70 steps/s on one CPU thread.
HP = {
    "steps": 300,
    "deterministic": True,
    "batch_size": 16,
    "unlabeled_batch_size": 16,
    "eval_every": 100,
    "checkpoint_every": 50,
    "keep_checkpoints": 2,
    "log_every": 25,
    "run_control": False,
}


def _finished(api: Client, job_id: str) -> Job:
    job = api.wait(job_id, timeout=240, poll_s=0.5)
    assert job.status == "succeeded", (job.status, job.error)
    return job


def _model_sha(api: Client, job_id: str) -> str:
    return next(a.sha256 for a in api.list_artifacts(job_id) if a.name == "model.safetensors")


def test_checkpoints_forks_and_export(stack: Stack, tmp_path: Path) -> None:
    (tmp_path / "train.npz").write_bytes(features_npz())
    with Client(stack.url, stack.key) as api:
        dataset = api.upload_dataset(tmp_path / "train.npz")
        parent = _finished(api, api.create_job({"method": "ssgan", "dataset_id": dataset.id, "hyperparameters": HP,
                                                "seed": 5}).id)  # fmt: skip
        kept = api.list_checkpoints(parent.id)
        steps = [c.step for c in kept]
        best = [c.step for c in kept if c.best]
        # The 2 newest plus the best by accuracy (an earlier one unless the last evaluation was best).
        assert steps[-2:] == [250, 300] and len(best) == 1 and len(steps) in (2, 3)
        assert parent.result is not None and parent.result["best_step"] in (100, 200, 300)
        evaluation = kept[-1].evaluation or {}
        assert evaluation["step"] == 300 and "accuracy" in evaluation["metrics"]
        # The checkpoint bytes are what the listing says.
        saved = api.download_checkpoint(parent.id, 250, tmp_path / "c250.pt")
        assert saved.stat().st_size == kept[steps.index(250)].size_bytes

        same = _finished(api, api.fork_job(parent.id, 250).id)
        assert same.forked_from == {"job_id": parent.id, "step": 250}
        assert _model_sha(api, same.id) == _model_sha(api, parent.id)  # the same state, continued the same way
        events = api.list_events(same.id)
        assert min(e.data["step"] for e in events if e.type == "progress") >= 250  # resumed, not restarted

        longer = _finished(api, api.fork_job(parent.id, 250, hyperparameters={"steps": 350, "lr_d": 5e-4}).id)
        assert (longer.progress.step, longer.hyperparameters["lr_d"]) == (350, 5e-4)
        assert longer.result is not None and longer.result["steps"] == 350
        assert _model_sha(api, longer.id) != _model_sha(api, parent.id)

        export = _finished(api, api.export_checkpoint(parent.id, 250).id)
        assert export.output_model_id is not None and export.progress.step == 250
        model = api.get_model(export.output_model_id)
        assert model.role == "classifier"
        assert _model_sha(api, export.id) not in (_model_sha(api, parent.id), _model_sha(api, longer.id))
