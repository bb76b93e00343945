"""Helpers shared by the reliability tests: tiny jobs, sending messages, reading a job's history."""

from __future__ import annotations

from typing import Any

from celery import Celery
from sqlalchemy import Engine, func, select

from ganft.db.session import session_scope
from ganft.db.tables import Artifact, Job, Model
from tests.worker.helpers import job_events

TERMINAL = ("succeeded", "failed", "cancelled")
# The cheapest ssgan run: a 3-class 8-feature npz (tests.worker.helpers.features_npz), a handful of
# steps, no control run. Its cost is the training child's start (spawn + torch import), ~2-3 s.
TINY_SSGAN: dict[str, Any] = {
    "steps": 4, "batch_size": 8, "unlabeled_batch_size": 8, "z_dim": 8, "run_control": False,
    "eval_every": 4, "checkpoint_every": 2, "log_every": 2, "validation_fraction": 0.2,
}  # fmt: skip


def send(broker_url: str, job_id: str, times: int = 1, **transport_options: Any) -> None:
    """Publish `ganft.run_job(job_id)` as the API does, `times` times."""
    app = Celery("reliability-producer", set_as_current=False)
    app.conf.update(broker_url=broker_url, task_serializer="json", broker_transport_options=transport_options)
    for _ in range(times):
        app.send_task("ganft.run_job", args=[job_id], queue="gpu")
    app.close()


def statuses(engine: Engine, job_id: str) -> list[tuple[str, int | None]]:
    """The job's status events as (status, attempt)."""
    return [(d["status"], d.get("attempt")) for _, t, d in job_events(engine, job_id) if t == "status"]


def terminal_rows(engine: Engine, job_ids: list[str]) -> dict[str, Job] | None:
    """All rows once every job is terminal, else None."""
    with session_scope(engine) as session:
        rows = session.scalars(select(Job).where(Job.id.in_(job_ids))).all()
    if len(rows) == len(job_ids) and all(r.status in TERMINAL for r in rows):
        return {r.id: r for r in rows}
    return None


def artifact_names(engine: Engine, job_id: str) -> list[str]:
    """Artifact rows of a job, sorted, duplicates kept (a second run would add a second set)."""
    with session_scope(engine) as session:
        return sorted(session.scalars(select(Artifact.name).where(Artifact.job_id == job_id)))


def output_models(engine: Engine, job_id: str) -> int:
    with session_scope(engine) as session:
        return int(session.scalar(select(func.count()).select_from(Model).where(Model.source_job_id == job_id)) or 0)


def assert_ran_once(engine: Engine, job_id: str) -> None:
    """One `running` transition (attempt 1), one success, one set of artifacts, one output model."""
    assert statuses(engine, job_id) == [("queued", None), ("running", 1), ("succeeded", None)], statuses(engine, job_id)
    assert_one_output_set(engine, job_id)


def assert_one_output_set(engine: Engine, job_id: str) -> None:
    """Exactly one set of artifacts (no duplicate names) and one registered output model."""
    names = artifact_names(engine, job_id)
    assert names and len(names) == len(set(names)), names
    assert output_models(engine, job_id) == 1
