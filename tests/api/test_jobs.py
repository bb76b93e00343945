"""`/v1/jobs`: create (validation, references, idempotency, enqueue), list, read, cancel."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import redis
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from ganft.db.session import session_scope
from ganft.db.tables import Job
from ganft.settings import Settings
from tests.api.conftest import Seed
from tests.conftest import TEST_BROKER_URL


def _errors(response: Any) -> list[str]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return [e["field"] for e in response.json()["errors"]]


def test_create_resolves_defaults_and_enqueues(
    client: TestClient, headers: dict[str, str], seed: Seed, engine: Engine
) -> None:
    """201 with every hyperparameter default filled in, a Location, a first `status: queued` event,
    and one `ganft.run_job` message on the `gpu` queue (dispatched_at set)."""
    dataset = seed.dataset()
    response = client.post(
        "/v1/jobs",
        headers=headers,
        json={"method": "ssgan", "dataset_id": dataset, "hyperparameters": {"steps": 40}, "metadata": {"team": "x"}},
    )
    assert response.status_code == 201, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued" and job["metadata"] == {"team": "x"}
    assert job["hyperparameters"]["steps"] == 40 and job["hyperparameters"]["batch_size"] == 100
    assert job["progress"] == {"step": 0, "total_steps": 40, "fraction": 0.0, "eta_seconds": None}
    events = client.get(f"/v1/jobs/{job['id']}/events", headers=headers).json()["data"]
    assert [(e["seq"], e["type"], e["data"]) for e in events] == [(1, "status", {"status": "queued"})]
    with session_scope(engine) as session:
        assert session.scalar(select(Job.dispatched_at).where(Job.id == job["id"])) is not None
    messages = redis.Redis.from_url(TEST_BROKER_URL).lrange("gpu\x06\x163", 0, -1)  # kombu's list for priority 3
    assert len(messages) == 1
    message = json.loads(messages[0])
    assert message["headers"]["task"] == "ganft.run_job" and message["properties"]["priority"] == 3
    assert json.loads(base64.b64decode(message["body"]))[0] == [job["id"]]  # args


def test_a_job_is_marked_sent_and_unlocked_before_its_message_goes(
    client: TestClient, headers: dict[str, str], seed: Seed, engine: Engine, monkeypatch: Any
) -> None:
    """At the moment the message is published the job row already says `dispatched_at` (committed) and
    no transaction holds it: a worker woken at once claims with SKIP LOCKED, and a row still locked by
    the API's own update made it pass the job by, which then waited minutes as if sent (CI, dispatch
    bench). Tried: POST /v1/jobs and resume, each send checked from another connection with NOWAIT."""
    from api.queue import JobQueue

    seen: list[tuple[str, bool]] = []
    send = JobQueue.send_run_job

    def checked_send(self: JobQueue, job_id: str) -> bool:
        with session_scope(engine) as session:  # raises (LockNotAvailable) if the row is locked
            row = session.execute(select(Job.dispatched_at).where(Job.id == job_id).with_for_update(nowait=True))
            seen.append((job_id, row.scalar_one() is not None))
        return send(self, job_id)

    monkeypatch.setattr(JobQueue, "send_run_job", checked_send)
    response = client.post("/v1/jobs", headers=headers, json={"method": "adapt", "dataset_id": seed.dataset()})
    assert response.status_code == 201, response.text
    paused = seed.job(status="paused")
    assert client.post(f"/v1/jobs/{paused}/resume", headers=headers).status_code == 200
    assert seen == [(response.json()["id"], True), (paused, True)]


def test_broker_down_still_creates_the_job(
    make_client: Callable[..., TestClient], headers: dict[str, str], seed: Seed, engine: Engine
) -> None:
    """With the broker unreachable the POST still answers 201; the job waits with dispatched_at NULL
    for the workers' dispatch sweep."""
    client = make_client(broker_url="redis://127.0.0.1:9/0", broker_timeout_s=0.5)
    response = client.post("/v1/jobs", headers=headers, json={"method": "adapt", "dataset_id": seed.dataset()})
    assert response.status_code == 201, response.text
    with session_scope(engine) as session:
        job = session.get_one(Job, response.json()["id"])
        assert job.status == "queued" and job.dispatched_at is None


