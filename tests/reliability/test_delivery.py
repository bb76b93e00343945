"""Broker delivery faults against real worker processes: duplicates and redelivery after the
visibility timeout must never run a job twice (acks on receipt + the claim's compare-and-set)."""

from __future__ import annotations

from sqlalchemy import Engine

from ganft.settings import Settings
from ganft.store import open_store
from tests.reliability.conftest import Processes
from tests.reliability.jobs import TINY_SSGAN, assert_ran_once, send, terminal_rows
from tests.worker.helpers import make_job, wait_for


def test_duplicate_messages_and_racing_workers_run_the_job_once(
    engine: Engine, rel_settings: Settings, processes: Processes
) -> None:
    """Tried: the same `ganft.run_job` message sent 3 times, two prefork workers taking messages at
    once. Expect one `running` transition (attempt 1), one success, one artifact set, one model."""
    store = open_store(rel_settings.store_url)
    job_id = make_job(engine, store, hyperparameters=TINY_SSGAN)
    other = make_job(engine, store, hyperparameters=TINY_SSGAN)  # keeps the second worker busy too
    send(rel_settings.broker_url, job_id, times=3)  # all queued before the workers race for them
    send(rel_settings.broker_url, other, times=2)
    first = processes.start_worker("w1", wait=False)
    second = processes.start_worker("w2", wait=False)
    first.wait_ready()
    second.wait_ready()
    rows = wait_for(lambda: terminal_rows(engine, [job_id, other]), timeout=90, what="both jobs", logs=processes.logs)
    for jid, row in rows.items():
        assert (row.status, row.attempt) == ("succeeded", 1), (row.error_code, row.error_message)
        assert_ran_once(engine, jid)
    # 5 messages (+ the dispatch sweep's own), 2 runs: the others found the job taken (compare-and-set).
    wait_for(lambda: (first.logs() + second.logs()).count("nothing to do") >= 3, timeout=20,
             what="the duplicates to be skipped", logs=processes.logs)  # fmt: skip


def test_a_job_longer_than_the_visibility_timeout_is_not_run_again(
    engine: Engine, rel_settings: Settings, processes: Processes
) -> None:
    """Tried: Redis' `visibility_timeout` set to 1 s for worker and producer, a job running ~10x
    longer, a second idle worker that would receive any redelivered message. Expect attempt 1
    only, and no second delivery at all: the message was acked on receipt (task_acks_late=False)."""
    store = open_store(rel_settings.store_url)
    job_id = make_job(engine, store, hyperparameters={**TINY_SSGAN, "steps": 400, "checkpoint_every": 100})
    tiny = {"GANFT_BROKER_VISIBILITY_TIMEOUT_S": "1"}
    processes.start_worker("w1", env=tiny)
    processes.start_worker("w2", env=tiny)
    # No manual send: a worker's dispatch sweep sends the job exactly once (its compare-and-set on
    # dispatched_at), so any second delivery could only be the broker's redelivery.
    wait_for(lambda: "training in pid" in processes.logs(), timeout=30, what="the job to start", logs=processes.logs)
    rows = wait_for(lambda: terminal_rows(engine, [job_id]), timeout=120, what="the job", logs=processes.logs)
    row = rows[job_id]
    assert (row.status, row.attempt) == ("succeeded", 1), (row.error_code, row.error_message, processes.logs())
    assert row.started_at is not None and row.finished_at is not None
    assert (row.finished_at - row.started_at).total_seconds() > 3  # well past the 1 s visibility timeout
    assert_ran_once(engine, job_id)
    assert "nothing to do" not in processes.logs()  # no message was redelivered at all
