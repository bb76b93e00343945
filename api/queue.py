"""The API's side of the broker: send `ganft.run_job` by name, and probe the broker.

The API never imports worker code: a minimal Celery client publishes the task by name.
The broker is a doorbell, not the record: when it is down the job stays `queued` with
`dispatched_at` NULL and the workers' dispatch sweep sends it later, so publishing
failures are logged, never raised to the client.
"""

from __future__ import annotations

import logging
import threading

from celery import Celery
from kombu import Connection

from ganft.settings import Settings

log = logging.getLogger(__name__)

RUN_JOB = "ganft.run_job"  # task name, queue and priority: docs/CONTRACTS.md
QUEUE = "gpu"
PRIORITY_FIRST = 3  # behind the sweep's retries (0); which job runs is the DB's order (ganft/repo/claims.py)


class JobQueue:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._app: Celery | None = None
        self._lock = threading.Lock()

    def _celery(self) -> Celery:
        # Built on first use: importing the API must not touch the broker (or its folders).
        with self._lock:
            if self._app is None:
                app = Celery("ganft-api", set_as_current=False)
                app.conf.update(
                    broker_url=self._settings.broker_url,
                    broker_transport_options=self._settings.broker_transport_options(),
                    broker_connection_timeout=self._settings.broker_timeout_s,
                    broker_connection_retry=False,
                    broker_connection_max_retries=0,
                    task_publish_retry=False,  # fail fast: the dispatch sweep retries
                    task_serializer="json",
                    result_backend=None,
                    task_ignore_result=True,
                )
                self._app = app
            return self._app

    def send_run_job(self, job_id: str) -> bool:
        """Publish `ganft.run_job(job_id)` on queue `gpu`; False (logged) when the broker is down."""
        try:
            self._celery().send_task(RUN_JOB, args=[job_id], queue=QUEUE, priority=PRIORITY_FIRST)
        except Exception as exc:  # any transport error: the dispatch sweep will send it
            log.warning("could not enqueue %s (%s: %s); the dispatch sweep will retry", job_id, type(exc).__name__, exc)
            return False
        return True

    def ping(self) -> None:
        """Connect to the broker within `broker_timeout_s`; raises when it is unreachable."""
        timeout = self._settings.broker_timeout_s
        with Connection(
            self._settings.broker_url,
            transport_options=self._settings.broker_transport_options(),
            connect_timeout=timeout,
        ) as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=timeout)

    def close(self) -> None:
        with self._lock:
            if self._app is not None:
                self._app.close()
                self._app = None
