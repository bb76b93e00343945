"""The garbage collector (ganft/retention.py) on a real Postgres and on a file:// folder and a real S3 server.

Rows are written as the API and a worker would; the clock is injected (`now`), so the grace period
and the retention days pass without waiting. The invariant checked after every pass: each key a
row still references is in the store.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from ganft.db.session import session_scope
from ganft.db.tables import Artifact, Dataset, Job, JobCheckpoint, Model, Tenant, new_id, utcnow
from ganft.repo import jobs
from ganft.retention import collect
from ganft.settings import Settings
from ganft.states import ACTIVE_STATUSES
from ganft.store import Store, open_store

DAY_S = 24 * 3600.0


@pytest.fixture(params=["file", "s3"])
def gc_settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """The test database, and a store that is a file:// folder or a prefix on the real S3 server."""
    if request.param == "file":
        return settings
    s3: Settings = request.getfixturevalue("s3_settings")
    fields = ("store_url", "store_endpoint", "store_region", "store_access_key_id", "store_secret_access_key")
    return settings.model_copy(update={**{f: getattr(s3, f) for f in fields}, "store_path_style": True})


@dataclass
class World:
    """Rows and files of one tenant, as the API and the workers leave them."""

    engine: Engine
    store: Store
    tenant_id: str = ""
    keys: dict[str, str] = field(default_factory=dict)  # label -> a store key written

    def put(self, label: str, key: str, size: int = 8) -> str:
        self.store.put_bytes(key, label.encode()[:1] * size)
        self.keys[label] = key
        return key

    def dataset(self, label: str, *, status: str = "ready") -> str:
        dataset_id = new_id("ds")
        key = self.put(label, f"datasets/{dataset_id}/data")
        with session_scope(self.engine) as session:
            session.add(
                Dataset(id=dataset_id, tenant_id=self.tenant_id, name=label, format="csv", status=status,
                        size_bytes=8, sha256="0" * 64, storage_key=key, stats={})
            )  # fmt: skip
        return dataset_id

    def model(self, label: str, *, deleted: bool = False, source_job_id: str | None = None) -> str:
        model_id = new_id("mdl")
        prefix = f"jobs/{source_job_id}/artifacts" if source_job_id else f"models/{model_id}"
        if source_job_id is None:
            self.put(label, f"{prefix}/model.safetensors")
        with session_scope(self.engine) as session:
            session.add(
                Model(id=model_id, tenant_id=self.tenant_id, name=label, kind="weights", role="classifier",
                      config={}, storage_prefix=prefix, size_bytes=8, sha256="0" * 64, source_job_id=source_job_id,
                      deleted_at=utcnow() if deleted else None)
            )  # fmt: skip
        return model_id

    def job(self, status: str, dataset_id: str, *, finished_days_ago: float = 0.0, **values: Any) -> str:
        with session_scope(self.engine) as session:
            job = jobs.create(
                session, tenant_id=self.tenant_id, method="ssgan", dataset_id=dataset_id, validation_dataset_id=None,
                base_model_id=None, evaluator_model_id=None, hyperparameters={}, seed=0, max_runtime_s=None,
                metadata={}, total_steps=10, max_attempts=3, idempotency_key=None, request_hash="0" * 64,
            )  # fmt: skip
            if status not in ACTIVE_STATUSES:
                values["finished_at"] = utcnow() - dt.timedelta(days=finished_days_ago)
            session.execute(update(Job).where(Job.id == job.id).values(status=status, **values))
            return job.id

    def checkpoint(self, label: str, job_id: str, step: int) -> str:
        key = self.put(label, f"jobs/{job_id}/checkpoints/ckpt-{step}.pt")
        with session_scope(self.engine) as session:
            session.add(JobCheckpoint(job_id=job_id, step=step, storage_key=key, size_bytes=8, sha256="0" * 64))
        return key

    def artifact(self, label: str, job_id: str, key: str) -> str:
        self.put(label, key)
        with session_scope(self.engine) as session:
            session.add(Artifact(job_id=job_id, name=key.rsplit("/", 1)[1], size_bytes=8, sha256="0" * 64,
                                 content_type="application/octet-stream", storage_key=key))  # fmt: skip
        return key


