"""Shared plumbing of the service benchmarks (api_load, transfer, dispatch, service_overhead).

    with service_stack() as stack:                 # private Postgres database (migrated), data dir, env
        keys = stack.create_keys("bench", 64)      # API keys of one tenant
        with api_server(stack, workers=2) as api:  # `uvicorn api.main:app --workers 2`, as in production
            ...api.url, api.worker_pids()...
        with celery_worker(stack) as worker: ...   # worker.app.worker_command()

Everything runs against 127.0.0.1 only: Postgres (a `ganft_bench_<hex>` database, dropped at
the end), an empty Redis database of its own (14, else 10, 9, 8, 7; flushed), uvicorn
and Celery subprocesses in sessions of their own (stopped by process group at the end). Memory
and CPU figures of processes: procfs.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from procfs import children

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("RESULTS.md")
OUT = Path(__file__).with_name("out")
PG_ADMIN_URL = os.environ.get("GANFT_BENCH_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("GANFT_BENCH_REDIS_URL", "redis://127.0.0.1:6379")
BROKER_DBS = (14, 10, 9, 8, 7)  # Redis databases a run may take as its broker (the tests use 11-13, 15)
BROKER_LOCK = "ganft-bench:lock"
BROKER_LOCK_S = 3 * 3600  # a crashed run's claim on a database expires after this
MIB = 1024**2


# ---------------------------------------------------------------- the machine


@dataclass(frozen=True)
class Machine:
    commit: str
    dirty: bool  # the working tree differs from the commit
    nproc: int
    cpu: str
    ram_gib: float
    python: str

    def describe(self) -> str:
        tree = f"`{self.commit}`" + (" + uncommitted changes" if self.dirty else "")
        return (
            f"commit {tree}; {self.nproc} CPUs ({self.cpu}), {self.ram_gib:.0f} GiB RAM, "
            f"Python {self.python}, shared with other engineers' jobs"
        )


def machine() -> Machine:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()

    cpu = platform.processor() or "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = next(
        int(x.split()[1]) for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")
    )
    return Machine(
        commit=git("rev-parse", "--short", "HEAD"),
        dirty=bool(git("status", "--porcelain", "--untracked-files=no")),
        nproc=os.cpu_count() or 1,
        cpu=cpu,
        ram_gib=mem_kib / 1024**2,
        python=platform.python_version(),
    )


def load_average() -> str:
    """The 1/5/15-minute load averages, e.g. `4.21 / 4.30 / 4.62` (the machine is shared)."""
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


# ---------------------------------------------------------------- database, data folder, env


@dataclass
class Stack:
    """A private database + data folder, and the GANFT_* environment that points processes at them."""

    database_url: str
    data_dir: Path
    broker_url: str
    env: dict[str, str] = field(default_factory=dict)

    def engine(self) -> Any:
        from ganft.db.session import get_engine

        return get_engine(self.database_url)

    def create_keys(self, tenant: str, n: int) -> list[str]:
        """`n` new API keys of `tenant` (created if needed)."""
        from ganft.db.session import session_scope
        from ganft.repo import keys

        with session_scope(self.engine()) as session:
            return [keys.create_key(session, tenant_name=tenant)[1] for _ in range(n)]

    def settings(self) -> Any:
        from ganft.settings import Settings

        return Settings(
            data_dir=self.data_dir, database_url=self.database_url, broker_url=self.broker_url,
            store_url=self.env["GANFT_STORE_URL"],
        )  # fmt: skip


@contextmanager
def own_broker() -> Iterator[str]:
    """The URL of an empty Redis database that this run alone uses (the first free of BROKER_DBS).

    Two runs sharing one would take (and flush) each other's Celery messages. A run claims a
    database with a lock key inside it (SET NX, expiring) and takes it only if nothing else is
    there (the tests use 11, 12, 13 and 15 without locks); it flushes it, lock included, at the end.
    """
    import redis

    token = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
    for db in BROKER_DBS:
        client = redis.Redis.from_url(f"{REDIS_URL}/{db}", socket_connect_timeout=2)
        if client.set(BROKER_LOCK, token, nx=True, ex=BROKER_LOCK_S):
            if client.dbsize() == 1:
                break
            client.delete(BROKER_LOCK)  # someone else's keys are there: not ours to flush
        client.close()
    else:
        raise RuntimeError(f"no empty, unclaimed Redis database among {BROKER_DBS} at {REDIS_URL}")
    try:
        yield f"{REDIS_URL}/{db}"
    finally:
        client.flushdb()
        client.close()


@contextmanager
def service_stack(tmp_dir: Path | None = None, **env: str) -> Iterator[Stack]:
    """A fresh `ganft_bench_<hex>` database migrated to head, a data folder, a Redis database of its own.

    `env` adds variables for the processes started on this stack (e.g. GANFT_CANCEL_GRACE_S).
    """
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from ganft.db.migrate import upgrade

    name = f"ganft_bench_{secrets.token_hex(4)}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        with own_broker() as broker_url, tempfile.TemporaryDirectory(prefix="ganft-bench-", dir=tmp_dir) as folder:
            data_dir = Path(folder) / "data"
            data_dir.mkdir()
            stack = Stack(url, data_dir, broker_url)
            stack.env = {
                "GANFT_DATA_DIR": str(data_dir),
                "GANFT_DATABASE_URL": url,
                "GANFT_BROKER_URL": broker_url,
                "GANFT_STORE_URL": (data_dir / "store").as_uri(),
                **env,
            }
            upgrade(url)
            try:
                yield stack
            finally:
                from ganft.db.session import get_engine

                get_engine(url).dispose()
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_http(url: str, timeout_s: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Poll `url` until it answers 200 (fails early when `process` exits)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout_s:g} s")
        time.sleep(0.1)


class Subprocess:
    """A child in a session of its own, logging to a file; `stop()` ends its whole process group."""

    def __init__(self, command: list[str], env: dict[str, str], log_path: Path, cwd: Path = ROOT) -> None:
        self.command = command
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def logs(self, tail: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:]

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM to the group (a warm shutdown), SIGKILL after `timeout_s`."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self._log.close()


@dataclass
class ApiServer:
    url: str
    workers: int
    server: Subprocess

    def worker_pids(self) -> list[int]:
        """The processes that serve requests: the uvicorn process itself, or its N workers."""
        if self.workers == 1:
            return [self.server.pid]
        return children(self.server.pid)


@contextmanager
def api_server(
    stack: Stack,
    *,
    workers: int = 1,
    app: str = "api.main:app",
    extra_args: tuple[str, ...] = (),
    source: Path | None = None,
) -> Iterator[ApiServer]:
    """`uvicorn api.main:app --workers N` on a free loopback port (the production command of
    docker-compose.yml; uvloop and httptools are picked up when installed, as there).

    `source`: run the server from another checkout of the code (e.g. `git archive HEAD` unpacked
    somewhere), to compare it with this working tree in the same run.
    """
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(workers), *extra_args,
    ]  # fmt: skip
    env = {**os.environ, **stack.env}
    if source is not None:
        env["PYTHONPATH"] = str(source)
    if workers > 1:  # as docker-compose.yml: the latency histogram summed over the processes (mmap files)
        metrics_dir = stack.data_dir / f"prometheus-{port}"
        metrics_dir.mkdir(parents=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    log_path = stack.data_dir / f"uvicorn-{port}.log"
    server = Subprocess(command, env, log_path, cwd=source or ROOT)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", 60, server.process)
        if workers > 1:  # /healthz answered by one worker; wait until all of them are up
            deadline = time.monotonic() + 60
            while len(children(server.pid)) < workers and time.monotonic() < deadline:
                time.sleep(0.1)
        yield ApiServer(f"http://127.0.0.1:{port}", workers, server)
    except BaseException:
        sys.stderr.write(f"---- uvicorn log ----\n{server.logs()}\n")
        raise
    finally:
        server.stop()


@contextmanager
def celery_worker(stack: Stack, *, name: str = "bench", timeout_s: float = 90.0) -> Iterator[Subprocess]:
    """The production worker command (`worker.app.worker_command`), once ready."""
    from worker.app import worker_command

    command = [sys.executable, "-m", *worker_command(f"{name}@%h")]
    worker = Subprocess(command, {**os.environ, **stack.env}, stack.data_dir / f"celery-{name}.log")
    try:
        deadline = time.monotonic() + timeout_s
        while " ready." not in worker.logs(tail=100_000):
            if worker.process.poll() is not None:
                raise RuntimeError(f"the worker exited with {worker.process.returncode}:\n{worker.logs()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the worker was not ready within {timeout_s:g} s:\n{worker.logs()}")
            time.sleep(0.1)
        yield worker
    finally:
        worker.stop()


# ---------------------------------------------------------------- HTTP helpers and results


def upload_small_dataset(url: str, key: str, *, seed: int = 0) -> str:
    """Upload a tiny 3-class feature npz through the API (the real path); returns its id."""
    import io

    import httpx
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(90, 8)).astype(np.float32)
    y = np.repeat(np.arange(3), 30)
    y[5:30] = y[35:60] = y[65:] = -1
    buf = io.BytesIO()
    np.savez(buf, x=x, y=y)
    response = httpx.post(
        f"{url}/v1/datasets",
        params={"name": "bench.npz", "format": "npz"},
        content=buf.getvalue(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/octet-stream"},
        timeout=60,
    )
    response.raise_for_status()
    dataset_id: str = response.json()["id"]
    return dataset_id


def write_json(name: str, data: dict[str, Any]) -> Path:
    OUT.mkdir(exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def write_section(title: str, body: str) -> None:
    """Replace (or append) the `## title` section of RESULTS.md, leaving every other section alone."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    header = f"## {title}\n"
    section = f"{header}\n{body.strip()}\n"
    if header in text:
        start = text.index(header)
        nxt = text.find("\n## ", start + len(header))
        text = text[:start] + section + ("" if nxt < 0 else text[nxt:])
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text if text.endswith("\n") else text + "\n")


def publish(name: str, results: dict[str, Any], text: str, args: Any) -> None:
    """Keep the raw figures in bench/out/NAME.json, print the table, and with `--record` write it
    to its section of bench/RESULTS.md."""
    write_json(name, results)
    print(text)
    if args.record:
        write_section(args.section, text)


def parse_bench_args(parser: argparse.ArgumentParser, *, section: str, argv: list[str] | None) -> argparse.Namespace:
    """Add the options `publish` reads (`--record`, `--section`, default `section`), parse `argv`
    (None: the command line) and keep it as `args.argv` for the report."""
    parser.add_argument("--record", action="store_true", help="write the section of bench/RESULTS.md")
    parser.add_argument("--section", default=section, help="RESULTS.md section title")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    return args
