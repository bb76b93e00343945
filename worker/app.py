"""The Celery app: `celery -A worker.app worker -Q gpu -c 1 --pool prefork` (one worker per GPU).

Postgres is the record of truth and a broker message only says "there is work", so:
- messages are acknowledged on receipt (`task_acks_late=False`): a worker that dies mid-job
  is recovered by the lease reaper (worker/sweeper.py), never by broker redelivery. With
  late acks Redis would redeliver any job running longer than its visibility timeout;
- no result backend (the job row holds the result);
- one job per worker process (`-c 1`, prefetch 1, and on Redis no prefetch at all while a
  job runs, so a busy worker does not sit on the next job that an idle one could take);
- no Celery time limit: the runner enforces each job's own `max_runtime_s`.

The embedded default (`filesystem://`) keeps its messages in `settings.broker_folder`;
the transport options come from settings, so the API's producer posts where workers look.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_ready, worker_shutdown, worker_shutting_down

from ganft.db.session import get_engine
from ganft.settings import Settings, get_settings

QUEUE = "gpu"
RUN_JOB = "ganft.run_job"  # the task name the API enqueues (docs/CONTRACTS.md)

log = logging.getLogger(__name__)


def celery_config(settings: Settings) -> dict[str, Any]:
    return {
        "broker_url": settings.broker_url,
        "broker_transport_options": settings.broker_transport_options(),  # shared with the API's producer
        # The embedded broker: kombu's filesystem transport minus a lost-message race (worker/fs_transport.py).
        "broker_transport": "worker.fs_transport:Transport" if settings.is_embedded_broker else None,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,  # keep retrying a lost broker; the DB still has the jobs
        "result_backend": None,
        "task_ignore_result": True,
        "task_acks_late": False,
        "task_reject_on_worker_lost": False,
        "task_default_queue": QUEUE,
        "task_routes": {RUN_JOB: {"queue": QUEUE}},
        "task_time_limit": None,
        "task_soft_time_limit": None,
        "task_serializer": "json",
        "accept_content": ["json"],
        "worker_prefetch_multiplier": 1,
        # Celery only supports this on Redis (it warns and ignores it elsewhere).
        "worker_disable_prefetch": settings.broker_url.startswith(("redis://", "rediss://")),
        "worker_send_task_events": False,
    }


app = Celery("ganft", include=["worker.tasks"])


@app.on_configure.connect
def _configure(sender: Celery, **_: Any) -> None:
    # Read the settings when the app is first used, not on import (importing must not create
    # the embedded broker's folders, and tests set GANFT_* before they start a worker).
    sender.conf.update(celery_config(get_settings()))


@worker_process_init.connect
def _fresh_connections_after_fork(**_: Any) -> None:
    # A prefork child inherits the parent's pooled DB connections; sharing a socket between
    # processes corrupts it, so the child drops them (without closing the parent's).
    get_engine().dispose(close=False)


@worker_ready.connect
def _start_sweeper(sender: Any = None, **_: Any) -> None:
    # worker_ready fires once, in the main worker process (not in each prefork child), so a
    # node runs exactly one sweeper however many pool processes it has.
    from worker.sweeper import start_sweeper

    start_sweeper(app, get_settings())


@worker_shutting_down.connect
def _no_more_dispatching(**_: Any) -> None:
    # At the first shutdown signal (we are in its handler: no waiting here), so that no job is
    # sent to this stopping worker by its own sweeper.
    from worker.sweeper import stop_sweeper

    stop_sweeper(wait=False)


@worker_shutdown.connect
def _stop_sweeper(**_: Any) -> None:
    from worker.sweeper import stop_sweeper

    stop_sweeper()


def shutdown_requested() -> bool:
    """This worker got a warm or cold shutdown signal. Only seen where the task runs in the
    worker's main process (`--pool solo`, the embedded stack); prefork children are not told."""
    from celery.worker import state

    return state.should_stop is not None or state.should_terminate is not None
