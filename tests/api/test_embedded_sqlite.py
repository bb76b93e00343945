"""The embedded default with no settings at all: SQLite, the filesystem broker and a local store."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import text

from api.main import create_app
from ganft.db.migrate import upgrade
from ganft.db.session import make_engine, session_scope
from ganft.repo import keys
from ganft.settings import Settings
from tests.api.conftest import csv_bytes


def test_sqlite_engine_pragmas(tmp_path: Path) -> None:
    """WAL, a busy timeout and foreign keys are on for every SQLite connection."""
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
        busy_timeout_ms = connection.execute(text("PRAGMA busy_timeout")).scalar()
        assert busy_timeout_ms is not None and busy_timeout_ms >= 1000
    engine.dispose()


def test_whole_api_on_the_embedded_default(tmp_path: Path) -> None:
    """Upload, create a job (enqueued on the filesystem broker), page, read events, cancel, readiness:
    all on SQLite, the same code paths as on Postgres."""
    settings = Settings(data_dir=tmp_path / "data")
    assert settings.database_url.startswith("sqlite:") and settings.is_embedded_broker
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    with session_scope(engine) as session:
        _, key = keys.create_key(session, tenant_name="solo")
    engine.dispose()
    headers = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").json()["checks"] == {"database": "ok", "broker": "ok", "store": "ok"}
        dataset = client.post("/v1/datasets?name=pets.csv", headers=headers, content=csv_bytes())
        assert dataset.status_code == 201, dataset.text
        ids = []
        for seed in range(3):
            job = client.post(
                "/v1/jobs", headers=headers, json={"method": "ssgan", "dataset_id": dataset.json()["id"], "seed": seed}
            )
            assert job.status_code == 201, job.text
            ids.append(job.json()["id"])
        first = client.get("/v1/jobs", headers=headers, params={"limit": 2}).json()
        second = client.get("/v1/jobs", headers=headers, params={"after": first["next_cursor"]}).json()
        assert [j["id"] for j in first["data"] + second["data"]] == list(reversed(ids))
        assert first["data"][0]["created_at"].endswith("Z") or first["data"][0]["created_at"].endswith("+00:00")
        assert client.post(f"/v1/jobs/{ids[0]}/cancel", headers=headers).json()["status"] == "cancelled"
        events = client.get(f"/v1/jobs/{ids[0]}/events", headers=headers).json()["data"]
        assert [e["data"]["status"] for e in events] == ["queued", "cancelled"]
    messages = [p for p in settings.broker_folder.iterdir() if p.is_file()]
    assert len(messages) == 3  # one ganft.run_job message per job, where the worker looks
