"""`priority` over HTTP: stored and shown, a 422 naming the field for a bad one, a fork inherits its parent's,
and a listing shows each tenant only its own jobs with their priorities."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from ganft.db.session import session_scope
from ganft.db.tables import Job
from tests.api.conftest import Seed
from tests.api.test_forks import _fork, _parent


def _create(client: TestClient, headers: dict[str, str], dataset: str, **body: object) -> dict[str, object]:
    response = client.post("/v1/jobs", headers=headers, json={"method": "ssgan", "dataset_id": dataset, **body})
    assert response.status_code == 201, response.text
    return response.json()


def test_priority_is_stored_and_shown(client: TestClient, headers: dict[str, str], seed: Seed, engine: Engine) -> None:
    dataset = seed.dataset()
    default = _create(client, headers, dataset)
    high = _create(client, headers, dataset, priority="high")
    low = _create(client, headers, dataset, priority="low")
    assert (default["priority"], high["priority"], low["priority"]) == ("normal", "high", "low")
    assert client.get(f"/v1/jobs/{high['id']}", headers=headers).json()["priority"] == "high"
    with session_scope(engine) as session:
        stored = {job_id: p for job_id, p in session.execute(select(Job.id, Job.priority))}
    assert [stored[str(j["id"])] for j in (default, high, low)] == [1, 2, 0]


def test_bad_priority_is_a_422_naming_the_field(client: TestClient, headers: dict[str, str], seed: Seed) -> None:
    dataset = seed.dataset()
    for bad in ("urgent", 2, None, ""):
        response = client.post(
            "/v1/jobs", headers=headers, json={"method": "ssgan", "dataset_id": dataset, "priority": bad}
        )
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert [e["field"] for e in response.json()["errors"]] == ["priority"]


def test_a_fork_inherits_its_parents_priority_unless_given(
    client: TestClient, headers: dict[str, str], seed: Seed
) -> None:
    parent = _parent(seed)
    seed.set_job(parent, priority=2)
    assert _fork(client, headers, parent).json()["priority"] == "high"
    assert _fork(client, headers, parent, priority="low").json()["priority"] == "low"


def test_tenants_see_only_their_own_jobs_and_priorities(
    client: TestClient, headers: dict[str, str], other_headers: dict[str, str], seed: Seed
) -> None:
    mine = _create(client, headers, seed.dataset(), priority="high")
    theirs = _create(client, other_headers, seed.dataset("globex"), priority="low")
    listed = client.get("/v1/jobs", headers=headers).json()["data"]
    assert [(j["id"], j["priority"]) for j in listed] == [(mine["id"], "high")]
    assert client.get(f"/v1/jobs/{theirs['id']}", headers=headers).status_code == 404
