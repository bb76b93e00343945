"""Forks (`POST /v1/jobs` with `from_checkpoint`) and checkpoint exports over HTTP: what a fork inherits,
its own copy of the checkpoint, its lineage, and a 422 naming the field for what a saved state cannot take.
tests/e2e/test_forks.py trains them with a real worker."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import update

from ganft.db.session import session_scope
from ganft.db.tables import Dataset
from ganft.repo import lifecycle
from ganft.store import open_store
from tests.api.conftest import Seed

STATE = b"the whole training state at step 40"


def _parent(seed: Seed, tenant: str = "acme") -> str:
    job = seed.job(tenant, status="running", worker_id="w1")
    key = f"jobs/{job}/checkpoints/ckpt-00000040.pt"
    size, sha = open_store(seed.settings.store_url).put_bytes(key, STATE)
    with session_scope(seed.engine) as session:
        lifecycle.record_checkpoint(session, job_id=job, worker_id="w1", key=key, step=40, size_bytes=size, sha256=sha)
    return job


def _fork(client: TestClient, headers: dict[str, str], parent: str, step: int = 40, **body: Any) -> Any:
    return client.post("/v1/jobs", headers=headers, json={"from_checkpoint": {"job_id": parent, "step": step}, **body})


def test_fork_inherits_the_parent_and_copies_its_checkpoint(
    client: TestClient, headers: dict[str, str], seed: Seed
) -> None:
    parent = _parent(seed)
    parent_body = client.get(f"/v1/jobs/{parent}", headers=headers).json()
    response = _fork(client, headers, parent, hyperparameters={"steps": 200, "lr_d": 1e-4})
    assert response.status_code == 201, response.text
    fork = response.json()
    assert fork["forked_from"] == {"job_id": parent, "step": 40}
    assert (fork["method"], fork["dataset_id"], fork["seed"]) == ("ssgan", parent_body["dataset_id"], 0)
    assert fork["hyperparameters"]["steps"] == 200 and fork["hyperparameters"]["lr_d"] == 1e-4
    assert fork["progress"]["step"] == 40 and fork["progress"]["total_steps"] == 200
    assert fork["status"] == "queued" and parent_body["forked_from"] is None
    (kept,) = client.get(f"/v1/jobs/{fork['id']}/checkpoints", headers=headers).json()["data"]
    assert kept["step"] == 40
    # Its own copy: downloadable from the fork, and still there when the parent's is gone.
    open_store(seed.settings.store_url).delete(f"jobs/{parent}/checkpoints/ckpt-00000040.pt")
    assert client.get(f"/v1/jobs/{fork['id']}/checkpoints/40", headers=headers).content == STATE
    # Other fields may be given; a fork of a fork names its own parent.
    seed.set_job(fork["id"], status="running", worker_id="w1")
    grandchild = _fork(client, headers, fork["id"], seed=7, metadata={"try": "2"}).json()
    assert (grandchild["forked_from"], grandchild["seed"]) == ({"job_id": fork["id"], "step": 40}, 7)
    assert grandchild["hyperparameters"]["steps"] == 200  # the parent's (overridden) value carries on


def _error(response: Any) -> tuple[int, str]:
    body = response.json()
    return response.status_code, body["errors"][0]["field"] if body.get("errors") else body["detail"]


def test_what_a_fork_cannot_take_is_a_422_naming_the_field(
    client: TestClient, headers: dict[str, str], seed: Seed
) -> None:
    parent = _parent(seed)
    assert _error(_fork(client, headers, "job_0123456789abcdef01234567")) == (422, "from_checkpoint.job_id")
    assert _error(_fork(client, headers, parent, step=41)) == (422, "from_checkpoint.step")
    assert _error(_fork(client, headers, parent, method="adapt")) == (422, "method")
    assert _error(_fork(client, headers, parent, base_model_id=seed.model())) == (422, "base_model_id")
    for overrides, field in [
        ({"architecture": "resnet18"}, "hyperparameters.architecture"),
        ({"z_dim": 7}, "hyperparameters.z_dim"),
        ({"run_control": False}, "hyperparameters.run_control"),
        ({"ema_decay": 0.0}, "hyperparameters.ema_decay"),
        ({"steps": 39}, "hyperparameters.steps"),
        ({"no_such_knob": 1}, "hyperparameters.no_such_knob"),
        ({"lr_d": -1}, "hyperparameters.lr_d"),
    ]:
        assert _error(_fork(client, headers, parent, hyperparameters=overrides)) == (422, field), overrides
    other_layout = seed.dataset()
    with session_scope(seed.engine) as session:
        stats = {"layout": {"kind": "features", "features": 5}, "classes": ["a", "b"]}
        session.execute(update(Dataset).where(Dataset.id == other_layout).values(stats=stats))
    assert _error(_fork(client, headers, parent, dataset_id=other_layout)) == (422, "dataset_id")
    same_layout = seed.dataset()
    assert _fork(client, headers, parent, dataset_id=same_layout).json()["dataset_id"] == same_layout
    assert _error(_fork(client, headers, parent, from_checkpoint={"job_id": parent})) == (422, "from_checkpoint.step")
    # Without from_checkpoint, method and dataset_id are required as ever.
    assert _error(client.post("/v1/jobs", headers=headers, json={"method": "ssgan"})) == (422, "dataset_id")


def test_another_tenants_checkpoint_cannot_be_forked_or_exported(
    client: TestClient, headers: dict[str, str], other_headers: dict[str, str], seed: Seed
) -> None:
    parent = _parent(seed)
    assert _error(_fork(client, other_headers, parent)) == (422, "from_checkpoint.job_id")
    assert client.post(f"/v1/jobs/{parent}/checkpoints/40/export", headers=other_headers).status_code == 404


def test_export_is_a_fork_that_only_writes_the_outputs(client: TestClient, headers: dict[str, str], seed: Seed) -> None:
    parent = _parent(seed)
    response = client.post(f"/v1/jobs/{parent}/checkpoints/40/export", headers=headers)
    assert response.status_code == 202, response.text
    export = response.json()
    assert export["forked_from"] == {"job_id": parent, "step": 40}
    assert export["hyperparameters"]["steps"] == 40 and export["progress"]["total_steps"] == 40
    assert export["metadata"] == {"export_of": f"{parent}@40"} and export["status"] == "queued"
    assert response.headers["location"] == f"/v1/jobs/{export['id']}"
    missing = client.post(f"/v1/jobs/{parent}/checkpoints/41/export", headers=headers)
    assert missing.status_code == 404 and "checkpoint '41'" in missing.json()["detail"]


def test_a_checkpoint_gone_from_the_store_is_a_422(client: TestClient, headers: dict[str, str], seed: Seed) -> None:
    """The running parent's keep policy may drop the file between the listing and the copy: no 500."""
    parent = _parent(seed)
    open_store(seed.settings.store_url).delete(f"jobs/{parent}/checkpoints/ckpt-00000040.pt")
    response = _fork(client, headers, parent)
    assert _error(response) == (422, "from_checkpoint.step") and "no longer kept" in response.text
    assert client.get("/v1/jobs", headers=headers).json()["data"][0]["id"] == parent  # no fork was made
