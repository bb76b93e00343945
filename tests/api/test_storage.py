"""Storage through the API: `GET /v1/usage` (tenant-isolated), the storage quota on uploads (413), model deletes."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select, update

from ganft.db.session import session_scope
from ganft.db.tables import Dataset, JobCheckpoint, Tenant
from ganft.settings import Settings
from ganft.store import open_store
from tests.api.conftest import Seed, csv_bytes, safetensors_bytes
from tests.api.test_models import CLASSIFIER


def _usage(client: TestClient, headers: dict[str, str]) -> dict[str, object]:
    response = client.get("/v1/usage", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def _set_quota(engine: Engine, tenant: str, max_bytes: int | None) -> None:
    """What `ganft admin set-quota` writes."""
    with session_scope(engine) as session:
        session.execute(update(Tenant).where(Tenant.name == tenant).values(max_storage_bytes=max_bytes))


def _upload_csv(client: TestClient, headers: dict[str, str], data: bytes) -> tuple[int, dict[str, object]]:
    response = client.post("/v1/datasets?name=d.csv", headers=headers, content=data)
    return response.status_code, response.json()


def _upload_model(client: TestClient, headers: dict[str, str]) -> tuple[int, dict[str, object]]:
    files = {"weights": ("m.safetensors", safetensors_bytes()), "config": (None, json.dumps(CLASSIFIER))}
    response = client.post("/v1/models", headers=headers, files=files)  # type: ignore[arg-type]
    return response.status_code, response.json()


def test_usage_counts_each_kind_of_the_callers_tenant_only(
    client: TestClient, headers: dict[str, str], other_headers: dict[str, str], seed: Seed, engine: Engine
) -> None:
    empty = _usage(client, headers)
    assert empty == {
        "total_bytes": 0,
        "by_kind": {"datasets": 0, "models": 0, "checkpoints": 0, "artifacts": 0},
        "max_storage_bytes": None,
    }
    data = csv_bytes()
    status, dataset = _upload_csv(client, headers, data)
    assert status == 201
    status, model = _upload_model(client, headers)
    assert status == 201
    job = seed.job("acme", dataset_id=str(dataset["id"]), status="running")
    seed.artifact(job, "samples.png", b"p" * 100)
    with session_scope(engine) as session:
        session.add(JobCheckpoint(job_id=job, step=1, storage_key=f"jobs/{job}/c.pt", size_bytes=1000, sha256="0"))
    resumable = client.post("/v1/datasets/uploads", headers=headers, json={"name": "r.csv", "size_bytes": 500})
    assert resumable.status_code == 201
    seed.job("globex")  # another tenant's rows count for it, not for acme
    usage = _usage(client, headers)
    assert usage["by_kind"] == {
        "datasets": len(data) + 500,
        "models": model["size_bytes"],
        "checkpoints": 1000,
        "artifacts": 100,
    }
    assert usage["total_bytes"] == len(data) + 500 + int(model["size_bytes"]) + 1100  # type: ignore[call-overload]
    assert _usage(client, other_headers)["by_kind"] == {"datasets": 10, "models": 0, "checkpoints": 0, "artifacts": 0}
    assert client.get("/v1/usage").status_code == 401


def test_an_upload_past_the_storage_quota_is_a_413_problem_naming_it(
    client: TestClient, headers: dict[str, str], other_headers: dict[str, str], engine: Engine, settings: Settings
) -> None:
    data = csv_bytes()
    assert _upload_csv(client, headers, data)[0] == 201
    quota = len(data) + 10  # room for 10 more bytes
    _set_quota(engine, "acme", quota)
    assert _usage(client, headers)["max_storage_bytes"] == quota
    for response in (
        client.post("/v1/datasets?name=d.csv", headers=headers, content=data),  # Content-Length: refused at once
        client.post("/v1/datasets?name=d.csv", headers=headers, content=iter([data])),  # chunked: while streaming
    ):
        assert response.status_code == 413
        assert response.headers["content-type"] == "application/problem+json"
        detail = response.json()["detail"]
        assert f"max_storage_bytes is {quota}" in detail and f"{len(data)} bytes are in use" in detail
        assert "10 left" in detail
    with session_scope(engine) as session:  # nothing half-uploaded is left: one dataset row, one file
        assert session.scalar(select(func.count()).select_from(Dataset)) == 1
    assert len(list((open_store(settings.store_url).local_path("datasets")).iterdir())) == 1
    status, problem = _upload_model(client, headers)
    assert status == 413 and "storage quota" in str(problem["detail"])
    resumable = client.post("/v1/datasets/uploads", headers=headers, json={"name": "r.csv", "size_bytes": 11})
    assert resumable.status_code == 413 and "10 left" in resumable.json()["detail"]
    assert (
        client.post("/v1/datasets/uploads", headers=headers, json={"name": "r.csv", "size_bytes": 10}).status_code
        == 201
    )
    # another tenant has no quota; lifting acme's lets it upload again
    assert _upload_csv(client, other_headers, data)[0] == 201
    _set_quota(engine, "acme", None)
    assert _upload_csv(client, headers, data)[0] == 201


def test_delete_model(client: TestClient, headers: dict[str, str], seed: Seed, settings: Settings) -> None:
    """204, then 404 on read, download, delete and as a base model; off the list; its files go at once,
    or once the queued job that uses it has finished."""
    store = open_store(settings.store_url)
    free = _upload_model(client, headers)[1]["id"]
    assert client.delete(f"/v1/models/{free}", headers=headers).status_code == 204
    for path in (f"/v1/models/{free}", f"/v1/models/{free}/weights"):
        assert client.get(path, headers=headers).status_code == 404
    assert client.delete(f"/v1/models/{free}", headers=headers).status_code == 404
    assert free not in [m["id"] for m in client.get("/v1/models", headers=headers).json()["data"]]
    assert not store.exists(f"models/{free}/model.safetensors")
    dataset = seed.dataset("acme")
    spec = {"method": "ssgan", "dataset_id": dataset, "base_model_id": free}
    refused = client.post("/v1/jobs", headers=headers, json=spec)
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "base_model_id"

    held = _upload_model(client, headers)[1]["id"]
    job = client.post("/v1/jobs", headers=headers, json={**spec, "base_model_id": held})
    assert job.status_code == 201
    assert client.delete(f"/v1/models/{held}", headers=headers).status_code == 204
    assert store.exists(f"models/{held}/model.safetensors")  # the queued job still loads it
    assert client.get(f"/v1/jobs/{job.json()['id']}", headers=headers).json()["base_model_id"] == held
