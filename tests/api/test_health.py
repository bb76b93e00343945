"""Liveness, readiness, Prometheus metrics, and a database outage answered as 503."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.api.conftest import Seed

DOWN_DB = "postgresql+psycopg://postgres@127.0.0.1:9/nowhere"
DOWN_BROKER = "redis://127.0.0.1:9/0"


def test_healthz_and_readyz(client: TestClient) -> None:
    """Both answer 200 against the real Postgres and Redis, without a key."""
    assert client.get("/healthz").json() == {"status": "ok", "checks": {}}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "broker": "ok", "store": "ok"}


def test_readyz_names_the_failing_part(make_client: Callable[..., TestClient]) -> None:
    """Broker down: 503 naming the broker (database ok); database down: 503 naming the database."""
    broker_down = make_client(broker_url=DOWN_BROKER, broker_timeout_s=0.5).get("/readyz")
    assert broker_down.status_code == 503
    assert broker_down.json()["checks"]["database"] == "ok" and broker_down.json()["checks"]["broker"] != "ok"
    db_down = make_client(database_url=DOWN_DB).get("/readyz")
    assert db_down.status_code == 503
    assert db_down.json()["checks"]["broker"] == "ok" and db_down.json()["checks"]["database"] != "ok"
    assert make_client(database_url=DOWN_DB).get("/healthz").status_code == 200  # liveness does not care


def test_database_down_is_503_with_retry_after(make_client: Callable[..., TestClient], headers: dict[str, str]) -> None:
    """A request that needs the database while it is unreachable: 503 problem with Retry-After, no traceback."""
    response = make_client(database_url=DOWN_DB).get("/v1/jobs", headers=headers)
    assert response.status_code == 503
    assert response.headers["retry-after"].isdigit()
    assert response.headers["content-type"] == "application/problem+json"
    assert "Traceback" not in response.text and "psycopg" not in response.text


def test_prometheus_metrics(client: TestClient, headers: dict[str, str], seed: Seed) -> None:
    """Request latency is labelled by route template (not the raw id); the jobs gauge counts rows at scrape."""
    job = seed.job(status="running")
    seed.job(status="queued")
    client.get(f"/v1/jobs/{job}", headers=headers)
    client.get("/nope")
    text = client.get("/metrics").text
    assert 'ganft_http_request_duration_seconds_count{method="GET",route="/v1/jobs/{job_id}",status="200"} 1.0' in text
    assert job not in text
    assert 'route="unmatched",status="404"' in text
    assert 'ganft_jobs{status="running"} 1.0' in text and 'ganft_jobs{status="queued"} 1.0' in text


def test_unknown_route_is_a_problem(client: TestClient) -> None:
    """Even a 404 for an unknown path and a 405 are problem documents."""
    missing = client.get("/v2/anything")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    wrong_method = client.put("/healthz")
    assert wrong_method.status_code == 405 and wrong_method.json()["status"] == 405


def test_openapi_documents_every_route(client: TestClient) -> None:
    """The OpenAPI document builds, lists the v1 routes, and resolves the JobCreate body it refers to."""
    schema = client.get("/openapi.json").json()
    assert {"/v1/datasets", "/v1/models", "/v1/jobs", "/v1/jobs/{job_id}/events"} <= set(schema["paths"])
    body = schema["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"].rsplit("/", 1)[1] in schema["components"]["schemas"]
    assert "hyperparameters" in schema["components"]["schemas"]["JobCreate"]["properties"]


def test_unexpected_error_is_a_bare_500_problem(app: FastAPI) -> None:
    """A bug in a route answers a 500 problem document that reveals nothing of the code."""

    def boom() -> None:
        raise RuntimeError("secret internals at /srv/app.py line 3")

    app.add_api_route("/boom", boom)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert "secret" not in response.text and "Traceback" not in response.text
