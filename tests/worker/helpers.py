"""Helpers for worker tests: rows for a job, a real Celery worker process, waiting with a clear failure."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
from sqlalchemy import Engine, select

from ganft.db.session import session_scope
from ganft.db.tables import Dataset, Job, JobEvent
from ganft.repo import jobs, keys
from ganft.store import Store
from ganft_core.config import HYPERPARAMETERS
from worker.app import worker_command

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def wait_for(check: Callable[[], T | None], *, timeout: float, what: str, logs: Callable[[], str] | None = None) -> T:
    """Poll `check` until it returns something truthy; on timeout fail naming `what` (with logs)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f"\n---- logs ----\n{logs()}" if logs else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{detail}")
        time.sleep(0.1)


def features_npz(n_per_class: int = 60, labeled_per_class: int = 5, seed: int = 0) -> bytes:
    """A small 3-class, 8-feature dataset (Gaussian blobs), most of it unlabeled, as npz bytes."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 3.0, size=(3, 8))
    x = np.concatenate([c + rng.normal(size=(n_per_class, 8)) for c in centers]).astype(np.float32)
    y = np.repeat(np.arange(3), n_per_class)
    keep = np.zeros_like(y, dtype=bool)
    for k in range(3):
        keep[np.flatnonzero(y == k)[:labeled_per_class]] = True
    y = np.where(keep, y, -1)
    buf = io.BytesIO()
    np.savez(buf, x=x, y=y)
    return buf.getvalue()


def make_job(
    engine: Engine,
    store: Store,
    *,
    method: str = "ssgan",
    hyperparameters: dict[str, Any] | None = None,
    data: bytes | None = None,
    max_attempts: int = 3,
    max_runtime_s: int | None = None,
    seed: int = 0,
    tenant: str = "worker-tests",
) -> str:
    """A tenant, a ready npz dataset in the store and a queued job, as the API would make them."""
    data = features_npz() if data is None else data
    hp = HYPERPARAMETERS[method].model_validate(hyperparameters or {}).model_dump()
    with session_scope(engine) as session:
        owner = keys.get_or_create_tenant(session, name=tenant)
        dataset = Dataset(tenant_id=owner.id, name="data.npz", format="npz", status="ready", size_bytes=len(data))
        session.add(dataset)
        session.flush()
        dataset.storage_key = f"datasets/{dataset.id}/data"
        dataset.sha256 = hashlib.sha256(data).hexdigest()
        store.put_bytes(dataset.storage_key, data)
        job = jobs.create(
            session,
            tenant_id=owner.id,
            method=method,
            dataset_id=dataset.id,
            validation_dataset_id=None,
            base_model_id=None,
            evaluator_model_id=None,
            hyperparameters=hp,
            seed=seed,
            max_runtime_s=max_runtime_s,
            metadata={},
            total_steps=hp["steps"],
            max_attempts=max_attempts,
            idempotency_key=None,
            request_hash="0" * 64,
        )
        return job.id


def job_row(engine: Engine, job_id: str) -> Job:
    with session_scope(engine) as session:
        return session.execute(select(Job).where(Job.id == job_id)).scalar_one()


def job_events(engine: Engine, job_id: str) -> list[tuple[int, str, dict[str, Any]]]:
    with session_scope(engine) as session:
        rows = session.execute(
            select(JobEvent.seq, JobEvent.type, JobEvent.data).where(JobEvent.job_id == job_id).order_by(JobEvent.seq)
        ).all()
    return [(seq, type_, data) for seq, type_, data in rows]


class WorkerProcess:
    """The production worker command (`worker.app.worker_command`, what docker-compose.yml runs)."""

    class Factory(Protocol):
        def __call__(self, name: str = "w1", **extra_env: str) -> WorkerProcess: ...

    def __init__(self, name: str, env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        command = [sys.executable, "-m", *worker_command(f"{name}@%h")]
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        # A session of its own: stopping it reaches the training child too, as on a real machine.
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"worker {self.name} exited with {self.process.returncode}:\n{self.logs()}")
            return " ready." in self.logs()

        wait_for(ready, timeout=timeout, what=f"worker {self.name} to be ready", logs=self.logs)

    def kill(self) -> None:
        """Lose the machine: SIGKILL the worker and everything it started, no clean-up at all."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout: float = 20.0) -> None:
        """Warm shutdown (SIGTERM to the main process, as `docker stop` does), then kill."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()
