"""The Celery app, run as `worker_command()` (one worker process per GPU; compose, `ganft up`,
the tests and the benchmarks all run exactly that command).

Each job runs in the worker's main process (Celery's solo pool); its training runs in a
child process the task spawns and supervises (worker/runner.py). A prefork pool would only put
one more process in between, and Celery's prefork reconnect path (`Consumer.on_close` ->
`AsynPool.flush`, `hub.reset()` in `asynloop`) reworks the pool's state on every broker
connection loss: in one Redis outage test run it SIGTERMed the pool process running a job
(`WorkerLostError`), costing the job its attempt (docs/RELIABILITY.md). With solo the consumer
cannot even notice a lost connection until the task returns, so a job finishes through a broker
outage; and a warm shutdown (SIGTERM) reaches the runner, which checkpoints and gives the job
back to the queue. The price: remote control (`celery inspect`) gets no answer during a job.
The worker also runs Celery's blocking consumer loop (`synloop`, `SoloWorker`), not the event
loop: with the event loop Celery sends a message's ack at the loop's next turn, which a solo
worker only reaches when the job has ended, so Redis would redeliver every job running longer
than its visibility timeout; in the blocking loop the ack is sent at once, before the job runs.

Postgres is the record of truth and a broker message only says "there is work", so:
- messages are acknowledged on receipt (`task_acks_late=False`): a worker that dies mid-job
  is recovered by the lease reaper (worker/sweeper.py), never by broker redelivery. With
  late acks Redis would redeliver any job running longer than its visibility timeout;
- no result backend (the job row holds the result);
- one job per worker process (solo pool, prefetch 1, and on Redis no prefetch at all while a
  job runs, so a busy worker does not sit on the next job that an idle one could take);
- no Celery time limit: the runner enforces each job's own `max_runtime_s`.

The embedded default (`filesystem://`) keeps its messages in `settings.broker_folder`;
the transport options come from settings, so the API's producer posts where workers look.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.apps.worker import Worker as CeleryWorker
from celery.signals import worker_process_init, worker_ready, worker_shutdown, worker_shutting_down
from kombu.utils.objects import cached_property

from ganft.db.session import get_engine
from ganft.settings import Settings, get_settings

QUEUE = "gpu"
RUN_JOB = "ganft.run_job"  # the task name the API enqueues (docs/CONTRACTS.md)
# Message priorities on Redis (kombu keeps one list per priority step and a worker takes from `gpu`,
# priority 0, before `gpu\x06\x163`): a retried job's message is heard first. A message is only a
# doorbell: the worker claims the best eligible queued job by the database's order (ganft/repo/claims.py).
PRIORITY_FIRST = 3  # the API's message, and the sweep's for a job that never ran
PRIORITY_RETRY = 0  # the sweep's for a job that ran before (attempt > 0)

log = logging.getLogger(__name__)


def worker_command(name: str = "gpu@%h", *, loglevel: str = "INFO") -> list[str]:
    """The worker's command line (run it as is, or after `python -m` to pick the interpreter).

    `--pool solo`: see the module docstring. Mingle, gossip and worker heartbeats are off: ganft
    uses none of them (the lease in Postgres says who is alive), and a solo worker busy with a job
    cannot send heartbeats, so monitors would see it as offline during every job.
    """
    return [
        "celery", "-A", "worker.app", "worker", "-Q", QUEUE, "--pool", "solo", "-n", name,
        "--without-mingle", "--without-gossip", "--without-heartbeat", "--loglevel", loglevel,
    ]  # fmt: skip


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
        "worker_pool": "solo",  # also when started without `--pool` (see the module docstring)
        "worker_concurrency": 1,
        "worker_prefetch_multiplier": 1,
        # Celery only supports this on Redis (it warns and ignores it elsewhere).
        "worker_disable_prefetch": settings.broker_url.startswith(("redis://", "rediss://")),
        "worker_send_task_events": False,
    }


class SoloWorker(CeleryWorker):
    """`celery worker` with the blocking consumer loop on every transport (see the module docstring;
    the embedded filesystem transport has no event loop support, so it always ran this loop)."""

    def should_use_eventloop(self) -> bool:
        return False


class GanftCelery(Celery):
    @cached_property
    def Worker(self) -> type[CeleryWorker]:  # noqa: N802 - Celery's name; what `celery worker` instantiates
        worker: type[CeleryWorker] = self.subclass_with_self(SoloWorker)
        return worker


app = GanftCelery("ganft", include=["worker.tasks"])


@app.on_configure.connect
def _configure(sender: Celery, **_: Any) -> None:
    # Read the settings when the app is first used, not on import (importing must not create
    # the embedded broker's folders, and tests set GANFT_* before they start a worker).
    sender.conf.update(celery_config(get_settings()))


@worker_process_init.connect
def _fresh_connections_after_fork(**_: Any) -> None:
    # Only for someone who runs a prefork pool anyway (`--pool prefork`): a prefork child inherits
    # the parent's pooled DB connections, and sharing a socket between processes corrupts it.
    get_engine().dispose(close=False)


@worker_ready.connect
def _start_sweeper(sender: Any = None, **_: Any) -> None:
    # worker_ready fires once, in the main worker process: one sweeper thread per worker node.
    # It keeps sweeping while the main thread runs a job (solo pool).
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
    """This worker got a warm or cold shutdown signal. Seen because the task runs in the worker's
    main process (solo pool); a prefork pool's children would not be told."""
    from celery.worker import state

    return state.should_stop is not None or state.should_terminate is not None