def test_body_validation_errors(client: TestClient, headers: dict[str, str], seed: Seed) -> None:
    """Malformed JSON, unknown fields, wrong types and absurd values are 422s naming the field."""
    dataset = seed.dataset()
    base = {"method": "ssgan", "dataset_id": dataset}
    malformed = client.post("/v1/jobs", headers={**headers, "Content-Type": "application/json"}, content=b'{"method": ')
    assert _errors(malformed) == ["body"] and "malformed JSON" in malformed.json()["detail"]
    assert _errors(client.post("/v1/jobs", headers=headers, json=[1, 2])) == ["body"]
    assert _errors(client.post("/v1/jobs", headers=headers, json={**base, "hyperparameters": {"stepz": 5}})) == [
        "hyperparameters.stepz"
    ]
    assert _errors(client.post("/v1/jobs", headers=headers, json={**base, "colour": "red"})) == ["colour"]
    assert _errors(client.post("/v1/jobs", headers=headers, json={**base, "method": "vae"})) == ["method"]
    assert _errors(client.post("/v1/jobs", headers=headers, json={"method": "ssgan"})) == ["dataset_id"]
    assert _errors(client.post("/v1/jobs", headers=headers, json={**base, "seed": "abc"})) == ["seed"]
    assert _errors(client.post("/v1/jobs", headers=headers, json={**base, "hyperparameters": []})) == [
        "hyperparameters"
    ]
    assert _errors(client.post("/v1/jobs", headers=headers, json={**base, "metadata": {"k": 1}})) == ["metadata.k"]
    for field, value in [("steps", -5), ("batch_size", 10**9), ("lr_d", 1e9), ("steps", "many"), ("steps", 0)]:
        response = client.post("/v1/jobs", headers=headers, json={**base, "hyperparameters": {field: value}})
        assert _errors(response) == [f"hyperparameters.{field}"], (field, value)
    # adapt has its own fields: an ssgan-only one is unknown there
    adapt = client.post(
        "/v1/jobs", headers=headers, json={**base, "method": "adapt", "hyperparameters": {"unsupervised_weight": 1}}
    )
    assert _errors(adapt) == ["hyperparameters.unsupervised_weight"]
    assert _errors(client.post("/v1/jobs", headers=headers, json={**base, "max_runtime_s": -1})) == ["max_runtime_s"]
    assert client.get("/v1/jobs", headers=headers).json()["data"] == []


def test_json_body_size_limit(make_client: Callable[..., TestClient], headers: dict[str, str]) -> None:
    """A JSON body over GANFT_MAX_JSON_BYTES is a 413."""
    client = make_client(max_json_bytes=1024)
    response = client.post("/v1/jobs", headers=headers, json={"method": "ssgan", "metadata": {"x": "y" * 2000}})
    assert response.status_code == 413


def test_references_must_exist_and_fit(client: TestClient, headers: dict[str, str], seed: Seed) -> None:
    """Unknown datasets/models (or another tenant's, or still uploading) are 422 naming the field;
    a base model of the wrong role for the method is 422 on base_model_id."""
    dataset = seed.dataset()
    base = {"method": "ssgan", "dataset_id": dataset}
    unknown = "ds_0123456789abcdef01234567"
    assert _errors(client.post("/v1/jobs", headers=headers, json={**base, "dataset_id": unknown})) == ["dataset_id"]
    uploading = seed.dataset(status="uploading")
    assert _errors(client.post("/v1/jobs", headers=headers, json={**base, "dataset_id": uploading})) == ["dataset_id"]
    response = client.post("/v1/jobs", headers=headers, json={**base, "validation_dataset_id": seed.dataset("globex")})
    assert _errors(response) == ["validation_dataset_id"]
    unknown_model = "mdl_0123456789abcdef01234567"
    assert _errors(client.post("/v1/jobs", headers=headers, json={**base, "base_model_id": unknown_model})) == [
        "base_model_id"
    ]
    generator = seed.model(role="gan")
    mismatch = client.post("/v1/jobs", headers=headers, json={**base, "base_model_id": generator})
    assert _errors(mismatch) == ["base_model_id"] and "classifier" in mismatch.json()["detail"]
    classifier = seed.model(role="classifier")
    adapt = {"method": "adapt", "dataset_id": dataset}
    assert _errors(client.post("/v1/jobs", headers=headers, json={**adapt, "base_model_id": classifier})) == [
        "base_model_id"
    ]
    assert _errors(client.post("/v1/jobs", headers=headers, json={**base, "evaluator_model_id": classifier})) == [
        "evaluator_model_id"
    ]
    ok = client.post("/v1/jobs", headers=headers, json={**base, "base_model_id": classifier})
    assert ok.status_code == 201 and ok.json()["base_model_id"] == classifier
    ok = client.post(
        "/v1/jobs", headers=headers, json={**adapt, "base_model_id": generator, "evaluator_model_id": classifier}
    )
    assert ok.status_code == 201, ok.text


def test_idempotency_key(client: TestClient, headers: dict[str, str], seed: Seed) -> None:
    """Same key + same body: the same job (201 then 200), even with keys reordered; a different body: 409;
    the same key under another tenant is independent."""
    dataset = seed.dataset()
    body = {"method": "ssgan", "dataset_id": dataset, "hyperparameters": {"steps": 10}, "seed": 3}
    key = {**headers, "Idempotency-Key": "order-42"}
    first = client.post("/v1/jobs", headers=key, json=body)
    again = client.post("/v1/jobs", headers=key, content=json.dumps(dict(reversed(body.items()))))
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    conflict = client.post("/v1/jobs", headers=key, json={**body, "seed": 4})
    assert conflict.status_code == 409 and conflict.headers["content-type"] == "application/problem+json"
    assert len(client.get("/v1/jobs", headers=headers).json()["data"]) == 1
    no_key = client.post("/v1/jobs", headers=headers, json=body)
    assert no_key.status_code == 201 and no_key.json()["id"] != first.json()["id"]


