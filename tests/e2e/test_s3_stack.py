"""Several machines: API and worker with their own GANFT_DATA_DIRs, sharing only Postgres, Redis and S3.

The store is `s3://` on a real SeaweedFS, configured the standard AWS way (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION) plus GANFT_STORE_PATH_STYLE. Nothing but the
S3 server carries files from one process to the other: neither data folder may hold a store.
Faults (S3 down during an upload, /readyz, a refused boot) use a private S3 server of their own.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from pydantic import SecretStr

from ganft.client import Client
from ganft.db.session import session_scope
from ganft.embedded import free_port
from ganft.repo import keys
from ganft.settings import Settings
from ganft.store import open_store
from tests.e2e import flows
from tests.e2e.conftest import REDIS_URL, Stack
from tests.s3_server import ACCESS_KEY, BUCKET, SECRET_KEY, SeaweedS3, s3_server  # noqa: F401 - fixture
from tests.worker.helpers import ROOT, WorkerProcess, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@dataclass
class S3Stack(Stack):
    api_dir: Path
    worker_dir: Path
    env: dict[str, str]
    server: subprocess.Popen[bytes] | None = None
    worker: WorkerProcess | None = None
    worker_env: dict[str, str] | None = None

    def store(self) -> Any:
        """The job's S3 store as seen from the test (its own cache folder)."""
        settings = Settings(
            data_dir=self.api_dir.parent / "test-side",
            store_url=self.env["GANFT_STORE_URL"],
            store_endpoint=self.env["AWS_ENDPOINT_URL"],
            store_region="us-east-1",
            store_access_key_id=ACCESS_KEY,
            store_secret_access_key=SecretStr(SECRET_KEY),
            store_path_style=True,
        )
        return open_store(settings.store_url, settings)


