"""The training child reads a job's dataset from its memory-mapped stored form (issue 10), made beside the staged
file in the run folder and removed with it."""

from __future__ import annotations

import io
import re

import numpy as np
from sqlalchemy import Engine

from ganft.settings import Settings
from ganft.store import Store
from tests.worker.helpers import WorkerProcess, make_job, wait_for
from tests.worker.test_worker_process import TINY_ADAPT, _ended, _send


def test_the_training_child_trains_from_the_stored_form(
    engine: Engine, store: Store, settings: Settings, start_worker: WorkerProcess.Factory
) -> None:
    buf = io.BytesIO()
    x = np.random.default_rng(0).integers(0, 256, size=(48, 8, 8, 1), dtype=np.uint8)  # uint8, channels last
    np.savez(buf, x=x, y=np.full(48, -1))
    job_id = make_job(engine, store, method="adapt", data=buf.getvalue(), hyperparameters={**TINY_ADAPT, "steps": 4})
    worker = start_worker()
    _send(job_id)
    row = wait_for(lambda: _ended(engine, job_id), timeout=180, what="the job to finish", logs=worker.logs)
    assert row.status == "succeeded", (row.error_code, row.error_message, worker.logs())
    stored = re.search(r"stored (\S+/runs/" + job_id + r"/inputs/train\.npz): 48 examples, (\d+) bytes", worker.logs())
    assert stored is not None, worker.logs()
    assert int(stored.group(2)) > 48 * 64  # uint8 examples (and labels, headers) in the stored form
    run_dir = settings.data_dir / "runs" / job_id  # removed with the stored form once the job has ended
    wait_for(lambda: not run_dir.exists(), timeout=60, what="the run folder to be removed", logs=worker.logs)