def test_list_pagination_and_status_filter(client: TestClient, headers: dict[str, str], seed: Seed) -> None:
    """Newest first in pages of 2 with no duplicates or gaps; `?status=` filters; a bogus status is 422."""
    dataset = seed.dataset()
    statuses = ["queued", "running", "succeeded", "queued", "failed"]
    ids = [seed.job(dataset_id=dataset, status=s) for s in statuses]
    for age, job_id in enumerate(reversed(ids)):
        seed.age(Job, job_id, age)
    seed.job("globex")
    seen: list[str] = []
    cursor = None
    while True:
        page = client.get("/v1/jobs", headers=headers, params={"limit": 2, **({"after": cursor} if cursor else {})})
        assert page.status_code == 200
        seen += [j["id"] for j in page.json()["data"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    queued = client.get("/v1/jobs", headers=headers, params={"status": "queued"}).json()["data"]
    assert [j["id"] for j in queued] == [ids[3], ids[0]]
    assert _errors(client.get("/v1/jobs", headers=headers, params={"status": "exploded"})) == ["status"]
    assert _errors(client.get("/v1/jobs", headers=headers, params={"limit": 0})) == ["limit"]


def test_progress_and_error_fields(client: TestClient, headers: dict[str, str], seed: Seed) -> None:
    """A running job's fraction and eta come from step, total_steps and steps_per_second; a failed job shows error."""
    job = seed.job(status="running", step=25, total_steps=100, steps_per_second=5.0)
    progress = client.get(f"/v1/jobs/{job}", headers=headers).json()["progress"]
    assert progress == {"step": 25, "total_steps": 100, "fraction": 0.25, "eta_seconds": 15.0}
    failed = seed.job(status="failed", error_code="nan_loss", error_message="loss_d became NaN at step 7")
    body = client.get(f"/v1/jobs/{failed}", headers=headers).json()
    assert body["error"] == {"code": "nan_loss", "message": "loss_d became NaN at step 7"}
    assert body["progress"]["eta_seconds"] is None
    assert client.get("/v1/jobs/job_0123456789abcdef01234567", headers=headers).status_code == 404


def test_cancel(client: TestClient, headers: dict[str, str], seed: Seed) -> None:
    """queued -> cancelled at once (with an event); running -> cancelling; again -> still cancelling;
    a terminal job -> 409; an unknown job -> 404."""
    queued = seed.job()
    response = client.post(f"/v1/jobs/{queued}/cancel", headers=headers)
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert response.json()["finished_at"] is not None
    events = client.get(f"/v1/jobs/{queued}/events", headers=headers).json()["data"]
    assert events[-1]["data"] == {"status": "cancelled"}

    running = seed.job(status="running")
    assert client.post(f"/v1/jobs/{running}/cancel", headers=headers).json()["status"] == "cancelling"
    assert client.post(f"/v1/jobs/{running}/cancel", headers=headers).json()["status"] == "cancelling"

    for status in ("succeeded", "failed", "cancelled"):
        done = seed.job(status=status)
        conflict = client.post(f"/v1/jobs/{done}/cancel", headers=headers)
        assert conflict.status_code == 409, status
        assert client.get(f"/v1/jobs/{done}", headers=headers).json()["status"] == status
    assert client.post("/v1/jobs/job_0123456789abcdef01234567/cancel", headers=headers).status_code == 404


def test_settings_fixture_points_at_the_test_database(settings: Settings, pg_url: str) -> None:
    """The fixture other test folders rely on: the test DB, a tmp data dir, redis db 15."""
    assert settings.database_url == pg_url and settings.broker_url.endswith("/15")
    assert settings.store_url.startswith("file://") and "store" in settings.store_url


def test_concurrent_idempotent_posts_make_one_job(live_server: str, headers: dict[str, str], seed: Seed) -> None:
    """Six simultaneous POSTs with one Idempotency-Key through a real server: one 201, five 200, one job id."""
    body = {"method": "ssgan", "dataset_id": seed.dataset(), "hyperparameters": {"steps": 5}}

    def post(_: int) -> tuple[int, str]:
        with httpx.Client(timeout=30) as http:
            response = http.post(f"{live_server}/v1/jobs", json=body, headers={**headers, "Idempotency-Key": "race"})
        return response.status_code, response.json()["id"]

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(post, range(6)))
    assert sorted(status for status, _ in results) == [200, 200, 200, 200, 200, 201]
    assert len({job_id for _, job_id in results}) == 1