def _world(settings: Settings, engine: Engine) -> World:
    world = World(engine, open_store(settings.store_url, settings))
    with session_scope(engine) as session:
        tenant = Tenant(name="acme")
        session.add(tenant)
        session.flush()
        world.tenant_id = tenant.id
    w = world
    ready = w.dataset("d-ready")
    held = w.dataset("d-deleted-held", status="deleted")
    w.dataset("d-deleted-free", status="deleted")
    w.put("d-orphan", f"datasets/{new_id('ds')}/data")
    w.model("m-live")
    base = w.model("m-deleted-held", deleted=True)
    w.model("m-deleted-free", deleted=True)
    w.put("m-orphan", f"models/{new_id('mdl')}/model.json")
    # An unfinished job: its whole folder stays, registered or not.
    running = w.job("running", held, base_model_id=base)
    w.checkpoint("run-ckpt", running, 5)
    w.put("run-unregistered", f"jobs/{running}/checkpoints/ckpt-9.pt")
    w.put("run-picture", f"jobs/{running}/pictures/samples-0123.png")
    # A job that succeeded 10 days ago: 3 kept checkpoints, its artifacts (the output model's folder).
    old = w.job("succeeded", ready, finished_days_ago=10)
    for step in (10, 20, 30):
        w.checkpoint(f"old-ckpt-{step}", old, step)
    w.artifact("old-model", old, f"jobs/{old}/artifacts/model.safetensors")
    w.artifact("old-metrics", old, f"jobs/{old}/artifacts/metrics.json")
    w.put("old-picture", f"jobs/{old}/pictures/samples-aaaa.png")  # superseded live-picture version
    model = w.model("old-output", source_job_id=old)
    with session_scope(engine) as session:
        session.execute(update(Job).where(Job.id == old).values(output_model_id=model))
    # A job that failed 10 days ago: its artifact is the newest live picture; an older version beside it.
    failed = w.job("failed", ready, finished_days_ago=10)
    w.checkpoint("failed-ckpt", failed, 4)
    w.artifact("failed-picture", failed, f"jobs/{failed}/pictures/samples-bbbb.png")
    w.put("failed-old-picture", f"jobs/{failed}/pictures/samples-cccc.png")
    # A succeeded job whose output model was deleted, 10 days ago.
    gone = w.job("succeeded", ready, finished_days_ago=10)
    w.artifact("gone-model", gone, f"jobs/{gone}/artifacts/model.safetensors")
    gone_model = w.model("gone-output", source_job_id=gone, deleted=True)
    with session_scope(engine) as session:
        session.execute(update(Job).where(Job.id == gone).values(output_model_id=gone_model))
    w.put("job-orphan", f"jobs/{new_id('job')}/artifacts/x.bin")
    return world


def _referenced(engine: Engine) -> list[str]:
    """Every store key (or folder) a row still references, as the API and the workers would read them."""
    with session_scope(engine) as session:
        active = select(Job.id).where(Job.status.in_(ACTIVE_STATUSES))
        found = list(session.scalars(select(Dataset.storage_key).where(Dataset.status == "ready")))
        found += session.scalars(
            select(Dataset.storage_key).where(Dataset.status == "deleted", Dataset.id.in_(
                select(Job.dataset_id).where(Job.status.in_(ACTIVE_STATUSES)))))  # fmt: skip
        found += session.scalars(select(JobCheckpoint.storage_key))
        found += session.scalars(select(Artifact.storage_key))
        found += [f"{p}/model.safetensors" for p in session.scalars(
            select(Model.storage_prefix).where(Model.deleted_at.is_(None), Model.source_job_id.is_(None)))]  # fmt: skip
        found += [f"jobs/{j}" for j in session.scalars(active)]
        return [key for key in found if key]


def _exists(store: Store, key: str) -> bool:
    if store.exists(key):
        return True
    from ganft.store_gc import list_objects

    return bool(list_objects(store, key))  # a folder (an unfinished job's)


def _check_references(world: World) -> None:
    for key in _referenced(world.engine):
        assert _exists(world.store, key), f"a referenced key was deleted: {key}"


def _present(world: World) -> set[str]:
    return {label for label, key in world.keys.items() if world.store.exists(key)}


