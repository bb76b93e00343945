"""API test helpers: rows and stored files put straight into the database and store.

Jobs are run by workers, which these tests do not start: `seed` writes what a worker would
(status, events, metrics, artifacts) so every read path can be exercised on its own.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, text, update

from ganft.db.notify import APPLICATION_NAME
from ganft.db.session import session_scope
from ganft.db.tables import Artifact, Dataset, Job, JobMetric, Model, Tenant, new_id, utcnow
from ganft.repo import jobs
from ganft.settings import Settings
from ganft.store import open_store

STATS = {
    "examples": 4,
    "labeled": 2,
    "unlabeled": 2,
    "classes": ["a", "b"],
    "class_counts": {"a": 1, "b": 1},
    "layout": {"kind": "features", "features": 3},
    "notes": [],
}


def npz_bytes(n: int = 12) -> bytes:
    """A tiny valid npz dataset: n 8×8 grey images, half labeled (2 classes)."""
    rng = np.random.default_rng(0)
    y = np.array([i % 2 if i < n // 2 else -1 for i in range(n)])
    buffer = io.BytesIO()
    np.savez(buffer, x=rng.integers(0, 255, (n, 8, 8), dtype=np.uint8), y=y)
    return buffer.getvalue()


def csv_bytes() -> bytes:
    return b"f1,f2,label\n0.1,0.2,cat\n0.3,0.1,dog\n0.5,0.5,\n0.2,0.9,cat\n"


def safetensors_bytes(tensors: dict[str, tuple[str, list[int]]] | None = None, *, corrupt: str = "") -> bytes:
    """A safetensors file built by hand: {name: (dtype, shape)} with zero data.

    corrupt: "gap" (offsets leave a hole), "short" (data shorter than the header says).
    """
    tensors = tensors or {"head.weight": ("F32", [2, 3]), "head.bias": ("F32", [2])}
    sizes = {"F32": 4, "F16": 2, "I64": 8, "U8": 1}
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        length = int(np.prod(shape)) * sizes[dtype]
        start = offset + (4 if corrupt == "gap" and offset else 0)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [start, start + length]}
        offset = start + length
    raw = json.dumps(header).encode()
    data = bytes(offset - (4 if corrupt == "short" else 0))
    return struct.pack("<Q", len(raw)) + raw + data


@dataclass
class Seed:
    engine: Engine
    settings: Settings

    def tenant_id(self, tenant: str) -> str:
        with session_scope(self.engine) as session:
            return session.scalars(select(Tenant.id).where(Tenant.name == tenant)).one()

    def dataset(self, tenant: str = "acme", *, status: str = "ready") -> str:
        dataset_id = new_id("ds")
        with session_scope(self.engine) as session:
            session.add(
                Dataset(
                    id=dataset_id,
                    tenant_id=self.tenant_id(tenant),
                    name="seeded",
                    format="csv",
                    status=status,
                    size_bytes=10,
                    sha256="0" * 64,
                    storage_key=f"datasets/{dataset_id}/data",
                    stats=STATS,
                )
            )
        return dataset_id

    def model(self, tenant: str = "acme", *, role: str = "classifier", kind: str = "weights") -> str:
        model_id = new_id("mdl")
        data = safetensors_bytes()
        _, sha = open_store(self.settings.store_url).put_bytes(f"models/{model_id}/model.safetensors", data)
        with session_scope(self.engine) as session:
            session.add(
                Model(
                    id=model_id,
                    tenant_id=self.tenant_id(tenant),
                    name="seeded",
                    kind=kind,
                    role=role,
                    config={"architecture": "mlp"},
                    storage_prefix=f"models/{model_id}",
                    size_bytes=len(data),
                    sha256=sha,
                )
            )
        return model_id

    def job(self, tenant: str = "acme", *, status: str = "queued", dataset_id: str | None = None, **values: Any) -> str:
        dataset_id = dataset_id or self.dataset(tenant)
        with session_scope(self.engine) as session:
            job = jobs.create(
                session,
                tenant_id=self.tenant_id(tenant),
                method="ssgan",
                dataset_id=dataset_id,
                validation_dataset_id=None,
                base_model_id=None,
                evaluator_model_id=None,
                hyperparameters={"steps": 100},
                seed=0,
                max_runtime_s=None,
                metadata={},
                total_steps=100,
                max_attempts=3,
                idempotency_key=None,
                request_hash="0" * 64,
            )
            session.execute(update(Job).where(Job.id == job.id).values(status=status, **values))
            return job.id

    def set_job(self, job_id: str, **values: Any) -> None:
        with session_scope(self.engine) as session:
            session.execute(update(Job).where(Job.id == job_id).values(**values))

    def event(self, job_id: str, type: str = "progress", **data: Any) -> int:
        with session_scope(self.engine) as session:
            return jobs.append_event(session, job_id=job_id, type=type, data=data).seq

    def finish(self, job_id: str, status: str = "succeeded") -> None:
        """What a worker's finalize does: the terminal status and its event in one transaction."""
        with session_scope(self.engine) as session:
            session.execute(update(Job).where(Job.id == job_id).values(status=status, finished_at=utcnow()))
            jobs.append_event(session, job_id=job_id, type="status", data={"status": status})

    def metric(self, job_id: str, step: int, name: str, value: float) -> None:
        with session_scope(self.engine) as session:
            session.add(JobMetric(job_id=job_id, step=step, name=name, value=value))

    def artifact(self, job_id: str, name: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        key = f"jobs/{job_id}/{name}"
        size, sha = open_store(self.settings.store_url).put_bytes(key, data)
        with session_scope(self.engine) as session:
            session.add(
                Artifact(
                    job_id=job_id, name=name, size_bytes=size, sha256=sha, content_type=content_type, storage_key=key
                )
            )
        return sha

    def age(self, table: type[Job] | type[Dataset], row_id: str, seconds: float) -> None:
        """Move a row's created_at into the past (pagination order tests)."""
        with session_scope(self.engine) as session:
            when = utcnow() - dt.timedelta(seconds=seconds)
            session.execute(update(table).where(table.id == row_id).values(created_at=when))


@pytest.fixture
def seed(engine: Engine, settings: Settings, headers: dict[str, str], other_headers: dict[str, str]) -> Seed:
    """Rows for tenants "acme" and "globex" (both exist once `headers`/`other_headers` made their keys)."""
    return Seed(engine, settings)


@pytest.fixture
def make_client(settings: Settings) -> Iterator[Callable[..., TestClient]]:
    """make_client(max_upload_bytes=100, ...) -> a TestClient on an app with those settings changed."""
    from api.main import create_app

    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        client = TestClient(create_app(settings.model_copy(update=overrides)))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


# ---------------------------------------------------------------- real servers, waits, listeners

WAIT_S = 30.0  # a hang guard, not a measurement: every wait below normally ends in well under a second


def wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture
def serve() -> Iterator[Callable[[FastAPI], str]]:
    """serve(app) -> the base URL of a real uvicorn server running that app (in a thread); stopped after the test."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(app: FastAPI) -> str:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        wait_until(lambda: server.started, "uvicorn to start")
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


def terminate_listeners(engine: Engine) -> list[bool]:
    """Kill the backends of this database's event listeners, as a DBA or a failover would."""
    with engine.connect() as connection:
        return list(
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND application_name = :name"
                ),
                {"name": APPLICATION_NAME},
            ).scalars()
        )
