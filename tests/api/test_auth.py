"""Authentication on every route, tenant isolation, and the per-key rate limit."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from ganft.db.session import session_scope
from ganft.repo import keys
from ganft.security import key_prefix
from tests.api.conftest import Seed

ROUTES = [
    ("POST", "/v1/datasets"),
    ("GET", "/v1/datasets"),
    ("GET", "/v1/datasets/ds_0"),
    ("DELETE", "/v1/datasets/ds_0"),
    ("POST", "/v1/models"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/mdl_0"),
    ("GET", "/v1/models/mdl_0/weights"),
    ("POST", "/v1/jobs"),
    ("GET", "/v1/jobs"),
    ("GET", "/v1/jobs/job_0"),
    ("POST", "/v1/jobs/job_0/cancel"),
    ("GET", "/v1/jobs/job_0/events"),
    ("GET", "/v1/jobs/job_0/metrics"),
    ("GET", "/v1/jobs/job_0/artifacts"),
    ("GET", "/v1/jobs/job_0/artifacts/model.safetensors"),
]


def _assert_401(response) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["status"] == 401


def test_missing_key_is_401(client: TestClient) -> None:
    """No Authorization header on any /v1 route: 401 with WWW-Authenticate: Bearer."""
    for method, path in ROUTES:
        _assert_401(client.request(method, path))


def test_wrong_key_is_401(client: TestClient, api_key: str) -> None:
    """On every /v1 route: a well-formed key that does not exist, garbage, and a Basic credential are 401."""
    for method, path in ROUTES:
        _assert_401(client.request(method, path, headers={"Authorization": f"Bearer {api_key[:-2]}xx"}))
        _assert_401(client.request(method, path, headers={"Authorization": "Bearer gft_nonsense"}))
        _assert_401(client.request(method, path, headers={"Authorization": "Basic dXNlcjpwYXNz"}))


def test_revoked_key_is_401(
    make_client: Callable[..., TestClient], engine: Engine, api_key: str, headers: dict[str, str]
) -> None:
    """A key works, then `revoke-key` takes effect on the next request (key cache off; see test_keycache.py)."""
    client = make_client(auth_cache_s=0)
    assert client.get("/v1/jobs", headers=headers).status_code == 200
    with session_scope(engine) as session:
        keys.revoke_key(session, prefix=key_prefix(api_key) or "")
    _assert_401(client.get("/v1/jobs", headers=headers))


def test_auth_comes_before_the_body(client: TestClient) -> None:
    """Malformed JSON or an oversized upload without a key is a 401, not a 422/413: nothing was read."""
    _assert_401(client.post("/v1/jobs", content=b"{not json", headers={"Content-Type": "application/json"}))
    _assert_401(client.post("/v1/datasets", content=b"x" * 1000, headers={"Content-Length": str(10**12)}))


def test_rate_limit_429_with_retry_after(
    make_client: Callable[..., TestClient], headers: dict[str, str], other_headers: dict[str, str]
) -> None:
    """A burst of 3 at 0.01 requests/s: the 4th request of a key is 429; another key is unaffected."""
    client = make_client(rate_limit_burst=3, rate_limit_per_s=0.01)
    for _ in range(3):
        assert client.get("/v1/jobs", headers=headers).status_code == 200
    limited = client.get("/v1/jobs", headers=headers)
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert client.get("/v1/jobs", headers=other_headers).status_code == 200


def test_other_tenants_ids_are_404_everywhere(client: TestClient, seed: Seed, other_headers: dict[str, str]) -> None:
    """Every route given acme's dataset/model/job/artifact ids answers 404 to globex."""
    dataset = seed.dataset("acme")
    model = seed.model("acme")
    job = seed.job("acme", dataset_id=dataset)
    seed.artifact(job, "metrics.json", b"{}", "application/json")
    for method, path in [
        ("GET", f"/v1/datasets/{dataset}"),
        ("DELETE", f"/v1/datasets/{dataset}"),
        ("GET", f"/v1/models/{model}"),
        ("GET", f"/v1/models/{model}/weights"),
        ("GET", f"/v1/jobs/{job}"),
        ("POST", f"/v1/jobs/{job}/cancel"),
        ("GET", f"/v1/jobs/{job}/events"),
        ("GET", f"/v1/jobs/{job}/metrics"),
        ("GET", f"/v1/jobs/{job}/artifacts"),
        ("GET", f"/v1/jobs/{job}/artifacts/metrics.json"),
    ]:
        response = client.request(method, path, headers=other_headers)
        assert response.status_code == 404, (method, path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    assert client.get("/v1/datasets", headers=other_headers).json()["data"] == []
    assert client.get("/v1/jobs", headers=other_headers).json()["data"] == []
    assert client.get("/v1/models", headers=other_headers).json()["data"] == []
    # and referencing them in a job is a 422 naming the field, as if they did not exist
    response = client.post(
        "/v1/jobs", headers=other_headers, json={"method": "ssgan", "dataset_id": dataset, "base_model_id": model}
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "dataset_id"
