"""Helpers of the webhook tests: a ready dataset row and a job that is terminal without a worker."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from ganft.db.session import session_scope
from ganft.db.tables import Dataset, Tenant, new_id

STATS = {"examples": 4, "labeled": 2, "unlabeled": 2, "classes": ["a", "b"], "class_counts": {"a": 1, "b": 1},
         "layout": {"kind": "features", "features": 3}, "notes": []}  # fmt: skip


def dataset(engine: Engine, tenant: str = "acme") -> str:
    dataset_id = new_id("ds")
    with session_scope(engine) as session:
        tenant_id = session.scalars(select(Tenant.id).where(Tenant.name == tenant)).one()
        session.add(Dataset(id=dataset_id, tenant_id=tenant_id, name="d", format="csv", status="ready", size_bytes=1,
                            sha256="0" * 64, storage_key=f"datasets/{dataset_id}/data", stats=STATS))  # fmt: skip
    return dataset_id


def cancelled_job(client: TestClient, headers: dict[str, str], engine: Engine, **extra: str) -> dict[str, Any]:
    """A job created through the API and cancelled while queued: terminal at once, no worker needed."""
    body = {"method": "ssgan", "dataset_id": dataset(engine), "hyperparameters": {"steps": 5}, **extra}
    created = client.post("/v1/jobs", json=body, headers=headers)
    assert created.status_code == 201, created.text
    assert client.post(f"/v1/jobs/{created.json()['id']}/cancel", headers=headers).json()["status"] == "cancelled"
    job: dict[str, Any] = client.get(f"/v1/jobs/{created.json()['id']}", headers=headers).json()
    return job


def tenant_secret(engine: Engine, name: str = "acme") -> str:
    with session_scope(engine) as session:
        secret = session.scalars(select(Tenant.webhook_secret).where(Tenant.name == name)).one()
    assert secret is not None
    return secret
