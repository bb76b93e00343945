"""Parent-side supervision of one claimed job: stage inputs, run the training child, report, finish.

The parent never imports torch. It loops every `POLL_S`:
- drains the child's queue: step progress is buffered and written at most once per
  `progress_interval_s`, evaluations and log lines at once (worker/progress.py); each new
  checkpoint is uploaded to the store and recorded at once;
  the pictures rewritten at each evaluation (samples.png, curves.png) are published as the job's
  artifacts at most once per `PICTURE_INTERVAL_S` (worker/pictures.py);
- renews the lease every `lease_s / 4` (heartbeat) and reads the job's status about once a
  second: a cancel (`cancelling`), a pause (`pausing`), an exceeded `max_runtime_s` or a worker
  shutdown set the abort Event (the trainer checkpoints and stops), and the child is killed `cancel_grace_s`
  later if it has not; a lost lease (the row is no longer ours) stops the child at once and
  writes nothing more;
- when the child has exited, finishes the job: succeeded (the final artifacts, replacing the live
  pictures, + output model + result in one transaction), failed with a code, cancelled (the last
  checkpoint and pictures stay), paused (the checkpoint the trainer wrote on stopping is stored
  first; this worker is then free), or given back to the queue when the worker is shutting down.
`max_runtime_s` counts from this attempt's start (so time spent paused never counts).
Each checkpoint stored is listed among the job's kept checkpoints; those the keep policy drops
(ganft/repo/checkpoints.py) are deleted from the store once the new one is recorded.
"""

from __future__ import annotations

import logging
import os
import queue as queue_module
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import billiard
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from ganft.db.session import get_engine, session_scope
from ganft.repo import lifecycle
from ganft.repo.lifecycle import ArtifactRecord, ClaimedJob
from ganft.settings import Settings
from ganft.store import Store, StoreUnavailable, open_store, with_store_retries
from worker import child as child_module
from worker import staging
from worker.app import shutdown_requested
from worker.pictures import LivePictures
from worker.progress import ProgressBatch, ProgressRecorder, json_safe

POLL_S = 0.2  # longest wait for a child message: the loop's reaction time
STATUS_POLL_S = 1.0  # how often the job's status is read when no write told us (cancel latency)
PICTURE_INTERVAL_S = 2.0  # at most one publication of the live pictures per interval (evaluations are rare)

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    result: dict[str, Any] | None = None  # {"metrics", "artifacts"} from the child
    error: dict[str, str] | None = None  # {"code", "message"} from the child
    stop: str | None = None  # why we stopped the child: cancel | pause | runtime | shutdown | lost
    exitcode: int | None = None
    killed: bool = False  # we killed the child (so a SIGKILL exit is ours, not the OOM killer's)


def run_claimed_job(job: ClaimedJob, settings: Settings) -> str:
    """Run a job this worker has claimed until it ends; returns the status it ended in
    (`lost` when another worker or the reaper took it meanwhile)."""
    engine = get_engine(settings.database_url)
    store = open_store(settings.store_url, settings)
    run_dir = settings.data_dir.resolve() / "runs" / job.id
    shutil.rmtree(run_dir, ignore_errors=True)  # the store holds the truth; an old folder is stale
    try:
        try:
            # S3 down at the start: retried within half a lease (no heartbeat runs yet), then a clear code.
            args = with_store_retries(
                lambda: staging.stage_inputs(
                    job,
                    store,
                    run_dir,
                    inception_weights=settings.inception_weights,
                    torch_threads=settings.torch_threads,
                ),
                budget_s=settings.lease_s / 2,
                what=f"job {job.id}: fetching its inputs",
            )
        except StoreUnavailable as exc:
            message = f"the artifact store stayed unavailable while the job's inputs were fetched: {exc}"
            return _end(engine, job, "failed", "store_unavailable", message)
        except Exception as exc:
            log.exception("job %s: cannot fetch its inputs", job.id)
            return _end(engine, job, "failed", "internal", f"the job's inputs could not be fetched: {exc}")
        supervisor = Supervisor(job, settings, engine, store, Path(args.out_dir))
        return supervisor.finish(supervisor.run(args))
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _end(engine: Engine, job: ClaimedJob, status: str, code: str | None = None, message: str | None = None) -> str:
    with session_scope(engine) as session:
        ended = lifecycle.end_job(
            session, job_id=job.id, worker_id=job.worker_id, status=status, error_code=code, error_message=message
        )
    if not ended:
        return "lost"
    log.info("job %s: %s%s", job.id, status, f" ({code}: {message})" if code else "")
    return status


