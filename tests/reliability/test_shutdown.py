"""A worker is stopped the way `docker compose stop` stops it (SIGTERM: Celery's warm shutdown) mid-job."""

from __future__ import annotations

import os
import re

from sqlalchemy import Engine

from ganft.settings import Settings
from ganft.store import open_store
from tests.reliability.conftest import Processes
from tests.reliability.jobs import TINY_SSGAN, assert_one_output_set, statuses
from tests.worker.helpers import job_events, job_row, make_job, wait_for


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_warm_shutdown_hands_the_job_back_and_the_next_worker_resumes_it(
    engine: Engine, rel_settings: Settings, processes: Processes
) -> None:
    """Tried: SIGTERM the worker's main process once its job stored a checkpoint.
    Expect: the worker (solo pool: the job runs in its main process) stops the trainer, gives the
    job back (`queued`, reason "worker shut down") and exits by itself with status 0, leaving no
    training process behind; a new worker runs attempt 2 from the checkpoint to success, once."""
    store = open_store(rel_settings.store_url)
    job_id = make_job(engine, store, hyperparameters={**TINY_SSGAN, "steps": 400})
    first = processes.start_worker("w1")
    wait_for(lambda: job_row(engine, job_id).checkpoint_key, timeout=120, what="a checkpoint", logs=processes.logs)
    trainer = int(re.findall(rf"job {job_id}: attempt 1, training in pid (\d+)", first.logs())[0])
    checkpoint_step = job_row(engine, job_id).checkpoint_step

    first.process.terminate()  # SIGTERM to the main process only, as Docker sends it
    assert first.process.wait(timeout=60) == 0, first.logs()
    assert not _alive(trainer)
    row = job_row(engine, job_id)
    assert (row.status, row.attempt, row.worker_id) == ("queued", 1, None)
    assert statuses(engine, job_id)[-1] == ("queued", None)
    assert [d.get("reason") for _, t, d in job_events(engine, job_id) if t == "status"][-1] == "worker shut down"

    processes.start_worker("w2")
    wait_for(lambda: job_row(engine, job_id).status == "succeeded", timeout=180, what="attempt 2 to finish",
             logs=processes.logs)  # fmt: skip
    history = statuses(engine, job_id)
    assert history == [("queued", None), ("running", 1), ("queued", None), ("running", 2), ("succeeded", None)]
    events = job_events(engine, job_id)
    claim_2 = next(seq for seq, t, d in events if t == "status" and d.get("attempt") == 2)
    steps_2 = [d["step"] for seq, t, d in events if t == "progress" and seq > claim_2]
    assert checkpoint_step and steps_2 and min(steps_2) >= checkpoint_step  # resumed, not restarted
    assert_one_output_set(engine, job_id)
