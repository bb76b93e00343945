"""A pause that arrives while the worker is storing a checkpoint: the runner (in this process, with its real
training child) finishes that upload, then stops the trainer, stores the stopping checkpoint and ends
`paused` with the job pointing at a checkpoint that is in the store and listed. The store is wrapped to
inject the timing: its first checkpoint upload requests the pause and then takes a second."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from ganft.db.session import session_scope
from ganft.db.tables import JobCheckpoint
from ganft.repo import jobs, lifecycle
from ganft.settings import Settings
from ganft.store import Store
from tests.worker.helpers import job_events, job_row, make_job
from tests.worker.test_pause import HP
from worker import runner


class PausingStore:
    """The real store; the first checkpoint upload asks for a pause while it is under way (an injected fault)."""

    def __init__(self, store: Store, engine: Engine, job_id: str) -> None:
        self._store, self._engine, self._job_id = store, engine, job_id
        self.uploads: list[str] = []

    def put_file(self, key: str, path: Path | str) -> tuple[int, str]:
        if "/checkpoints/" in key:
            if not self.uploads:
                with session_scope(self._engine) as session:
                    assert jobs.request_pause(session, job_id=self._job_id).status == "pausing"
                time.sleep(1.0)  # the pause is recorded while this upload is still going
            self.uploads.append(key)
        return self._store.put_file(key, path)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_pause_during_a_checkpoint_upload_ends_consistent(
    engine: Engine, store: Store, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = make_job(engine, store, hyperparameters={**HP, "steps": 100_000})
    with session_scope(engine) as session:
        claimed = lifecycle.claim_job(session, job_id=job_id, worker_id="w-test", lease_s=settings.lease_s)
    assert claimed is not None
    wrapped = PausingStore(store, engine, job_id)
    monkeypatch.setattr(runner, "open_store", lambda url, settings=None: wrapped)

    assert runner.run_claimed_job(claimed, settings) == "paused"

    row = job_row(engine, job_id)
    assert (row.status, row.worker_id, row.attempt) == ("paused", None, 0)
    assert len(wrapped.uploads) >= 2  # the interrupted one, then the trainer's stopping checkpoint
    assert row.checkpoint_key == wrapped.uploads[-1] and store.exists(row.checkpoint_key)
    with session_scope(engine) as session:
        kept = {
            c.step: c.storage_key for c in session.scalars(select(JobCheckpoint).where(JobCheckpoint.job_id == job_id))
        }
    assert kept[row.checkpoint_step or -1] == row.checkpoint_key
    assert all(store.exists(key) for key in kept.values())
    events = job_events(engine, job_id)
    last_checkpoint = max(seq for seq, t, _ in events if t == "checkpoint")
    paused = [(seq, d) for seq, t, d in events if t == "status" and d["status"] == "paused"]
    assert len(paused) == 1 and paused[0][0] > last_checkpoint  # paused only once every checkpoint was stored
    assert paused[0][1]["checkpoint_step"] == row.checkpoint_step