def _env(endpoint: str, pg_url: str, data_dir: Path, prefix: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GANFT_", "AWS_"))}
    return {
        **env,
        "GANFT_DATA_DIR": str(data_dir),
        "GANFT_DATABASE_URL": pg_url,
        "GANFT_BROKER_URL": REDIS_URL,
        "GANFT_STORE_URL": f"s3://{BUCKET}/{prefix}",
        "GANFT_STORE_PATH_STYLE": "1",
        "GANFT_STORE_TIMEOUT_S": "5",
        "GANFT_STORE_MAX_RETRIES": "1",
        "GANFT_PROGRESS_INTERVAL_S": "0.25",
        "GANFT_SSE_POLL_INTERVAL_S": "0.1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_REGION": "us-east-1",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def _start_api(stack: S3Stack, env: dict[str, str], *, wait: bool = True) -> subprocess.Popen[bytes]:
    port = free_port()
    stack.url = f"http://127.0.0.1:{port}"
    log = stack.log_files[0]
    with open(log, "ab") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    if wait:

        def ready() -> bool:
            if server.poll() is not None:
                raise AssertionError(f"the API server exited with {server.returncode}:\n{stack.logs()}")
            try:
                return httpx.get(f"{stack.url}/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, timeout=60, what="the API server to be ready", logs=stack.logs)
    return server


def _stop(server: subprocess.Popen[bytes] | None) -> None:
    if server is not None and server.poll() is None:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()


def _make_stack(
    endpoint: str,
    pg_url: str,
    engine: Any,
    tmp_path: Path,
    *,
    worker: bool,
    api_extra: dict[str, str] | None = None,
    **worker_extra: str,
) -> S3Stack:
    redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).flushdb()
    with session_scope(engine) as session:
        _, key = keys.create_key(session, tenant_name="e2e")
    prefix = f"e2e-{secrets.token_hex(4)}"
    api_dir, worker_dir = tmp_path / "api-machine", tmp_path / "gpu-machine"
    stack = S3Stack(
        url="", key=key, log_files=[tmp_path / "api.log", tmp_path / "worker.log"],
        api_dir=api_dir, worker_dir=worker_dir, env=_env(endpoint, pg_url, api_dir, prefix, **(api_extra or {})),
    )  # fmt: skip
    stack.server = _start_api(stack, stack.env)
    if worker:
        stack.worker_env = _env(endpoint, pg_url, worker_dir, prefix, **worker_extra)
        stack.worker = WorkerProcess("e2e-s3", stack.worker_env, stack.log_files[1])
        stack.worker.wait_ready()
    return stack


@pytest.fixture(params=["through-api", "presigned"])
def s3_stack(
    request: pytest.FixtureRequest,
    s3_server: SeaweedS3,  # noqa: F811
    pg_url: str,
    clean_db: None,
    engine: Any,
    tmp_path: Path,
) -> Iterator[S3Stack]:
    """The two-machine stack; `presigned`: the API answers downloads with 307 to presigned S3 URLs."""
    api_extra = {"GANFT_STORE_PRESIGN": "1"} if request.param == "presigned" else {}
    stack = _make_stack(s3_server.endpoint, pg_url, engine, tmp_path, worker=True, api_extra=api_extra)
    try:
        yield stack
    finally:
        _stop(stack.server)
        if stack.worker is not None:
            stack.worker.stop()


def test_upload_train_download_across_machines_through_s3(s3_stack: S3Stack, tmp_path: Path) -> None:
    """The ssgan flow (upload, train, download, model checked against metrics) with S3 as the only shared
    store; the SDK's downloads (sha256-checked) go through the API or follow presigned redirects."""
    with Client(s3_stack.url, s3_stack.key, timeout=60) as api:
        (tmp_path / "client").mkdir()
        flows.ssgan_digits(api, tmp_path / "client")
        job_id = api.list_jobs().data[0]["id"]
    url = f"{s3_stack.url}/v1/jobs/{job_id}/artifacts/metrics.json"
    answer = httpx.get(url, headers={"Authorization": f"Bearer {s3_stack.key}"}, timeout=30)
    if s3_stack.env.get("GANFT_STORE_PRESIGN") == "1":
        assert answer.status_code == 307 and answer.headers["Location"].startswith(s3_stack.env["AWS_ENDPOINT_URL"])
        direct = httpx.get(answer.headers["Location"], headers={"Range": "bytes=0-0"}, timeout=30)  # no credentials
        assert direct.status_code == 206 and direct.content == b"{"
        sha = answer.headers["ETag"].strip('"')
        assert hashlib.sha256(httpx.get(answer.headers["Location"], timeout=30).content).hexdigest() == sha
    else:
        assert answer.status_code == 200 and answer.content.startswith(b"{")
    # Nothing went through a shared folder: neither machine has a file:// store, and the objects are in S3.
    assert not (s3_stack.api_dir / "store").exists() and not (s3_stack.worker_dir / "store").exists()
    store = s3_stack.store()
    datasets = store.list_keys("datasets")
    assert len({key.split("/")[1] for key, _ in datasets}) == 2  # train and validation
    jobs = store.list_keys("jobs")
    assert any(key.endswith("/artifacts/model.pt2") for key, _ in jobs), jobs
    # The worker read its inputs from S3 into its own cache; the API has its uploads' copies.
    assert (s3_stack.worker_dir / "store-cache" / "datasets").is_dir()
    assert (s3_stack.api_dir / "store-cache" / "datasets").is_dir()


@pytest.fixture
def private_s3(tmp_path: Path) -> Iterator[SeaweedS3]:
    server = SeaweedS3(tmp_path / "seaweedfs")
    server.start()
    yield server
    server.stop()


def _chunks(n: int, stop_after: int, server: SeaweedS3) -> Iterator[bytes]:
    for i in range(n):
        if i == stop_after:
            server.stop()
        yield b"\x00" * 1024**2


def test_s3_down_during_an_upload(
    private_s3: SeaweedS3, pg_url: str, clean_db: None, engine: Any, tmp_path: Path
) -> None:
    """Mid-upload the S3 server stops: the client gets a 503 naming the store, no dataset shows up,
    /readyz names the store, and once S3 is back the upload works and nothing of the first is there."""
    stack = _make_stack(private_s3.endpoint, pg_url, engine, tmp_path, worker=False)
    try:
        headers = {"Authorization": f"Bearer {stack.key}"}
        try:
            answer = httpx.post(
                f"{stack.url}/v1/datasets", params={"name": "big", "format": "npz"}, headers=headers,
                content=_chunks(40, 12, private_s3), timeout=120,
            )  # fmt: skip
            status, body = answer.status_code, answer.text
        except httpx.TransportError as exc:  # the server may answer and close before the body is all sent
            status, body = -1, repr(exc)
        assert status == 503 and "artifact store is unavailable" in body, (status, body, stack.logs())

        ready = httpx.get(f"{stack.url}/readyz", timeout=30)
        assert ready.status_code == 503 and ready.json()["checks"]["store"] != "ok", ready.text
        assert ready.json()["checks"]["database"] == "ok"

        private_s3.start()  # same folder and ports: what was stored is back
        wait_for(lambda: httpx.get(f"{stack.url}/readyz", timeout=30).status_code == 200, timeout=30,
                 what="readyz after S3 is back", logs=stack.logs)  # fmt: skip
        listed = httpx.get(f"{stack.url}/v1/datasets", headers=headers, timeout=30).json()
        assert listed["data"] == []
        store = stack.store()
        assert store.list_keys("datasets") == []  # no half object
        # The upload's abort could not reach the stopped server; its multipart upload is still open
        # until the sweep (each API start: those older than GANFT_STALE_UPLOAD_S) aborts it.
        open_uploads = [k for k in private_s3.pending_uploads() if k.startswith(store.prefix + "/datasets/")]
        assert len(open_uploads) <= 1
        assert len(store.abort_stale_uploads(older_than_s=0)) == len(open_uploads)
        assert [k for k in private_s3.pending_uploads() if k.startswith(store.prefix + "/")] == []
        with Client(stack.url, stack.key, timeout=60) as api:
            train, _ = flows.digits_split(seed=1)
            flows.save_npz(tmp_path / "train.npz", train)
            assert api.upload_dataset(tmp_path / "train.npz")["stats"]["labeled"] == 100
    finally:
        _stop(stack.server)


def test_the_api_refuses_to_start_with_wrong_credentials(
    s3_server: SeaweedS3,  # noqa: F811
    pg_url: str,
    tmp_path: Path,
) -> None:
    env = _env(s3_server.endpoint, pg_url, tmp_path / "api", "boot", AWS_SECRET_ACCESS_KEY="wrong-secret-000000000")
    stack = S3Stack(url="", key="", log_files=[tmp_path / "api.log"], api_dir=tmp_path / "api",
                    worker_dir=tmp_path / "none", env=env)  # fmt: skip
    server = _start_api(stack, env, wait=False)
    try:
        server.wait(60)
    finally:
        _stop(server)
    log = stack.logs()
    assert server.returncode != 0 and "S3 store unavailable" in log and "403" in log, log


def test_a_killed_workers_job_resumes_on_another_machine_from_its_s3_checkpoint(
    s3_server: SeaweedS3,  # noqa: F811
    pg_url: str,
    clean_db: None,
    engine: Any,
    tmp_path: Path,
) -> None:
    """SIGKILL the worker mid-job; a worker on another "machine" (its own data dir) claims attempt 2
    and resumes from the checkpoint the first one stored in S3, not from step 0."""
    import numpy as np

    from tests.worker.helpers import job_events, job_row

    stack = _make_stack(  # a fast lease
        s3_server.endpoint, pg_url, engine, tmp_path, worker=True, GANFT_LEASE_S="4", GANFT_REAPER_INTERVAL_S="1"
    )
    second: WorkerProcess | None = None
    try:
        with Client(stack.url, stack.key, timeout=60) as api:
            np.savez(tmp_path / "images.npz", **flows.digit_images())
            dataset = api.upload_dataset(tmp_path / "images.npz")
            hp = {"steps": 100_000, "batch_size": 8, "eval_every": 100_000, "eval_samples": 16, "log_every": 5,
                  "checkpoint_every": 5, "ada": False, "r1_gamma": 0.0}  # fmt: skip
            job_id = api.create_job({"method": "adapt", "dataset_id": dataset["id"], "seed": 1, "hyperparameters": hp})[
                "id"
            ]
            assert stack.worker is not None and stack.worker_env is not None
            first = stack.worker
            wait_for(lambda: job_row(engine, job_id).checkpoint_key, timeout=120, what="a checkpoint", logs=stack.logs)
            first.kill()
            lost = job_row(engine, job_id)
            assert lost.checkpoint_key and lost.checkpoint_step and stack.store().exists(lost.checkpoint_key)
            other_dir = tmp_path / "gpu-machine-2"
            second = WorkerProcess("e2e-s3-b", {**stack.worker_env, "GANFT_DATA_DIR": str(other_dir)},
                                   tmp_path / "worker2.log")  # fmt: skip
            logs = lambda: stack.logs() + second.logs()  # noqa: E731

            def progress_of_attempt_2() -> list[int]:
                events = job_events(engine, job_id)
                claims = [q for q, t, d in events if t == "status" and d["status"] == "running" and d["attempt"] == 2]
                return claims and [d["step"] for q, t, d in events if t == "progress" and q > claims[0]]

            steps = wait_for(progress_of_attempt_2, timeout=120, what="progress of attempt 2", logs=logs)
            assert min(steps) >= lost.checkpoint_step  # resumed from the S3 checkpoint
            assert job_row(engine, job_id).worker_id != lost.worker_id
            assert (other_dir / "runs" / job_id).is_dir() and not (other_dir / "store").exists()
            api.cancel_job(job_id)
            wait_for(lambda: job_row(engine, job_id).status == "cancelled", timeout=60, what="the cancel", logs=logs)
    finally:
        _stop(stack.server)
        if second is not None:
            second.stop()
        if stack.worker is not None:
            stack.worker.stop()


def test_s3_down_when_jobs_start(
    private_s3: SeaweedS3, pg_url: str, clean_db: None, engine: Any, tmp_path: Path
) -> None:
    """S3 stopped as a job starts: the worker retries fetching its inputs (half a lease, 8 s here);
    back within that, the job runs and succeeds. Down for longer: failed with `store_unavailable`.
    (A 4 s window failed once in a loaded suite: 1.5 s down plus SeaweedFS's restart came close to it.)"""
    import numpy as np

    stack = _make_stack(private_s3.endpoint, pg_url, engine, tmp_path, worker=True, GANFT_LEASE_S="16")
    try:
        with Client(stack.url, stack.key, timeout=60) as api:
            np.savez(tmp_path / "images.npz", **flows.digit_images(32))
            dataset = api.upload_dataset(tmp_path / "images.npz")
            hp = {"steps": 4, "batch_size": 8, "eval_every": 4, "eval_samples": 16, "log_every": 2}
            spec = {"method": "adapt", "dataset_id": dataset["id"], "seed": 1, "hyperparameters": hp}

            private_s3.stop()
            short = api.create_job(spec)["id"]
            time.sleep(1.5)
            private_s3.start()
            row = wait_for(
                lambda: _ended(engine, short), timeout=180, what="the job after a short outage", logs=stack.logs
            )
            assert row.status == "succeeded", (row.error_code, row.error_message)
            assert "retrying in" in stack.logs()  # it did meet the outage

            private_s3.stop()
            try:
                long = api.create_job(spec)["id"]
                row = wait_for(
                    lambda: _ended(engine, long), timeout=60, what="the job in a long outage", logs=stack.logs
                )
            finally:
                private_s3.start()
            assert (row.status, row.error_code) == ("failed", "store_unavailable")
            assert "artifact store stayed unavailable" in (row.error_message or "")
    finally:
        _stop(stack.server)
        if stack.worker is not None:
            stack.worker.stop()


def _ended(engine: Any, job_id: str) -> Any:
    from tests.worker.helpers import job_row

    row = job_row(engine, job_id)
    return row if row.status in ("succeeded", "failed", "cancelled") else None


def test_s3_down_mid_job(private_s3: SeaweedS3, pg_url: str, clean_db: None, engine: Any, tmp_path: Path) -> None:
    """S3 stops for a few seconds while a job trains: checkpoints that fail are skipped, later ones are
    stored again, and the job still succeeds with its artifacts in S3."""
    import numpy as np

    from tests.worker.helpers import job_row

    stack = _make_stack(private_s3.endpoint, pg_url, engine, tmp_path, worker=True)
    try:
        with Client(stack.url, stack.key, timeout=60) as api:
            np.savez(tmp_path / "images.npz", **flows.digit_images(32))
            dataset = api.upload_dataset(tmp_path / "images.npz")
            hp = {"steps": 1500, "batch_size": 8, "eval_every": 1500, "eval_samples": 16, "log_every": 5,
                  "checkpoint_every": 10, "ada": False, "r1_gamma": 0.0}  # fmt: skip
            job_id = api.create_job({"method": "adapt", "dataset_id": dataset["id"], "seed": 1, "hyperparameters": hp})[
                "id"
            ]
            wait_for(lambda: job_row(engine, job_id).checkpoint_key, timeout=120, what="a checkpoint", logs=stack.logs)
            private_s3.stop()
            before = job_row(engine, job_id).checkpoint_step or 0
            time.sleep(3)
            private_s3.start()
            row = wait_for(lambda: _ended(engine, job_id), timeout=300, what="the job", logs=stack.logs)
            assert row.status == "succeeded", (row.error_code, row.error_message, stack.logs())
            assert "could not store checkpoint" in stack.logs()  # the outage was met mid-job
            assert (row.checkpoint_step or 0) > before  # later checkpoints were stored again
            names = {a.name for a in api.list_artifacts(job_id)}
            assert "model.pt2" in names
    finally:
        _stop(stack.server)
        if stack.worker is not None:
            stack.worker.stop()
