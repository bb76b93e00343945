"""The broker (a private redis-server) dies and comes back, empty, while jobs run and are created."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from sqlalchemy import Engine

from ganft.settings import Settings
from ganft.store import open_store
from tests.reliability.conftest import Processes
from tests.reliability.jobs import TINY_SSGAN, assert_ran_once, terminal_rows
from tests.worker.helpers import job_row, make_job, wait_for


def _ready(url: str) -> int:
    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code
    except httpx.TransportError:
        return 0


def test_redis_restart_loses_no_job(
    engine: Engine, rel_settings: Settings, processes: Processes, make_key: Callable[[str], str]
) -> None:
    """Tried: kill redis-server (no persistence: every queued message is lost) while a job runs,
    create a job during the outage, start redis again on the same port.
    Expect: the running job finishes during the outage as attempt 1 (the worker's solo pool runs
    it outside Celery's reconnect path; worker/app.py), and the worker, finishing it with the broker
    down, reconnects afterwards; the new job is accepted (201, Postgres is the record) and
    dispatched by the sweep once the broker is back; /readyz 503 during the outage, 200 after."""
    redis_server = processes.redis_server()
    broker = {"GANFT_BROKER_URL": redis_server.url}
    store = open_store(rel_settings.store_url)
    seed_job = make_job(engine, store, hyperparameters=TINY_SSGAN)  # for its tenant and dataset only
    dataset_id = job_row(engine, seed_job).dataset_id
    auth = {"Authorization": f"Bearer {make_key('worker-tests')}"}
    api = processes.start_api(env=broker)
    worker = processes.start_worker("w1", env=broker)
    wait_for(lambda: job_row(engine, seed_job).status == "succeeded", timeout=90, what="the first job",
             logs=processes.logs)  # fmt: skip
    assert _ready(api.url) == 200

    body = {"method": "ssgan", "dataset_id": dataset_id, "hyperparameters": {**TINY_SSGAN, "steps": 150}}
    running = httpx.post(f"{api.url}/v1/jobs", json=body, headers=auth, timeout=15).json()["id"]
    wait_for(lambda: job_row(engine, running).status == "running", timeout=60, what="the job to start",
             logs=processes.logs)  # fmt: skip
    redis_server.stop()
    assert job_row(engine, running).status == "running"  # the outage started mid-job

    created = httpx.post(f"{api.url}/v1/jobs", json={**body, "seed": 1}, headers=auth, timeout=15)
    assert created.status_code == 201, created.text
    during = created.json()["id"]
    assert job_row(engine, during).dispatched_at is None  # not published: left for the sweep
    assert _ready(api.url) == 503
    readyz = httpx.get(f"{api.url}/readyz", timeout=5).json()
    assert readyz["checks"]["database"] == "ok" and readyz["checks"]["broker"] != "ok"

    # The job must finish while the broker is still down: no requeue (a lost pool process would
    # show as `queued` once its lease expired), no second attempt.
    wait_for(lambda: job_row(engine, running).status != "running", timeout=90,
             what="the running job to finish without the broker", logs=processes.logs)  # fmt: skip
    assert_ran_once(engine, running)
    redis_server.start()
    wait_for(lambda: _ready(api.url) == 200, timeout=30, what="/readyz to recover", logs=processes.logs)
    rows = wait_for(lambda: terminal_rows(engine, [running, during]), timeout=120,
                    what="the jobs to finish after the outage", logs=processes.logs)  # fmt: skip
    for job_id in (running, during):
        assert rows[job_id].status == "succeeded", (rows[job_id].error_code, rows[job_id].error_message)
    for job_id in (seed_job, running, during):
        assert_ran_once(engine, job_id)  # attempt 1 each, one success, one set of outputs
    assert worker.process.poll() is None  # the worker rode out the outage
    assert "WorkerLostError" not in worker.logs() and "SIGTERM" not in worker.logs()
