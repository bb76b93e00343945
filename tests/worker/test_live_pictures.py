"""Live pictures: the sample grid and curves of each evaluation are the job's artifacts while it runs
(one row per name, replaced by newer versions and by the final set), over the real Postgres and store."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import Engine, select, update

from ganft.db.session import session_scope
from ganft.db.tables import Artifact, Job, utcnow
from ganft.repo import jobs, lifecycle
from ganft.repo.lifecycle import ArtifactRecord, OutputModel
from ganft.store import FileStore, Store
from tests.worker.helpers import WorkerProcess, job_events, make_job, wait_for
from tests.worker.test_worker_process import TINY_ADAPT, _ended, _send, images_npz
from worker import staging
from worker.pictures import KEEP_VERSIONS, LivePictures

LIVE = {"samples.png", "curves.png"}
ADAPT_ARTIFACTS = {
    *LIVE,
    "model.safetensors",
    "model.json",
    "model.pt2",
    "generator.safetensors",
    "generator.json",
    "discriminator.safetensors",
    "discriminator.json",
    "metrics.json",
}


def _rows(engine: Engine, job_id: str) -> list[Artifact]:
    with session_scope(engine) as session:
        return list(session.scalars(select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.name)))


def _publisher(engine: Engine, store: Store, job_id: str, worker_id: str, out: Path) -> LivePictures:
    """What a worker's supervisor builds: the real store and the real `record_artifact`."""

    def record(artifact: ArtifactRecord, step: int) -> bool:
        with session_scope(engine) as session:
            return lifecycle.record_artifact(session, job_id=job_id, worker_id=worker_id, artifact=artifact, step=step)

    return LivePictures(store, job_id, out, record, interval_s=0.0)


def _picture(out: Path, shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (8, 8), shade).save(buffer, format="PNG")
    (out / "samples.png").write_bytes(buffer.getvalue())
    return buffer.getvalue()


def test_versions_replace_each_other_across_attempts_and_yield_to_the_final_set(
    engine: Engine, store: Store, tmp_path: Path
) -> None:
    job_id = make_job(engine, store)
    with session_scope(engine) as session:
        assert lifecycle.claim_job(session, job_id=job_id, worker_id="w1", lease_s=60) is not None
    first = _publisher(engine, store, job_id, "w1", tmp_path)
    keys = []
    for step, shade in ((10, 0), (20, 100), (30, 200)):
        data = _picture(tmp_path, shade)
        first.add("samples.png", step)
        first.add("model.safetensors", step)  # not a live picture: published only with the final set
        assert first.publish()
        [row] = _rows(engine, job_id)
        assert (row.name, row.sha256, row.size_bytes) == ("samples.png", hashlib.sha256(data).hexdigest(), len(data))
        assert (row.content_type, store.read_bytes(row.storage_key)) == ("image/png", data)
        keys.append(row.storage_key)
    assert len(set(keys)) == 3  # each version has a key of its own: a running download keeps its bytes
    assert [store.exists(k) for k in keys] == [False] * (3 - KEEP_VERSIONS) + [True] * KEEP_VERSIONS
    first.add("samples.png", 40)  # unchanged since its last publication: nothing stored, no event
    assert first.publish() and first.uploads == 3
    events = [(d["name"], d["step"]) for _, t, d in job_events(engine, job_id) if t == "artifact"]
    assert events == [("samples.png", 10), ("samples.png", 20), ("samples.png", 30)]

    # The worker is lost; attempt 2 replaces the picture, and the lost worker can no longer register one.
    with session_scope(engine) as session:
        session.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=utcnow()))
        assert lifecycle.reap_expired_leases(session) == [(job_id, "queued")]
        assert lifecycle.claim_job(session, job_id=job_id, worker_id="w2", lease_s=60) is not None
    _picture(tmp_path, 50)
    first.add("samples.png", 50)
    assert not first.publish()
    assert [r.storage_key for r in _rows(engine, job_id)] == [keys[-1]]
    second = _publisher(engine, store, job_id, "w2", tmp_path)
    data = _picture(tmp_path, 60)
    second.add("samples.png", 60)
    assert second.publish()
    [row] = _rows(engine, job_id)
    assert row.sha256 == hashlib.sha256(data).hexdigest()

    # Success registers exactly the final set: no second samples.png.
    final = [
        ArtifactRecord("samples.png", 3, "c" * 64, "image/png", f"jobs/{job_id}/artifacts/samples.png"),
        ArtifactRecord("model.safetensors", 5, "d" * 64, "application/octet-stream", "k"),
    ]
    model = OutputModel("out", "classifier", {"architecture": "mlp"}, f"jobs/{job_id}/artifacts", 5, "d" * 64)
    with session_scope(engine) as session:
        assert lifecycle.succeed_job(
            session, job_id=job_id, worker_id="w2", result={}, artifacts=final, output_model=model
        )
    assert [(r.name, r.sha256) for r in _rows(engine, job_id)] == [
        ("model.safetensors", "d" * 64),
        ("samples.png", "c" * 64),
    ]


