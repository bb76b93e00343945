"""Celery tasks. They take ids, open their own sessions and are safe to run twice (STYLE.md 6)."""

from __future__ import annotations

import logging
import os
import secrets
import socket

from ganft.db.session import get_engine, session_scope
from ganft.repo import lifecycle
from ganft.settings import get_settings
from worker.app import RUN_JOB, app, shutdown_requested

log = logging.getLogger(__name__)


def new_worker_id() -> str:
    """Who holds a claim: host and pid for people, a random part so that no two claims share one."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


@app.task(name=RUN_JOB, ignore_result=True, acks_late=False, time_limit=None, soft_time_limit=None)
def run_job(job_id: str) -> str:
    """Claim the job and run it to the end. A duplicate message finds it claimed and returns.

    No Celery time limit: the runner enforces the job's own `max_runtime_s`. Returns the
    status the job ended in (`skipped` for a duplicate, `deferred` when this worker is stopping),
    for logs only (no result backend).
    """
    settings = get_settings()
    engine = get_engine(settings.database_url)
    if shutdown_requested():  # a message taken while stopping: leave the job for the next sweep
        with session_scope(engine) as session:
            lifecycle.undo_dispatch(session, job_ids=[job_id])
        log.info("job %s: this worker is shutting down; left queued for the next one", job_id)
        return "deferred"
    with session_scope(engine) as session:
        job = lifecycle.claim_job(session, job_id=job_id, worker_id=new_worker_id(), lease_s=settings.lease_s)
    if job is None:
        log.info("job %s is not queued (already claimed, cancelled or finished): nothing to do", job_id)
        return "skipped"
    from worker.runner import run_claimed_job  # the runner pulls in the store and multiprocessing

    return run_claimed_job(job, settings)
