"""Pause/resume transitions over HTTP, and a job's kept checkpoints: keep policy, evaluation figures, downloads.

The worker's side of both is seeded here as a worker writes it (`lifecycle.record_checkpoint` for a
job held by worker "w1"); tests/worker/test_pause.py runs the real thing.
"""

from __future__ import annotations

import datetime as dt
import hashlib

from fastapi.testclient import TestClient

from ganft.db.session import session_scope
from ganft.db.tables import Job, utcnow
from ganft.repo import lifecycle
from ganft.store import open_store
from tests.api.conftest import Seed


def _status(client: TestClient, headers: dict[str, str], job: str) -> str:
    return str(client.get(f"/v1/jobs/{job}", headers=headers).json()["status"])


def test_pause_and_resume_a_queued_job(client: TestClient, headers: dict[str, str], seed: Seed) -> None:
    """A queued job pauses at once and resumes to the queue (sent to the broker again); both are idempotent."""
    job = seed.job(status="queued")
    for _ in range(2):
        response = client.post(f"/v1/jobs/{job}/pause", headers=headers)
        assert (response.status_code, response.json()["status"]) == (200, "paused")
    for _ in range(2):
        response = client.post(f"/v1/jobs/{job}/resume", headers=headers)
        assert (response.status_code, response.json()["status"]) == (200, "queued")
    events = client.get(f"/v1/jobs/{job}/events", headers=headers).json()["data"]
    statuses = [(e["data"]["status"], e["data"].get("reason")) for e in events if e["type"] == "status"]
    assert statuses == [("queued", None), ("paused", None), ("queued", "resumed")]  # one event per change
    with session_scope(seed.engine) as session:  # the resumed job was handed to the broker
        assert session.get_one(Job, job).dispatched_at is not None


def test_pause_a_running_job_goes_through_pausing(client: TestClient, headers: dict[str, str], seed: Seed) -> None:
    """running -> pausing (the worker's business from there); resume while pausing is a 409 saying so;
    the worker's pause_job ends it `paused`, after which resume works."""
    job = seed.job(status="running", worker_id="w1", attempt=1)
    assert client.post(f"/v1/jobs/{job}/pause", headers=headers).json()["status"] == "pausing"
    assert client.post(f"/v1/jobs/{job}/pause", headers=headers).json()["status"] == "pausing"
    early = client.post(f"/v1/jobs/{job}/resume", headers=headers)
    assert early.status_code == 409 and "pausing" in early.json()["detail"]
    assert early.headers["content-type"].startswith("application/problem+json")
    with session_scope(seed.engine) as session:
        assert lifecycle.pause_job(session, job_id=job, worker_id="w1") == "paused"
    body = client.get(f"/v1/jobs/{job}", headers=headers).json()
    assert (body["status"], body["attempt"]) == ("paused", 0)  # a pause does not use up an attempt
    assert client.post(f"/v1/jobs/{job}/resume", headers=headers).json()["status"] == "queued"


def test_illegal_pause_and_resume_are_409(client: TestClient, headers: dict[str, str], seed: Seed) -> None:
    for status in ("cancelling", "succeeded", "failed", "cancelled"):
        job = seed.job(status=status)
        for action in ("pause", "resume"):
            response = client.post(f"/v1/jobs/{job}/{action}", headers=headers)
            assert response.status_code == 409, (status, action, response.text)
            assert status in response.json()["detail"]
            assert _status(client, headers, job) == status


def test_cancel_while_paused_or_pausing(client: TestClient, headers: dict[str, str], seed: Seed) -> None:
    paused = seed.job(status="paused")
    assert client.post(f"/v1/jobs/{paused}/cancel", headers=headers).json()["status"] == "cancelled"
    pausing = seed.job(status="pausing", worker_id="w1")
    assert client.post(f"/v1/jobs/{pausing}/cancel", headers=headers).json()["status"] == "cancelling"
    with session_scope(seed.engine) as session:  # the trainer stops; the cancel wins over the pause
        assert lifecycle.pause_job(session, job_id=pausing, worker_id="w1") == "cancelled"
    assert client.get("/v1/jobs", headers=headers, params={"status": "paused"}).json()["data"] == []


def test_reaper_leaves_an_abandoned_pause_paused(seed: Seed) -> None:
    """A worker lost while pausing: the job ends `paused` (resumable), not requeued or failed."""
    job = seed.job(status="pausing", worker_id="w1", attempt=3, lease_expires_at=utcnow() - dt.timedelta(seconds=5))
    with session_scope(seed.engine) as session:
        assert lifecycle.reap_expired_leases(session) == [(job, "paused")]


def _record(seed: Seed, job: str, step: int, data: bytes) -> list[str] | None:
    key = f"jobs/{job}/checkpoints/ckpt-{step:08d}.pt"
    size, sha = open_store(seed.settings.store_url).put_bytes(key, data)
    with session_scope(seed.engine) as session:
        return lifecycle.record_checkpoint(
            session, job_id=job, worker_id="w1", key=key, step=step, size_bytes=size, sha256=sha
        )