def _api_rows(client: TestClient, headers: dict[str, str], job_id: str) -> dict[str, dict[str, object]]:
    listed = client.get(f"/v1/jobs/{job_id}/artifacts", headers=headers).json()
    names = [a["name"] for a in listed]
    assert len(names) == len(set(names)), f"duplicate artifacts: {names}"
    return {a["name"]: a for a in listed}


def _download_png(client: TestClient, headers: dict[str, str], job_id: str, listed: dict[str, object]) -> None:
    response = client.get(f"/v1/jobs/{job_id}/artifacts/{listed['name']}", headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.headers["etag"] == f'"{listed["sha256"]}"'
    assert hashlib.sha256(response.content).hexdigest() == listed["sha256"]
    with Image.open(io.BytesIO(response.content)) as img:
        assert img.format == "PNG"
        img.load()


def test_a_running_job_serves_its_latest_pictures_and_a_succeeded_one_exactly_one_set(
    engine: Engine,
    store: Store,
    client: TestClient,
    make_key: Callable[[str], str],
    start_worker: WorkerProcess.Factory,
) -> None:
    long_job = make_job(
        engine,
        store,
        method="adapt",
        data=images_npz(),
        hyperparameters={**TINY_ADAPT, "steps": 100_000, "eval_every": 5},
    )
    headers = {"Authorization": f"Bearer {make_key('worker-tests')}"}  # make_job's tenant
    worker = start_worker()
    _send(long_job)

    # While it runs: both pictures are listed, served as PNG with their sha256 as ETag.
    wait_for(
        lambda: LIVE <= {a.name for a in _rows(engine, long_job)}, timeout=120, what="live pictures", logs=worker.logs
    )
    first = _api_rows(client, headers, long_job)
    for name in LIVE:
        assert first[name]["content_type"] == "image/png"
        _download_png(client, headers, long_job, first[name])
    assert client.get(f"/v1/jobs/{long_job}", headers=headers).json()["status"] == "running"

    # A later evaluation's curves replace the first ones (one row, a new sha256), announced by an event.
    def newer_curves() -> bool:
        return any(
            t == "artifact" and d["name"] == "curves.png" and d["sha256"] != first["curves.png"]["sha256"]
            for _, t, d in job_events(engine, long_job)
        )

    wait_for(newer_curves, timeout=60, what="a newer curves.png", logs=worker.logs)
    later = _api_rows(client, headers, long_job)
    assert later["curves.png"]["sha256"] != first["curves.png"]["sha256"]
    _download_png(client, headers, long_job, later["curves.png"])
    assert client.get(f"/v1/jobs/{long_job}", headers=headers).json()["status"] == "running"

    with session_scope(engine) as session:
        jobs.request_cancel(session, job_id=long_job)
    row = wait_for(lambda: _ended(engine, long_job), timeout=60, what="the cancel", logs=worker.logs)
    assert row.status == "cancelled"
    kept = _api_rows(client, headers, long_job)
    assert set(kept) == LIVE  # a cancelled job keeps the pictures of its last evaluation
    assert isinstance(store, FileStore)  # the worker tests' store is a folder: its versions are files
    for name in LIVE:
        _download_png(client, headers, long_job, kept[name])
        versions = list((store.root / "jobs" / long_job / "pictures").glob(f"{Path(name).stem}-*"))
        assert 1 <= len(versions) <= KEEP_VERSIONS

    # A job that succeeds (with a live row an earlier attempt left behind) ends with exactly one set.
    short_job = make_job(
        engine, store, method="adapt", data=images_npz(), hyperparameters={**TINY_ADAPT, "steps": 12, "eval_every": 3}
    )
    stale_key = staging.picture_key(short_job, "samples.png", "0" * 64)
    store.put_bytes(stale_key, b"stale")
    with session_scope(engine) as session:
        session.add(
            Artifact(
                job_id=short_job,
                name="samples.png",
                size_bytes=5,
                sha256="0" * 64,
                content_type="image/png",
                storage_key=stale_key,
            )
        )
    _send(short_job)
    row = wait_for(lambda: _ended(engine, short_job), timeout=120, what="the short job", logs=worker.logs)
    assert row.status == "succeeded", (row.error_code, row.error_message)
    final = _api_rows(client, headers, short_job)  # (and no name twice)
    assert set(final) == ADAPT_ARTIFACTS
    assert all(r.storage_key.startswith(f"jobs/{short_job}/artifacts/") for r in _rows(engine, short_job))
    for name in LIVE:
        assert final[name]["sha256"] != "0" * 64
        _download_png(client, headers, short_job, final[name])
