"""ganft.Client against a real uvicorn server: typed results, errors, retries, resumed downloads, SSE."""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine

import ganft
from ganft.client import ApiError, ChecksumError, Client
from ganft.client_types import Dataset, Job
from ganft.db.session import session_scope
from ganft.db.tables import Artifact
from ganft.settings import Settings
from ganft.store import open_store
from tests.sdk.proxy import BreakingProxy


def tiny_npz(path: Path, n: int = 12) -> Path:
    rng = np.random.default_rng(0)
    y = np.array([i % 2 if i < n // 2 else -1 for i in range(n)])
    buffer = io.BytesIO()
    np.savez(buffer, x=rng.integers(0, 255, (n, 8, 8), dtype=np.uint8), y=y)
    path.write_bytes(buffer.getvalue())
    return path


@pytest.fixture
def api(live_server: str, api_key: str) -> Iterator[Client]:
    with ganft.Client(live_server, api_key) as client:
        yield client


@pytest.fixture
def queued_job(api: Client, tmp_path: Path) -> Job:
    dataset = api.upload_dataset(tiny_npz(tmp_path / "d.npz"))
    return api.create_job({"method": "ssgan", "dataset_id": dataset.id, "hyperparameters": {"steps": 5}})


def put_artifact(engine: Engine, settings: Settings, job_id: str, data: bytes, *, sha256: str | None = None) -> None:
    """What a worker leaves behind: the stored file and its row."""
    key = f"jobs/{job_id}/artifacts/blob.bin"
    open_store(settings.store_url).put_bytes(key, data)
    with session_scope(engine) as session:
        session.add(
            Artifact(
                job_id=job_id,
                name="blob.bin",
                size_bytes=len(data),
                sha256=sha256 or hashlib.sha256(data).hexdigest(),
                content_type="application/octet-stream",
                storage_key=key,
            )
        )


def test_typed_results_and_listing(api: Client, tmp_path: Path) -> None:
    """Upload (streamed), show, list and delete a dataset; results are typed and keep mapping access."""
    dataset = api.upload_dataset(tiny_npz(tmp_path / "d.npz"))
    assert isinstance(dataset, Dataset) and dataset.format == "npz" and dataset.stats["examples"] == 12
    assert dataset["id"] == dataset.id  # what older callers (demo, e2e flows) use
    assert api.get_dataset(dataset.id) == dataset
    assert [d.id for d in api.list_datasets().data] == [dataset.id]
    api.delete_dataset(dataset.id)
    with pytest.raises(ApiError) as caught:
        api.get_dataset(dataset.id)
    assert caught.value.status == 404


def test_api_error_carries_problem_fields(api: Client, queued_job: Job) -> None:
    with pytest.raises(ApiError) as caught:
        api.create_job({"method": "ssgan", "dataset_id": queued_job.dataset_id, "hyperparameters": {"steps": -1}})
    error = caught.value
    assert error.status == 422 and error.detail
    assert [e["field"] for e in error.errors] == ["hyperparameters.steps"]
    assert str(error).count("hyperparameters.steps") == 1  # the field's line once, not again under the detail


def test_create_job_is_idempotent_under_a_key(api: Client, queued_job: Job) -> None:
    spec = {"method": "ssgan", "dataset_id": queued_job.dataset_id, "hyperparameters": {"steps": 5}}
    first = api.create_job(spec, idempotency_key="k-1")
    assert api.create_job(spec, idempotency_key="k-1").id == first.id
    assert api.create_job(spec).id != first.id  # a generated key per call: a new job
    assert api.get_job(first.id).progress.total_steps == 5


def test_retries_429_honouring_retry_after(make_live_server: Callable[..., str], api_key: str) -> None:
    """A rate limit of 2 requests/s with a burst of 1: back-to-back requests get 429 and are retried."""
    url = make_live_server(rate_limit_per_s=2.0, rate_limit_burst=1)
    waits: list[float] = []
    with Client(url, api_key, backoff_s=0.01) as api:

        def sleep(seconds: float) -> None:
            waits.append(seconds)
            time.sleep(seconds)

        api.sleep = sleep
        for _ in range(3):
            assert api.list_jobs().data == []
    assert waits and all(0 < w <= 1.0 for w in waits), waits  # the server's Retry-After, not the tiny backoff
    time.sleep(1.0)  # the bucket refills
    with Client(url, api_key, retries=0) as api:
        api.list_jobs()
        with pytest.raises(ApiError) as caught:
            api.list_jobs()
    assert caught.value.status == 429


def test_connection_refused_is_retried_then_raised(api_key: str) -> None:
    import httpx

    waits: list[float] = []
    with Client("http://127.0.0.1:9", api_key, retries=3, backoff_s=0.01) as api:
        api.sleep = waits.append
        with pytest.raises(httpx.ConnectError):
            api.get_job("job_00")
    assert len(waits) == 3 and all(0 <= w <= 0.08 for w in waits)


def test_download_resumes_after_a_broken_connection(
    live_server: str, api_key: str, queued_job: Job, engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    """The proxy drops the first response after ~100 kB; the client resumes with Range and checks the sha256."""
    data = np.random.default_rng(1).bytes(300_000)
    put_artifact(engine, settings, queued_job.id, data)
    proxy = BreakingProxy(live_server, cut=lambda seen: 100_000 if len(seen) > 100_000 else None)
    try:
        with Client(proxy.url, api_key) as api:
            api.sleep = lambda s: None
            (artifact,) = api.list_artifacts(queued_job.id)
            path = api.download_artifact(queued_job.id, "blob.bin", tmp_path / "out.bin")
    finally:
        proxy.close()
    assert path.read_bytes() == data and artifact.size_bytes == len(data), proxy.requests
    assert not (tmp_path / "out.bin.part").exists()
    ranges = [r for r in proxy.requests if b"range: bytes=" in r.lower()]
    assert len(ranges) == 1, proxy.requests
    assert int(ranges[0].lower().split(b"range: bytes=")[1].split(b"-")[0]) > 0


def test_download_with_a_wrong_sha256_leaves_nothing(
    api: Client, queued_job: Job, engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    put_artifact(engine, settings, queued_job.id, b"hello", sha256="0" * 64)
    with pytest.raises(ChecksumError):
        api.download_artifact(queued_job.id, "blob.bin", tmp_path / "x")
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.part").exists()


def test_watch_reconnects_with_last_event_id(live_server: str, api_key: str, queued_job: Job) -> None:
    """The proxy drops the stream right after event 1; the client resumes after seq 1 and sees event 2 once."""
    with Client(live_server, api_key) as direct:
        assert direct.cancel_job(queued_job.id).status == "cancelled"
    proxy = BreakingProxy(live_server, cut=lambda seen: seen.find(b"id: 2\n") if b"id: 2\n" in seen else None)
    try:
        with Client(proxy.url, api_key) as api:
            api.sleep = lambda s: None
            events = list(api.watch(queued_job.id))
            job = api.wait(queued_job.id, timeout=5)
    finally:
        proxy.close()
    assert [(e.seq, e.data["status"]) for e in events] == [(1, "queued"), (2, "cancelled")]
    assert events[-1].terminal and job.status == "cancelled" and job.terminal
    assert any(b"last-event-id: 1" in r.lower() for r in proxy.requests), proxy.requests


def test_model_upload_is_resent_whole_after_a_429(
    make_live_server: Callable[..., str], api_key: str, tmp_path: Path
) -> None:
    """The rate limit answers the upload 429; the retry sends the files again from their start."""
    from tests.api.conftest import safetensors_bytes

    weights = tmp_path / "clf.safetensors"
    weights.write_bytes(safetensors_bytes())
    config = {"architecture": "mlp", "arguments": {"in_features": 3, "num_classes": 2}, "class_names": ["a", "b"],
              "input_layout": {"kind": "features", "features": 3}}  # fmt: skip
    url = make_live_server(rate_limit_per_s=2.0, rate_limit_burst=1)
    waits: list[float] = []
    with Client(url, api_key) as api:

        def sleep(seconds: float) -> None:
            waits.append(seconds)
            time.sleep(seconds)

        api.sleep = sleep
        assert api.list_models().data == []  # spends the only token
        model = api.upload_model(config, weights=weights)
        assert waits  # the upload was refused once and sent again
        assert model.sha256 == hashlib.sha256(weights.read_bytes()).hexdigest() and model.role == "classifier"
        assert api.get_model(model.id) == model and [m.id for m in api.list_models().data] == [model.id]