def test_defaults_delete_only_unreferenced_files_and_superseded_pictures(gc_settings: Settings, engine: Engine) -> None:
    """The defaults keep every checkpoint and artifact; deleted-and-unused inputs, orphans and the
    superseded picture versions of finished jobs go; a second pass deletes nothing more."""
    world = _world(gc_settings, engine)
    later = time.time() + 2 * gc_settings.gc_grace_s
    report = collect(gc_settings, store=world.store, now=later)
    gone = set(world.keys) - _present(world)
    assert gone == {"d-deleted-free", "d-orphan", "m-deleted-free", "m-orphan", "old-picture",
                    "failed-old-picture", "job-orphan"}  # fmt: skip
    assert report.checkpoints_dropped == report.artifacts_dropped == 0
    assert report.freed_bytes == 7 * 8
    _check_references(world)
    again = collect(gc_settings, store=world.store, now=later)
    assert again.deleted == [] and again.freed_bytes == 0


def test_nothing_is_deleted_within_the_grace_period(gc_settings: Settings, engine: Engine) -> None:
    world = _world(gc_settings, engine)
    report = collect(gc_settings, store=world.store, now=time.time())
    assert report.deleted == [] and report.kept_recent == 7
    assert _present(world) == set(world.keys)


def test_strict_policies_drop_finished_jobs_rows_but_never_what_is_in_use(
    gc_settings: Settings, engine: Engine
) -> None:
    """Last checkpoint only, checkpoints and artifacts 7 days: the 10-day-old jobs lose their checkpoints;
    the succeeded job's artifacts stay (its output model is in use), the deleted model's job's go."""
    world = _world(gc_settings, engine)
    strict = gc_settings.model_copy(
        update={"retain_checkpoints_last_only": True, "retain_checkpoints_days": 7.0, "retain_artifacts_days": 7.0}
    )
    later = time.time() + 2 * strict.gc_grace_s
    dry = collect(strict, store=world.store, now=later, dry_run=True)
    assert _present(world) == set(world.keys)  # a dry run changes nothing
    report = collect(strict, store=world.store, now=later)
    assert sorted(dry.deleted) == sorted(report.deleted) and dry.freed_bytes == report.freed_bytes
    assert report.checkpoints_dropped == 4 and report.artifacts_dropped == 2  # failed's picture, gone's model
    kept = _present(world)
    assert {"old-model", "old-metrics", "run-ckpt", "run-unregistered", "run-picture", "d-ready",
            "d-deleted-held", "m-live", "m-deleted-held"} <= kept  # fmt: skip
    assert not kept & {"old-ckpt-10", "old-ckpt-20", "old-ckpt-30", "failed-ckpt", "failed-picture", "gone-model"}
    _check_references(world)
    again = collect(strict, store=world.store, now=later)
    assert again.deleted == [] and again.checkpoints_dropped == again.artifacts_dropped == 0


def test_last_only_keeps_the_newest_checkpoint_of_a_finished_job(gc_settings: Settings, engine: Engine) -> None:
    world = _world(gc_settings, engine)
    last_only = gc_settings.model_copy(update={"retain_checkpoints_last_only": True})
    collect(last_only, store=world.store, now=time.time() + 2 * last_only.gc_grace_s)
    kept = _present(world)
    assert {"old-ckpt-30", "failed-ckpt", "run-ckpt"} <= kept
    assert not kept & {"old-ckpt-10", "old-ckpt-20"}
    _check_references(world)


def test_a_held_input_goes_once_its_job_finishes(gc_settings: Settings, engine: Engine) -> None:
    """The deleted dataset and model that the running job uses go after the job ends; its folder stays."""
    world = _world(gc_settings, engine)
    later = time.time() + 2 * gc_settings.gc_grace_s
    collect(gc_settings, store=world.store, now=later)
    assert {"d-deleted-held", "m-deleted-held"} <= _present(world)
    with session_scope(engine) as session:
        session.execute(update(Job).where(Job.status == "running").values(status="cancelled", finished_at=utcnow()))
    collect(gc_settings, store=world.store, now=later)
    kept = _present(world)
    assert not kept & {"d-deleted-held", "m-deleted-held", "run-unregistered", "run-picture"}
    assert "run-ckpt" in kept  # a recorded checkpoint of the cancelled job
    _check_references(world)
