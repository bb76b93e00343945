"""Early stopping through the service: the runner (in this process, with its real training child) claims the job,
the trainer stops after `patience` evaluations without improvement, and the job ends `succeeded` with the best
evaluated step's weights as its output model and a `result` that says why it stopped."""

from __future__ import annotations

import io

import torch
from safetensors.torch import load
from sqlalchemy import Engine, select

from ganft.db.session import session_scope
from ganft.db.tables import Artifact, JobCheckpoint, Model
from ganft.repo import claims
from ganft.settings import Settings
from ganft.store import Store
from tests.worker.helpers import job_row, make_job
from worker import runner

# min_delta 1.0 on an accuracy in [0, 1]: only the first evaluation (step 5) can count as an improvement,
# so the run stops at step 15 (2 more evaluations) of 200, whatever it learns.
HP = {"steps": 200, "batch_size": 8, "unlabeled_batch_size": 8, "eval_every": 5, "checkpoint_every": 5,
      "log_every": 5, "keep_checkpoints": 1000, "ema_decay": 0.9, "run_control": False, "deterministic": True,
      "early_stopping": {"patience": 2, "min_delta": 1.0}}  # fmt: skip


def test_early_stopping_ends_succeeded_with_the_best_steps_weights(
    engine: Engine, store: Store, settings: Settings
) -> None:
    job_id = make_job(engine, store, hyperparameters=HP)
    with session_scope(engine) as session:
        claimed = claims.claim_next(session, worker_id="w-test", lease_s=settings.lease_s)
    assert claimed is not None and claimed.id == job_id
    assert runner.run_claimed_job(claimed, settings) == "succeeded"

    row = job_row(engine, job_id)
    assert row.status == "succeeded" and row.result is not None, (row.error_code, row.error_message)
    result = row.result
    assert result["stopped_early"] is True and "did not improve" in result["stop_reason"]
    assert result["early_stopping"]["stopped_at_step"] == 15 == row.step
    assert result["best_step"] == result["early_stopping"]["best_step"] == 5  # the service agrees on the best
    with session_scope(engine) as session:
        model = session.scalars(select(Model).where(Model.id == row.output_model_id)).one()
        weights_key = session.scalars(
            select(Artifact.storage_key).where(Artifact.job_id == job_id, Artifact.name == "model.safetensors")
        ).one()
        best_key = session.scalars(
            select(JobCheckpoint.storage_key).where(JobCheckpoint.job_id == job_id, JobCheckpoint.step == 5)
        ).one()
    assert model.source_job_id == job_id
    saved = load(store.read_bytes(weights_key))
    best = torch.load(io.BytesIO(store.read_bytes(best_key)), weights_only=True)["ema"]["module"]
    assert saved.keys() == best.keys() and all(torch.equal(saved[k], best[k]) for k in best)