def _kill(child: Any) -> None:
    try:
        os.kill(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # it exited meanwhile


class Supervisor:
    """Watches one training child for one job attempt."""

    def __init__(self, job: ClaimedJob, settings: Settings, engine: Engine, store: Store, out_dir: Path) -> None:
        self.job = job
        self.out_dir = out_dir
        self.settings = settings
        self.engine = engine
        self.store = store
        self.recorder = ProgressRecorder(self._write_progress, interval_s=settings.progress_interval_s)
        self.pictures = LivePictures(store, job.id, out_dir, self._record_picture, interval_s=PICTURE_INTERVAL_S)
        self.checkpoint_key = job.checkpoint_key
        self._renewed = self._next_status = self._next_heartbeat = 0.0  # monotonic times, set by _watch

    # ------------------------------------------------------------ the loop

    def run(self, args: child_module.ChildArgs) -> Outcome:
        # spawn, never fork: CUDA must not be initialised in this process. billiard is Celery's fork
        # of multiprocessing with the same API; unlike the stdlib it lets a prefork pool process
        # (which is daemonic) start a child. We supervise that child and it dies with us.
        ctx = billiard.get_context("spawn")
        messages: Any = ctx.Queue()
        abort = ctx.Event()
        child = ctx.Process(target=child_module.main, args=(args, messages, abort), name=f"train-{self.job.id}")
        child.start()
        log.info("job %s: attempt %d, training in pid %s", self.job.id, self.job.attempt, child.pid)
        outcome = Outcome()
        try:
            self._watch(child, messages, abort, outcome)
        finally:  # whatever happens here, no training process outlives its supervisor
            if child.is_alive():
                _kill(child)
                outcome.killed = True
            child.join()
        self._drain(messages, outcome, wait=0.0, until_empty=True)
        outcome.exitcode = child.exitcode
        messages.close()
        return outcome

    def _watch(self, child: Any, messages: Any, abort: Any, outcome: Outcome) -> None:
        started = time.monotonic()
        self._renewed = self._next_status = started  # the claim itself took the lease
        self._next_heartbeat = started + self.settings.lease_s / 4
        kill_at: float | None = None
        while child.is_alive():
            self._drain(messages, outcome, wait=POLL_S)
            now = time.monotonic()
            status = self._job_status(now) if outcome.stop != "lost" else None
            reason = self._stop_reason(status, now - started)
            if reason and outcome.stop is None:
                outcome.stop = reason
                abort.set()
                kill_at = now if reason == "lost" else now + self.settings.cancel_grace_s
                log.warning("job %s: stopping the trainer (%s)", self.job.id, reason)
            if outcome.stop != "lost" and self.pictures.due():
                self._publish_pictures()
            if kill_at is not None and now >= kill_at and child.is_alive():
                log.warning("job %s: the trainer did not stop in time; killing pid %s", self.job.id, child.pid)
                _kill(child)
                outcome.killed = True
                kill_at = None

    def _job_status(self, now: float) -> str | None:
        """Do whichever DB call is due (progress write, heartbeat, status read) and return the job's
        status as it answered; None when the job is no longer ours. A DB outage counts as `running`
        until our lease would have run out: then someone else may hold the job."""
        status: str | None = "running"
        try:
            if self.recorder.due():
                status = self.recorder.flush()
                self._next_status = now + STATUS_POLL_S
            if status is not None and now >= self._next_heartbeat:
                status = self._session(lifecycle.renew_lease, lease_s=self.settings.lease_s)
                self._renewed, self._next_heartbeat = now, now + self.settings.lease_s / 4
                self._next_status = now + STATUS_POLL_S
            elif status is not None and now >= self._next_status:
                status = self._session(lifecycle.current_status)
                self._next_status = now + STATUS_POLL_S
        except SQLAlchemyError as exc:
            log.warning("job %s: database unavailable (%s); retrying", self.job.id, type(exc).__name__)
            return None if now - self._renewed > self.settings.lease_s else "running"
        return status

    def _stop_reason(self, status: str | None, elapsed_s: float) -> str | None:
        if status is None:
            return "lost"
        if status == "cancelling":
            return "cancel"
        if status == "pausing":
            return "pause"
        if self.job.max_runtime_s is not None and elapsed_s > self.job.max_runtime_s:
            return "runtime"
        if shutdown_requested():
            return "shutdown"
        return None

    def _drain(self, messages: Any, outcome: Outcome, *, wait: float, until_empty: bool = False) -> None:
        """Handle every queued message; wait up to `wait` s for the first one."""
        timeout: float | None = wait
        while True:
            try:
                kind, payload = messages.get(timeout=timeout) if timeout else messages.get_nowait()
            except queue_module.Empty:
                if until_empty and timeout == 0.0:
                    timeout = 0.05  # the child's last message may still be in the pipe's feeder
                    continue
                return
            except (EOFError, OSError, ValueError):  # the child died mid-message
                return
            timeout = 0.0
            if kind == "progress":
                self.recorder.add(payload)
                if payload["kind"] == "checkpoint" and payload.get("path") and outcome.stop != "lost":
                    try:
                        self._upload_checkpoint(payload)
                    except FileNotFoundError:
                        # The trainer already rotated it away (it keeps its newest few); a newer
                        # checkpoint's message is behind this one in the queue.
                        log.info("job %s: checkpoint %s was superseded before upload", self.job.id, payload["path"])
                    except (OSError, SQLAlchemyError):  # the next checkpoint tries again
                        log.exception("job %s: could not store checkpoint %s", self.job.id, payload["path"])
                elif payload["kind"] == "artifact":
                    self.pictures.add(payload.get("path"), int(payload["step"]))
            elif kind == "result":
                outcome.result = payload
            elif kind == "error":
                outcome.error = payload

    # ------------------------------------------------------------ DB and store

    def _session(self, fn: Any, **kwargs: Any) -> Any:
        with session_scope(self.engine) as session:
            return fn(session, job_id=self.job.id, worker_id=self.job.worker_id, **kwargs)

    def _write_progress(self, batch: ProgressBatch) -> str | None:
        return self._session(
            lifecycle.record_progress,
            step=batch.step,
            total_steps=batch.total_steps,
            steps_per_second=batch.steps_per_second,
            metrics=batch.metrics,
            events=batch.events,
        )

    def _upload_checkpoint(self, update: dict[str, Any]) -> None:
        """Store a new checkpoint, point the job at it, then drop the previous one from the store."""
        if self.recorder.pending:
            self.recorder.flush()  # keep events in order: progress up to here, then the checkpoint
        path = self.out_dir / update["path"]
        key = staging.checkpoint_key(self.job.id, path.name)
        size, sha256 = self.store.put_file(key, path)
        dropped = self._session(
            lifecycle.record_checkpoint, key=key, step=int(update["step"]), size_bytes=size, sha256=sha256
        )
        if dropped is None:
            return
        self.checkpoint_key = key
        for old in dropped:
            try:
                self.store.delete(old)
            except OSError:  # an orphan file, not a wrong record: the job's folder goes with the job
                log.warning("job %s: could not delete dropped checkpoint %s", self.job.id, old)

    def _record_picture(self, artifact: ArtifactRecord, step: int) -> bool:
        if self.recorder.pending:
            self.recorder.flush()  # keep events in order: the evaluation first, then its pictures
        return bool(self._session(lifecycle.record_artifact, artifact=artifact, step=step))

    def _publish_pictures(self) -> None:
        try:
            self.pictures.publish()
        except (OSError, SQLAlchemyError):  # they stay pending: the next interval tries again
            log.exception("job %s: could not publish its pictures", self.job.id)

    # ------------------------------------------------------------ the end

    def finish(self, outcome: Outcome) -> str:
        """Move the job to its final state (or back to the queue) from what the child did."""
        job = self.job
        if outcome.stop == "lost":
            log.warning("job %s: lease lost (reaped or taken over); leaving it alone", job.id)
            return "lost"
        if self.recorder.pending and self.recorder.flush() is None:
            return "lost"
        if outcome.result is not None and outcome.exitcode == 0:
            return self._succeed(outcome.result)
        if self.pictures.pending:
            self._publish_pictures()  # a cancelled or failed job keeps the pictures of its last evaluation
        if outcome.stop == "cancel":
            return _end(self.engine, job, "cancelled")
        error = outcome.error
        if outcome.stop == "pause" and (error is None or error.get("code") == "cancelled"):
            # Stopped by the pause (or killed after the grace period: the newest stored checkpoint counts).
            status = self._session(lifecycle.pause_job)
            log.info("job %s: %s (newest checkpoint %s)", job.id, status, self.checkpoint_key)
            return status or "lost"
        if error is not None and error.get("code") != "cancelled":
            return _end(self.engine, job, "failed", error.get("code", "internal"), error.get("message"))
        if outcome.stop == "shutdown":
            status = self._session(lifecycle.release_job)
            log.info("job %s: worker shutting down; job is %s again", job.id, status)
            return status or "lost"
        if outcome.stop == "runtime":
            message = f"the job ran longer than max_runtime_s={job.max_runtime_s}; the last checkpoint is kept"
            return _end(self.engine, job, "failed", "max_runtime_exceeded", message)
        if outcome.exitcode == -signal.SIGKILL and not outcome.killed:
            message = "the training process was killed by the system, most likely for running out of memory"
            return _end(self.engine, job, "failed", "out_of_memory", message)
        message = f"the training process exited with code {outcome.exitcode} without a result"
        return _end(self.engine, job, "failed", "internal", message)

    def _succeed(self, result: dict[str, Any]) -> str:
        job = self.job
        try:
            artifacts = with_store_retries(
                lambda: staging.upload_artifacts(self.store, job.id, self.out_dir, list(result["artifacts"])),
                budget_s=self.settings.lease_s / 2,
                what=f"job {job.id}: storing its outputs",
            )
            model = staging.output_model(job, self.out_dir, artifacts)
        except StoreUnavailable as exc:
            message = f"the artifact store stayed unavailable while the job's outputs were stored: {exc}"
            return _end(self.engine, job, "failed", "store_unavailable", message)
        except (OSError, ValueError) as exc:
            log.exception("job %s: cannot store its outputs", job.id)
            return _end(self.engine, job, "failed", "internal", f"the job's outputs could not be stored: {exc}")
        with session_scope(self.engine) as session:
            done = lifecycle.succeed_job(
                session,
                job_id=job.id,
                worker_id=job.worker_id,
                result=json_safe(result["metrics"]),
                artifacts=artifacts,
                output_model=model,
            )
        if not done:
            return "lost"
        log.info("job %s: succeeded (%d artifacts)", job.id, len(artifacts))
        return "succeeded"