def test_kept_checkpoints_policy_and_figures(client: TestClient, headers: dict[str, str], seed: Seed) -> None:
    """The 3 newest plus the best by accuracy are kept; each lists the newest evaluation at or before it."""
    job = seed.job(status="running", worker_id="w1")
    accuracy = {10: 0.5, 20: 0.9, 40: 0.7}
    dropped: list[str] = []
    for step in (10, 20, 30, 40, 50):
        if step in accuracy:
            seed.event(job, "evaluation", step=step, metrics={"accuracy": accuracy[step], "macro_f1": 0.1})
        dropped += _record(seed, job, step, f"state at {step}".encode()) or []
    assert dropped == [f"jobs/{job}/checkpoints/ckpt-00000010.pt"]
    listing = client.get(f"/v1/jobs/{job}/checkpoints", headers=headers).json()["data"]
    assert [c["step"] for c in listing] == [20, 30, 40, 50]
    assert [c["best"] for c in listing] == [True, False, False, False]
    assert [c["evaluation"]["step"] for c in listing] == [20, 20, 40, 40]
    assert listing[0]["evaluation"]["metrics"] == {"accuracy": 0.9, "macro_f1": 0.1}
    assert listing[3]["sha256"] == hashlib.sha256(b"state at 50").hexdigest()
    assert listing[3]["size_bytes"] == len(b"state at 50")
    # The same step written again (a resumed attempt) replaces its row rather than adding one.
    _record(seed, job, 50, b"state at 50, again")
    again = client.get(f"/v1/jobs/{job}/checkpoints", headers=headers).json()["data"]
    assert [c["step"] for c in again] == [20, 30, 40, 50]
    assert again[3]["size_bytes"] == len(b"state at 50, again")
    with session_scope(seed.engine) as session:  # the job points at its newest one (where a resume starts)
        row = session.get_one(Job, job)
        assert (row.checkpoint_step, row.checkpoint_key) == (50, f"jobs/{job}/checkpoints/ckpt-00000050.pt")


def test_no_checkpoints_and_no_evaluation(client: TestClient, headers: dict[str, str], seed: Seed) -> None:
    job = seed.job(status="running", worker_id="w1")
    assert client.get(f"/v1/jobs/{job}/checkpoints", headers=headers).json() == {"data": [], "next_cursor": None}
    _record(seed, job, 5, b"x")
    (only,) = client.get(f"/v1/jobs/{job}/checkpoints", headers=headers).json()["data"]
    assert (only["evaluation"], only["best"]) == (None, False)


def test_checkpoint_download(client: TestClient, headers: dict[str, str], seed: Seed) -> None:
    """ETag is the sha256, If-None-Match answers 304, Range answers 206; unknown and bad steps are 404 / 422."""
    job = seed.job(status="running", worker_id="w1")
    data = bytes(range(256)) * 8
    _record(seed, job, 7, data)
    whole = client.get(f"/v1/jobs/{job}/checkpoints/7", headers=headers)
    assert whole.status_code == 200 and whole.content == data
    etag = f'"{hashlib.sha256(data).hexdigest()}"'
    assert whole.headers["etag"] == etag
    assert client.get(f"/v1/jobs/{job}/checkpoints/7", headers={**headers, "If-None-Match": etag}).status_code == 304
    part = client.get(f"/v1/jobs/{job}/checkpoints/7", headers={**headers, "Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    missing = client.get(f"/v1/jobs/{job}/checkpoints/8", headers=headers)
    assert missing.status_code == 404 and "checkpoint '8'" in missing.json()["detail"]
    bad = client.get(f"/v1/jobs/{job}/checkpoints/latest", headers=headers)
    assert bad.status_code == 422 and "step" in bad.text
    assert client.get(f"/v1/jobs/{job}/checkpoints/-1", headers=headers).status_code == 422


def test_other_tenants_see_404(
    client: TestClient, headers: dict[str, str], other_headers: dict[str, str], seed: Seed
) -> None:
    job = seed.job(status="running", worker_id="w1")
    _record(seed, job, 3, b"secret state")
    for method, path in [
        ("post", f"/v1/jobs/{job}/pause"),
        ("post", f"/v1/jobs/{job}/resume"),
        ("get", f"/v1/jobs/{job}/checkpoints"),
        ("get", f"/v1/jobs/{job}/checkpoints/3"),
        ("post", "/v1/jobs/job_0123456789abcdef01234567/pause"),
    ]:
        assert getattr(client, method)(path, headers=other_headers).status_code == 404, path
    assert _status(client, headers, job) == "running"
    assert client.get(f"/v1/jobs/{job}/checkpoints/3", headers=headers).content == b"secret state"


def test_the_best_checkpoint_is_the_one_with_the_best_figures(
    client: TestClient, headers: dict[str, str], seed: Seed
) -> None:
    """A checkpoint is ranked by the evaluation it lists, not by an earlier one it came after."""
    job = seed.job(status="running", worker_id="w1")
    seed.event(job, "evaluation", step=10, metrics={"accuracy": 0.9})  # no checkpoint holds these weights
    seed.event(job, "evaluation", step=15, metrics={"accuracy": 0.2})
    _record(seed, job, 20, b"a")
    _record(seed, job, 30, b"b")
    seed.event(job, "evaluation", step=35, metrics={"accuracy": 0.5})
    _record(seed, job, 40, b"c")
    listing = client.get(f"/v1/jobs/{job}/checkpoints", headers=headers).json()["data"]
    assert [(c["step"], c["evaluation"]["metrics"]["accuracy"], c["best"]) for c in listing] == [
        (20, 0.2, False),
        (30, 0.2, False),
        (40, 0.5, True),
    ]
