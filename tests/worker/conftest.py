"""Worker tests: the session's Postgres database (tests/conftest.py, emptied before each test), a Redis
DB number of their own, and real worker processes.

Tables are truncated rather than a transaction rolled back because the worker under test is
another process and must see committed rows. Leases and sweeps are seconds long here, so
reaping and resuming take seconds, not minutes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ganft.settings import Settings, get_settings
from ganft.store import Store, open_store
from tests.conftest import TEST_REDIS
from tests.worker.helpers import WorkerProcess

REDIS_URL = f"{TEST_REDIS}/11"  # a DB number no other test part uses


@pytest.fixture
def settings(pg_url: str, clean_db: None, tmp_path: Path) -> Settings:
    """Overrides the root fixture: short lease, sweep and progress intervals; our own Redis DB."""
    redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).flushdb()
    return Settings(
        data_dir=tmp_path / "data",
        database_url=pg_url,
        broker_url=REDIS_URL,
        lease_s=3.0,
        reaper_interval_s=0.5,
        progress_interval_s=0.25,
        cancel_grace_s=20.0,
    )


@pytest.fixture(autouse=True)
def worker_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The GANFT_* variables of `settings`, set in this process (code that calls get_settings())
    and handed to the worker processes a test starts."""
    env = {
        "GANFT_DATA_DIR": str(settings.data_dir),
        "GANFT_DATABASE_URL": settings.database_url,
        "GANFT_BROKER_URL": settings.broker_url,
        "GANFT_STORE_URL": settings.store_url,
        "GANFT_LEASE_S": str(settings.lease_s),
        "GANFT_REAPER_INTERVAL_S": str(settings.reaper_interval_s),
        "GANFT_PROGRESS_INTERVAL_S": str(settings.progress_interval_s),
        "GANFT_CANCEL_GRACE_S": str(settings.cancel_grace_s),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield env
    get_settings.cache_clear()


@pytest.fixture
def store(settings: Settings) -> Store:
    return open_store(settings.store_url)


@pytest.fixture
def start_worker(worker_env: dict[str, str], tmp_path: Path) -> Iterator[WorkerProcess.Factory]:
    """Start real Celery worker processes (`-c 1 --pool prefork`); all are stopped at teardown."""
    started: list[WorkerProcess] = []

    def factory(name: str = "w1", **extra_env: str) -> WorkerProcess:
        worker = WorkerProcess(name, {**os.environ, **worker_env, **extra_env}, tmp_path / f"{name}.log")
        started.append(worker)
        worker.wait_ready()
        return worker

    yield factory
    for worker in started:
        worker.stop()
