"""The embedded default: the whole service on one machine with nothing to install.

`ganft up` migrates the SQLite database, creates an admin key on first start (kept in
`<data_dir>/admin.key`), starts the API (uvicorn) and one Celery worker as subprocesses on
the filesystem broker, waits until `/readyz` answers, prints the URL and the key, and stops
both cleanly on Ctrl-C. `ganft demo` (ganft/demo.py) runs a job on such a stack.

The worker is the production command (`worker.app.worker_command`, Celery's solo pool): the job
runs in the worker's main process, so a Ctrl-C (a warm shutdown) reaches the runner, which
checkpoints and gives the job back to the queue; the next `ganft up` resumes it.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx

from ganft.db.migrate import upgrade
from ganft.db.session import make_engine, session_scope
from ganft.repo import keys
from ganft.settings import Settings, get_settings
from worker.app import worker_command

ADMIN_TENANT = "admin"
PR_SET_PDEATHSIG = 1  # linux/prctl.h
READY_TIMEOUT_S = 120.0  # API import + worker start on a slow machine
STOP_GRACE_S = 10.0  # beyond the cancel grace: time for the worker to hand its job back

log = logging.getLogger(__name__)


def say(text: str) -> None:
    """One line of a command's own output (stdout); diagnostics go to logging (stderr)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def admin_key(settings: Settings) -> str:
    """The admin key in `<data_dir>/admin.key`, created (with its tenant) when missing or unknown."""
    path = settings.data_dir.resolve() / "admin.key"
    engine = make_engine(settings.database_url)
    try:
        with session_scope(engine) as session:
            if path.is_file():
                existing = path.read_text().strip()
                if keys.authenticate(session, key=existing) is not None:
                    return existing
            _, key = keys.create_key(session, tenant_name=ADMIN_TENANT, label="ganft up")
    finally:
        engine.dispose()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # a secret: owner only
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


def _die_with_parent() -> None:
    """In the child before exec: Linux SIGKILLs it when `ganft up` dies without stopping it."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class EmbeddedStack:
    """API + one worker as subprocesses on `settings` (normally the embedded default)."""

    def __init__(self, settings: Settings, *, host: str = "127.0.0.1", port: int = 8000, logs: Path | None = None):
        self.settings = settings
        self.host = host
        self.port = port
        self.url = f"http://{host}:{port}"
        self.logs = logs  # folder for api.log / worker.log; None: inherit this terminal
        self.key = ""
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._files: list[IO[bytes]] = []

    def start(self, timeout: float = READY_TIMEOUT_S) -> EmbeddedStack:
        """Migrate, ensure the admin key, start both processes and wait until the API is ready."""
        data_dir = self.settings.data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        upgrade(self.settings.database_url)
        self.key = admin_key(self.settings)
        env = {**os.environ, "GANFT_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
        py = sys.executable
        level = "warning" if self.logs else "info"
        self._spawn(
            "api", [py, "-m", "uvicorn", "api.main:app", "--host", self.host, "--port", str(self.port),
                    "--log-level", level], env,
        )  # fmt: skip
        self._spawn("worker", [py, "-m", *worker_command("embedded@%h")], env)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> None:
        out: IO[bytes] | None = None
        if self.logs is not None:
            self.logs.mkdir(parents=True, exist_ok=True)
            out = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
            self._files.append(out)
        # A session of its own: a Ctrl-C in the terminal reaches only us, and we stop them in order.
        root = Path(__file__).resolve().parents[1]
        self._processes[name] = subprocess.Popen(
            command,
            cwd=root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the API at {self.url} was not ready after {timeout:.0f} s{self._log_hint()}")
            time.sleep(0.25)

    def check_alive(self) -> None:
        """RuntimeError naming the part that exited."""
        for name, process in self._processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"the {name} process exited with code {process.returncode}{self._log_hint()}")

    def _log_hint(self) -> str:
        return f" (logs in {self.logs})" if self.logs else ""

    def stop(self) -> None:
        """Stop the API, then the worker (a warm shutdown: a running job is checkpointed and requeued)."""
        for name in ("api", "worker"):
            process = self._processes.get(name)
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            grace = STOP_GRACE_S + (self.settings.cancel_grace_s if name == "worker" else 0.0)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0f s; killing it", name, grace)
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self._processes.clear()
        for f in self._files:
            f.close()
        self._files.clear()

    def wait(self) -> None:
        """Block until a process exits (RuntimeError) or we are interrupted."""
        while True:
            self.check_alive()
            time.sleep(0.5)

    def __enter__(self) -> EmbeddedStack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def up(args: argparse.Namespace) -> int:
    """`ganft up`: run the embedded stack in the foreground until Ctrl-C."""
    settings = get_settings()
    stack = EmbeddedStack(settings, host=getattr(args, "host", "127.0.0.1"), port=getattr(args, "port", 8000))
    # Ctrl-C and `kill` stop the same clean way (SIGINT is explicit: a shell may start us ignoring it).
    signal.signal(signal.SIGINT, _raise_keyboard_interrupt)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the readiness polls
    try:
        stack.start()
        say(f"ganft is up at {stack.url}")
        say(f"admin API key: {stack.key}  (kept in {settings.data_dir.resolve() / 'admin.key'})")
        log.info("press Ctrl-C to stop")
        stack.wait()
    except KeyboardInterrupt:
        log.info("stopping ...")
    except RuntimeError as exc:
        log.error("%s", exc)
        return 1
    finally:
        stack.stop()
    return 0


def demo(args: argparse.Namespace) -> int:
    """`ganft demo`: see ganft/demo.py (imported lazily: it needs scikit-learn and torch)."""
    from ganft.demo import run_demo

    return run_demo(args)
