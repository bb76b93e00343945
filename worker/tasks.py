"""Celery tasks. They take ids, open their own sessions and are safe to run twice (STYLE.md 6)."""

from __future__ import annotations

import logging
import os
import secrets
import socket

from ganft.db.session import get_engine, session_scope
from ganft.repo import claims, lifecycle
from ganft.settings import get_settings
from worker.app import RUN_JOB, app, shutdown_requested

log = logging.getLogger(__name__)


def new_worker_id() -> str:
    """Who holds a claim: host and pid for people, a random part so that no two claims share one."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


@app.task(name=RUN_JOB, ignore_result=True, acks_late=False, time_limit=None, soft_time_limit=None)
def run_job(job_id: str) -> str:
    """A doorbell: claim the best eligible queued job (ganft/repo/claims.py; not necessarily `job_id`) and
    run it, then the next best, until none is eligible or this worker is stopping.

    No Celery time limit: the runner enforces each job's own `max_runtime_s`. Returns the status the
    last job ended in (`skipped` when nothing was eligible, `deferred` when this worker is stopping),
    for logs only (no result backend).
    """
    settings = get_settings()
    engine = get_engine(settings.database_url)
    if shutdown_requested():  # a message taken while stopping: leave the job for the next sweep
        with session_scope(engine) as session:
            lifecycle.undo_dispatch(session, job_ids=[job_id])
        log.info("job %s: this worker is shutting down; left queued for the next one", job_id)
        return "deferred"
    from worker.runner import run_claimed_job  # the runner pulls in the store and multiprocessing

    outcome = "skipped"
    doorbell: str | None = job_id  # the message's job, for the first claim only
    while not shutdown_requested():
        with session_scope(engine) as session:
            job = claims.claim_next(session, worker_id=new_worker_id(), lease_s=settings.lease_s, doorbell=doorbell)
        if job is None:
            if doorbell is not None:
                log.info(
                    "message for job %s: no queued job is eligible (taken, ended, over quota): nothing to do", job_id
                )
            break
        if job.id != job_id and doorbell is not None:
            log.info("message for job %s: claimed %s, the best eligible queued job", job_id, job.id)
        outcome, doorbell = run_claimed_job(job, settings), None
    return outcome
