"""End-to-end fixtures: the real service as separate processes, driven over HTTP by ganft.client.

    stack           uvicorn api.main:app + a Celery worker (prefork, -c 1) on Postgres + Redis
    embedded_stack  `ganft up`'s stack (ganft.embedded.EmbeddedStack): SQLite, filesystem broker, a tmp data dir

When a test fails, the processes' logs are attached to its report.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from ganft.db.session import session_scope
from ganft.embedded import EmbeddedStack, free_port
from ganft.repo import keys
from ganft.settings import Settings, get_settings
from tests.conftest import TEST_REDIS
from tests.worker.helpers import ROOT, WorkerProcess, wait_for

REDIS_URL = f"{TEST_REDIS}/12"  # a DB number no other test part uses

pytestmark = pytest.mark.e2e


@dataclass
class Stack:
    url: str
    key: str
    log_files: list[Path]

    def logs(self) -> str:
        parts = []
        for path in self.log_files:
            text = path.read_text(errors="replace") if path.exists() else "(no log)"
            parts.append(f"==== {path.name} ====\n{text[-20_000:]}")
        return "\n".join(parts)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        for name in ("stack", "embedded_stack"):
            stack = getattr(item, "funcargs", {}).get(name)
            if isinstance(stack, Stack):
                report.sections.append((f"{name} logs", stack.logs()))
    return report


@pytest.fixture
def stack_env() -> dict[str, str]:
    """Extra GANFT_* variables for both processes of `stack` (a test folder's conftest may override it)."""
    return {}


@pytest.fixture
def stack(pg_url: str, clean_db: None, engine: Any, tmp_path: Path, stack_env: dict[str, str]) -> Iterator[Stack]:
    """The production shape on one machine: API server and worker as processes, Postgres, Redis."""
    redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).flushdb()
    data_dir = tmp_path / "data"
    env = {
        **os.environ,
        "GANFT_DATA_DIR": str(data_dir),
        "GANFT_DATABASE_URL": pg_url,
        "GANFT_BROKER_URL": REDIS_URL,
        "GANFT_STORE_URL": (data_dir / "store").as_uri(),
        "GANFT_PROGRESS_INTERVAL_S": "0.25",
        "GANFT_SSE_POLL_INTERVAL_S": "0.1",
        "PYTHONUNBUFFERED": "1",
        **stack_env,
    }
    with session_scope(engine) as session:
        _, key = keys.create_key(session, tenant_name="e2e")
    port = free_port()
    api_log = tmp_path / "api.log"
    with open(api_log, "wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    worker = WorkerProcess("e2e", env, tmp_path / "worker.log")
    result = Stack(f"http://127.0.0.1:{port}", key, [api_log, worker.log_path])
    try:
        worker.wait_ready()

        def ready() -> bool:
            if server.poll() is not None:
                raise AssertionError(f"the API server exited with {server.returncode}:\n{result.logs()}")
            try:
                return httpx.get(f"{result.url}/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, timeout=60, what="the API server to be ready", logs=result.logs)
        yield result
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
        worker.stop()


@pytest.fixture
def embedded_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    """`ganft up` with no settings but a data dir: SQLite, the filesystem broker, a local store."""
    for name in list(os.environ):
        if name.startswith("GANFT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("GANFT_DATA_DIR", str(tmp_path / "ganft"))
    monkeypatch.setenv("GANFT_PROGRESS_INTERVAL_S", "0.25")
    get_settings.cache_clear()
    settings: Settings = get_settings()
    assert settings.database_url.startswith("sqlite:") and settings.is_embedded_broker
    logs = tmp_path / "logs"
    embedded = EmbeddedStack(settings, port=free_port(), logs=logs)
    result = Stack(embedded.url, "", [logs / "api.log", logs / "worker.log"])
    try:
        embedded.start()
        result.key = embedded.key
        yield result
    finally:
        embedded.stop()
        get_settings.cache_clear()
