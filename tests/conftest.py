"""Shared fixtures: a fresh Postgres database per test session, settings, the app, API keys.

Nothing here runs unless a test asks for it (core tests need no database).

    pg_url          session  URL of a fresh database `ganft_test_<random>`, migrated to head, dropped at the end
    engine          session  SQLAlchemy engine on it
    clean_db        function every table truncated (each test starts from an empty database)
    settings        function Settings: that database, GANFT_DATA_DIR=tmp, broker redis://127.0.0.1:6379/15 (flushed)
    ganft_env       function os.environ + the GANFT_* variables of `settings`, for subprocesses
                             (uvicorn api.main:app, celery -A worker.app ...)
    app / client    function create_app(settings) / a TestClient on it (lifespan run)
    make_key        function make_key("acme") -> a new API key for that tenant (created if needed)
    tenant_headers  function tenant_headers("acme") -> {"Authorization": "Bearer <new key>"}
    api_key         function a key of tenant "acme"
    headers / other_headers  function auth headers of tenants "acme" and "globex"
    make_live_server function make_live_server(**settings overrides) -> "http://127.0.0.1:<port>": a real
                             uvicorn server in a thread running create_app(settings); stopped after the test
    live_server     function make_live_server() with the defaults

Set GANFT_TEST_PG_ADMIN_URL to use another server (default postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from ganft.settings import Settings

if TYPE_CHECKING:  # imported lazily: core tests need neither
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

PG_ADMIN_URL = os.environ.get("GANFT_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
# The Redis server every test part uses, each on its own DB number (15 here; worker 11, e2e 12,
# reliability 13). Point GANFT_TEST_REDIS at a private `redis-server --port N` to run two suites at once.
TEST_REDIS = os.environ.get("GANFT_TEST_REDIS", "redis://127.0.0.1:6379").rstrip("/")
TEST_BROKER_URL = os.environ.get("GANFT_TEST_BROKER_URL", f"{TEST_REDIS}/15")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    from ganft.db.migrate import upgrade

    name = f"ganft_test_{secrets.token_hex(4)}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def engine(pg_url: str) -> Iterator[Engine]:
    from ganft.db.session import make_engine

    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture
def clean_db(engine: Engine) -> None:
    """Empty every table (TRUNCATE is quick and also isolates work done by threadpools and servers)."""
    from ganft.db.tables import Base

    names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(text("SET LOCAL lock_timeout = '20s'"))
        connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


@pytest.fixture
def settings(pg_url: str, clean_db: None, tmp_path: Path) -> Settings:
    redis.Redis.from_url(TEST_BROKER_URL, socket_connect_timeout=2).flushdb()
    return Settings(data_dir=tmp_path / "data", database_url=pg_url, broker_url=TEST_BROKER_URL)


@pytest.fixture
def ganft_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "GANFT_DATA_DIR": str(settings.data_dir),
            "GANFT_DATABASE_URL": settings.database_url,
            "GANFT_BROKER_URL": settings.broker_url,
            "GANFT_STORE_URL": settings.store_url,
        }
    )
    return env


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    from api.main import create_app

    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    from fastapi.testclient import TestClient

    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def make_key(engine: Engine, clean_db: None) -> Callable[[str], str]:
    from ganft.db.session import session_scope
    from ganft.repo import keys

    def make(tenant: str = "acme") -> str:
        with session_scope(engine) as session:
            _, key = keys.create_key(session, tenant_name=tenant)
        return key

    return make


@pytest.fixture
def tenant_headers(make_key: Callable[[str], str]) -> Callable[[str], dict[str, str]]:
    def headers(tenant: str = "acme") -> dict[str, str]:
        return {"Authorization": f"Bearer {make_key(tenant)}"}

    return headers


@pytest.fixture
def api_key(make_key: Callable[[str], str]) -> str:
    return make_key("acme")


@pytest.fixture
def headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


@pytest.fixture
def other_headers(tenant_headers: Callable[[str], dict[str, str]]) -> dict[str, str]:
    return tenant_headers("globex")


@pytest.fixture
def make_live_server(settings: Settings) -> Iterator[Callable[..., str]]:
    """make_live_server(**settings overrides) -> base URL of a real uvicorn server (a thread, a free port)
    running create_app(settings); the event stream polls every 0.05 s unless overridden."""
    import uvicorn

    from api.main import create_app

    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(**overrides: Any) -> str:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        app = create_app(settings.model_copy(update={"sse_poll_interval_s": 0.05, **overrides}))
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def live_server(make_live_server: Callable[..., str]) -> str:
    return make_live_server()
