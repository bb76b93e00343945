"""Worker tests: a real Postgres database of their own, a real Redis DB number, real worker processes.

A separate database (not a rolled-back transaction) because the worker under test is another
process and must see committed rows; each test starts from empty tables and an empty queue.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from sqlalchemy import Engine, text

from ganft.db.migrate import upgrade
from ganft.db.session import get_engine
from ganft.settings import Settings, get_settings
from ganft.store import Store, open_store
from tests.worker.helpers import WorkerProcess

PG_ADMIN_DSN = "host=127.0.0.1 port=5432 user=root dbname=postgres"
DB_NAME = "ganft_worker_test"
DB_URL = f"postgresql+psycopg://root@127.0.0.1:5432/{DB_NAME}"
REDIS_URL = "redis://127.0.0.1:6379/11"  # a DB number no other test part uses
TABLES = "artifacts, job_metrics, job_events, jobs, models, datasets, api_keys, tenants"


def _recreate_database() -> None:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB_NAME}")
    upgrade(DB_URL)


@pytest.fixture(scope="package")
def worker_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """GANFT_* for this package's tests and the worker processes they start; restored afterwards.

    Short lease and sweep intervals so that reaping and resuming take seconds, not minutes.
    """
    _recreate_database()
    data_dir = tmp_path_factory.mktemp("worker-data")
    env = {
        "GANFT_DATABASE_URL": DB_URL,
        "GANFT_BROKER_URL": REDIS_URL,
        "GANFT_DATA_DIR": str(data_dir),
        "GANFT_STORE_URL": (data_dir / "store").as_uri(),
        "GANFT_LEASE_S": "3",
        "GANFT_REAPER_INTERVAL_S": "0.5",
        "GANFT_PROGRESS_INTERVAL_S": "0.25",
        "GANFT_CANCEL_GRACE_S": "20",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    get_settings.cache_clear()
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    get_settings.cache_clear()


@pytest.fixture(scope="package")
def settings(worker_env: dict[str, str]) -> Settings:
    return get_settings()


@pytest.fixture(scope="package")
def engine(settings: Settings) -> Engine:
    return get_engine(settings.database_url)


@pytest.fixture(scope="package")
def store(settings: Settings) -> Store:
    return open_store(settings.store_url)


@pytest.fixture(autouse=True)
def clean_state(engine: Engine) -> None:
    """Empty tables and an empty Redis DB before each test."""
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {TABLES} CASCADE"))
    redis.Redis.from_url(REDIS_URL).flushdb()


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
