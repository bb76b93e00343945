"""Reliability fixtures: real processes (uvicorn, Celery workers, a private redis-server, a private
PostgreSQL) that the tests stop, kill and restart. Everything listens on loopback only.

    rel_settings   function Settings on the session's test database, our own Redis DB, short lease/sweep
    rel_env        function os.environ + the GANFT_* variables of rel_settings (for subprocesses)
    processes      function a Processes registry: start_api / start_worker / redis_server / postgres_server;
                            everything it started is stopped at teardown

The shared Redis and Postgres stay up: a test that stops a server stops its own private one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis

from ganft.embedded import free_port
from ganft.settings import Settings, get_settings
from tests.conftest import TEST_REDIS
from tests.worker.helpers import ROOT, WorkerProcess, wait_for

REDIS_URL = f"{TEST_REDIS}/13"  # a DB number no other test part uses


def env_of(settings: Settings, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "GANFT_DATA_DIR": str(settings.data_dir),
            "GANFT_DATABASE_URL": settings.database_url,
            "GANFT_BROKER_URL": settings.broker_url,
            "GANFT_STORE_URL": settings.store_url,
            "GANFT_LEASE_S": str(settings.lease_s),
            "GANFT_REAPER_INTERVAL_S": str(settings.reaper_interval_s),
            "GANFT_PROGRESS_INTERVAL_S": str(settings.progress_interval_s),
            "GANFT_BROKER_TIMEOUT_S": str(settings.broker_timeout_s),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


@pytest.fixture
def rel_settings(pg_url: str, clean_db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).flushdb()
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=pg_url,
        broker_url=REDIS_URL,
        lease_s=3.0,
        reaper_interval_s=1.0,
        progress_interval_s=0.25,
        broker_timeout_s=1.0,
    )
    for key, value in env_of(settings).items():
        if key.startswith("GANFT_"):
            monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield settings
    get_settings.cache_clear()


class ApiProcess:
    """`uvicorn api.main:app` as a process of its own session (SIGKILL reaches nothing else)."""

    def __init__(self, env: dict[str, str], log_path: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        command = [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(self.port)]
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_up(self, timeout: float = 60.0) -> None:
        """Up = answering HTTP (/healthz), whatever the state of its dependencies."""

        def up() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"the API exited with {self.process.returncode}:\n{self.logs()}")
            try:
                return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, timeout=timeout, what="the API to answer", logs=self.logs)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


class RedisServer:
    """A private redis-server on a free loopback port, no persistence: a restart loses every message."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--daemonize", "no", "--dir", str(self.folder)]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        wait_for(lambda: _pings(client), timeout=10, what="redis-server to start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


class PostgresServer:
    """A private PostgreSQL cluster (initdb in tmp, run as the `postgres` OS user; trust auth, loopback)."""

    def __init__(self, folder: Path) -> None:
        versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        if not versions or shutil.which("runuser") is None:
            pytest.skip("no PostgreSQL server binaries (or runuser) on this machine")
        self.bin = versions[-1].parent
        self.port = free_port()
        self.folder = folder
        self.data = folder / "pgdata"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        shutil.chown(folder, "postgres", "postgres")
        self._as_postgres(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres")

    def _as_postgres(self, *command: str) -> None:
        result = subprocess.run(["runuser", "-u", "postgres", "--", *command], capture_output=True, timeout=120)
        if result.returncode != 0:
            raise AssertionError(f"{command[0]} failed:\n{result.stdout.decode()}\n{result.stderr.decode()}")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options,
                          "-l", str(self.folder / "server.log"), "-w", "-t", "60", "start")  # fmt: skip

    def stop(self, mode: str = "immediate") -> None:
        """`immediate` = the server dies as in a crash (no checkpoint; clients see their connections cut)."""
        if (self.data / "postmaster.pid").exists():
            self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")


@dataclass
class Processes:
    tmp: Path
    env: dict[str, str]
    apis: list[ApiProcess] = field(default_factory=list)
    workers: list[WorkerProcess] = field(default_factory=list)
    servers: list[RedisServer | PostgresServer] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)  # removed at close

    def start_api(
        self, *, port: int | None = None, wait: bool = True, env: Mapping[str, str] | None = None, **extra_env: str
    ) -> ApiProcess:
        """`env` and `extra_env`: variables on top of the test's (a dict, or keywords)."""
        api = ApiProcess({**self.env, **(env or {}), **extra_env}, self.tmp / f"api-{len(self.apis)}.log", port)
        self.apis.append(api)
        if wait:
            api.wait_up()
        return api

    def start_worker(
        self, name: str, *, wait: bool = True, env: Mapping[str, str] | None = None, **extra_env: str
    ) -> WorkerProcess:
        full_env = {**self.env, **(env or {}), **extra_env}
        worker = WorkerProcess(name, full_env, self.tmp / f"{name}-{len(self.workers)}.log")
        self.workers.append(worker)
        if wait:
            worker.wait_ready()
        return worker

    def redis_server(self) -> RedisServer:
        server = RedisServer(self.tmp / "redis")
        self.servers.append(server)
        server.start()
        return server

    def postgres_server(self) -> PostgresServer:
        # Not under pytest's tmp folder: each pytest run resets that tree to mode 0700 (root only),
        # which would lock the `postgres` user out of a running cluster.
        folder = Path(tempfile.mkdtemp(prefix="ganft-reliability-pg-"))
        self.folders.append(folder)
        server = PostgresServer(folder)
        self.servers.append(server)
        server.start()
        return server

    def logs(self) -> str:
        running: list[ApiProcess | WorkerProcess] = [*self.apis, *self.workers]
        parts = [f"==== {p.log_path.name} ====\n{p.logs()[-15_000:]}" for p in running]
        return "\n".join(parts)

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        for api in self.apis:
            api.stop()
        for server in self.servers:
            server.stop()
        for folder in self.folders:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def processes(rel_settings: Settings, tmp_path: Path) -> Iterator[Processes]:
    registry = Processes(tmp_path, env_of(rel_settings))
    yield registry
    registry.close()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "soak: many jobs; GANFT_SOAK=1 (+ GANFT_SOAK_JOBS) makes it the full soak")
