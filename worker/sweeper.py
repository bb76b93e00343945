"""The reaper and dispatch sweep: one thread per worker node, every `reaper_interval_s`.

- Jobs whose lease expired (the worker was killed, the machine lost) go back to `queued`
  (the next claim makes it attempt + 1 and resumes from the newest checkpoint), or fail with
  `worker_lost` once `max_attempts` attempts were lost (ganft/repo/lifecycle.py
  `reap_expired_leases`).
- With GANFT_PREEMPTION, a `high` job waiting for a worker stops the newest running `low` job
  (ganft/repo/preemption.py).
- Queued jobs never sent to the broker (created while it was down, or just reaped) are sent.
  A job that ran before (attempt > 0) is sent with `PRIORITY_RETRY`, heard by an idle worker before
  the first messages of other jobs (`PRIORITY_FIRST`). Which job the woken worker claims is the
  database's choice, not the message's (ganft/repo/claims.py: priority, then age, so a returned job
  keeps its place; the 200-job soak's killed job once waited behind the whole backlog, 5 min).
- Queued jobs sent more than `REDISPATCH_AFTER_LEASES` lease periods ago are sent again only
  when the broker has lost messages: when its queue holds fewer messages than there are queued
  jobs already sent, and then only that many (the shortfall). A long queue of jobs that are
  merely waiting for a free worker is left alone (it used to be re-sent every 3 leases: 3,634
  messages for 200 jobs, docs/RELIABILITY.md). A broker whose queue cannot be read (down)
  gets no stale re-sends that pass; the next pass asks again. A duplicate message is still
  harmless: the claim is a compare-and-set and the loser returns at once.

Every worker runs this; two sweepers never move the same job twice (compare-and-set again).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass, field

from celery import Celery
from sqlalchemy import Engine

from ganft.db.session import get_engine, session_scope
from ganft.db.tables import utcnow
from ganft.repo import lifecycle, preemption
from ganft.settings import Settings
from worker import retention, webhooks
from worker.app import PRIORITY_FIRST, PRIORITY_RETRY, QUEUE, RUN_JOB

# A queued job's message is resent (when the broker lost messages) once it was sent this many
# lease periods ago and the job is still queued: long enough that a worker busy with another job is not flooded with
# duplicates, short enough that a message lost with a broker restart costs minutes, not hours.
REDISPATCH_AFTER_LEASES = 3
CANNOT_COUNT = -1  # broker_queue_length() on a transport without a message count

log = logging.getLogger(__name__)


@dataclass
class SweepResult:
    reaped: list[tuple[str, str]] = field(default_factory=list)  # (job_id, new status)
    preempted: preemption.Preemption | None = None
    dispatched: list[str] = field(default_factory=list)


def sweep_once(app: Celery, settings: Settings) -> SweepResult:
    """One pass: reap expired leases, then (re)send queued jobs that need a message."""
    engine = get_engine(settings.database_url)
    result = SweepResult()
    with session_scope(engine) as session:
        result.reaped = lifecycle.reap_expired_leases(session)
    for job_id, status in result.reaped:
        log.warning("job %s: lease expired, now %s", job_id, status)
    if settings.preemption:
        with session_scope(engine) as session:
            result.preempted = preemption.preempt_once(session, waited_s=settings.preempt_after_s)
        if result.preempted:
            log.warning("job %s: preempted for high-priority job %s (checkpoint, then queued again)",
                        result.preempted.stopped, result.preempted.for_job)  # fmt: skip
    stale_before = utcnow() - dt.timedelta(seconds=REDISPATCH_AFTER_LEASES * settings.lease_s)
    stale_limit = _stale_allowance(app, engine, stale_before)
    with session_scope(engine) as session:
        job_ids = lifecycle.claim_dispatch(session, stale_before=stale_before, stale_limit=stale_limit)
        retried = lifecycle.retried(session, job_ids=job_ids)
    failed: list[str] = []
    for job_id in job_ids:
        priority = PRIORITY_RETRY if job_id in retried else PRIORITY_FIRST  # retries are taken first
        try:
            app.send_task(RUN_JOB, args=[job_id], queue=QUEUE, priority=priority)
        except Exception:
            log.exception("job %s: could not send it to the broker; the next sweep retries", job_id)
            failed.append(job_id)
        else:
            result.dispatched.append(job_id)
    if failed:
        with session_scope(engine) as session:
            lifecycle.undo_dispatch(session, job_ids=failed)
    if result.dispatched:
        log.info("dispatched %d queued job(s): %s", len(result.dispatched), ", ".join(result.dispatched))
    webhooks.deliver_due(settings)  # signed POSTs about finished jobs (worker/webhooks.py)
    retention.collect_if_due(settings)  # garbage collection, in its own thread (worker/retention.py)
    return result


def _stale_allowance(app: Celery, engine: Engine, stale_before: dt.datetime) -> int | None:
    """How many stale jobs (sent before `stale_before`, still queued) to send again: the messages
    the broker is missing, 0 when it cannot be asked, None (no bound) when it cannot count."""
    with session_scope(engine) as session:
        if not lifecycle.count_dispatched(session, before=stale_before):
            return 0  # nothing stale: no need to ask the broker
    # The broker first, then the database: a worker takes a message from the queue a moment
    # before it claims the job, so counted the other way round the taking in between would
    # look like a lost message.
    waiting = broker_queue_length(app)
    if waiting is None:
        return 0  # the broker is down: the next pass asks again
    if waiting == CANNOT_COUNT:
        return None  # a transport that cannot count (not Redis, not the embedded one): as before
    with session_scope(engine) as session:
        sent = lifecycle.count_dispatched(session)
    return max(0, sent - waiting)


def broker_queue_length(app: Celery) -> int | None:
    """Messages waiting in the broker's `QUEUE`; None when the broker cannot be reached (logged),
    `CANNOT_COUNT` when its transport cannot count them.

    kombu's own count (`Channel._size`, every virtual transport has one): on Redis the sum of
    `LLEN` over the queue's priority lists (`gpu`, then `gpu\\x06\\x163`, `...6`, `...9`, under
    the transport's `global_keyprefix`); on the embedded filesystem transport the `*.gpu.msg`
    files in its folder (a message being written or taken by a worker is not one of them).
    """
    try:
        with app.connection_for_write() as conn:
            channel = conn.channel()  # connects (Redis: PING, within socket_connect_timeout)
            try:
                size = getattr(channel, "_size", None)
                return CANNOT_COUNT if size is None else int(size(QUEUE))
            finally:
                channel.close()
    except Exception as exc:  # the broker is down: no stale re-sends this pass
        log.warning("cannot read the broker's queue length (%s); stale jobs wait for the next sweep", exc)
        return None


class Sweeper(threading.Thread):
    """Runs `sweep_once` now and then every `settings.reaper_interval_s` until `stop()`."""

    def __init__(self, app: Celery, settings: Settings) -> None:
        super().__init__(name="ganft-sweeper", daemon=True)
        self._app = app
        self._settings = settings
        self._stopped = threading.Event()

    def run(self) -> None:
        while True:
            try:
                sweep_once(self._app, self._settings)
            except Exception:  # the DB or broker is down: log, keep the thread alive, try again later
                log.exception("sweep failed; retrying in %.1f s", self._settings.reaper_interval_s)
            if self._stopped.wait(self._settings.reaper_interval_s):
                return

    def stop(self, timeout: float = 5.0) -> None:
        self._stopped.set()
        if timeout > 0 and self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)


_sweeper: Sweeper | None = None
_lock = threading.Lock()


def start_sweeper(app: Celery, settings: Settings) -> Sweeper:
    """Start this process's sweeper (once; later calls return the running one)."""
    global _sweeper
    with _lock:
        if _sweeper is None or not _sweeper.is_alive():
            _sweeper = Sweeper(app, settings)
            _sweeper.start()
            log.info(
                "sweeper started: every %.1f s (lease %.1f s, max attempts from each job)",
                settings.reaper_interval_s,
                settings.lease_s,
            )
        return _sweeper


def stop_sweeper(*, wait: bool = True) -> None:
    """Stop this process's sweeper; `wait=False` only asks (safe inside a signal handler)."""
    global _sweeper
    sweeper = _sweeper
    if sweeper is None:
        return
    sweeper.stop(timeout=5.0 if wait else 0.0)
    if wait:
        with _lock:
            _sweeper = None
