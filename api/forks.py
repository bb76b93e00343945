"""Forks: a JobCreate with `from_checkpoint` resolved against its parent job.

Fields left out are the parent's; `hyperparameters` override the parent's resolved ones and are
validated as at create. What the saved state fixes cannot change (a 422 naming the field): the
method, the base model, the dataset's layout and classes, and the hyperparameters that shape the
nets or their optimisers (`FIXED`). The fork starts from its own copy of the parent's checkpoint
(`jobs/<fork>/checkpoints/`), so the parent's keep policy or deletion never takes it away.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from api.problems import from_validation_error, invalid
from api.schemas import JobCreate
from ganft.db.tables import Job, JobCheckpoint
from ganft.repo import checkpoints, datasets, jobs
from ganft.repo.claims import PRIORITY_NAMES
from ganft.store import Store
from ganft_core.config import HYPERPARAMETERS

# Hyperparameters that decide the shapes in a checkpoint (nets, optimiser parameter groups, which nets exist).
FIXED: dict[str, tuple[str, ...]] = {
    "ssgan": ("architecture", "architecture_arguments", "z_dim", "generator_space", "freeze_blocks", "run_control"),
    "adapt": ("z_dim", "generator_architecture", "discriminator_architecture", "freeze_d_blocks"),
}


@dataclass(frozen=True)
class Fork:
    spec: JobCreate  # every field filled in (the parent's where the request left it out)
    hyperparameters: dict[str, Any]  # resolved: the parent's with the overrides
    parent: Job
    checkpoint: JobCheckpoint


def resolve(session: Session, *, tenant_id: str, spec: JobCreate) -> Fork:
    """The fork `spec` asks for, checked against its parent and checkpoint (Problem 422 naming the field)."""
    origin = spec.from_checkpoint
    assert origin is not None
    parent = jobs.get(session, tenant_id=tenant_id, job_id=origin.job_id)
    if parent is None:
        raise invalid("from_checkpoint.job_id", f"job {origin.job_id!r} not found")
    checkpoint = checkpoints.get(session, job_id=parent.id, step=origin.step)
    if checkpoint is None:
        kept = [c.row.step for c in checkpoints.kept(session, job_id=parent.id, method=parent.method)]
        message = f"job {parent.id!r} keeps no checkpoint at step {origin.step}; kept: {kept}"
        raise invalid("from_checkpoint.step", message)
    given = spec.model_dump(exclude_unset=True)
    if spec.method is not None and spec.method != parent.method:
        raise invalid("method", f"the checkpoint was written by a {parent.method} job; a fork keeps its method")
    if "base_model_id" in given and spec.base_model_id != parent.base_model_id:
        raise invalid("base_model_id", "the checkpoint's nets were built from the parent's base model; a fork keeps it")
    dataset_id = spec.dataset_id or parent.dataset_id
    if dataset_id != parent.dataset_id:
        _check_layout(session, tenant_id=tenant_id, parent_dataset=parent.dataset_id, dataset_id=dataset_id)
    hyperparameters = _hyperparameters(parent, spec.hyperparameters, step=origin.step)
    inherited = {
        "method": parent.method,
        "dataset_id": dataset_id,
        "validation_dataset_id": given.get("validation_dataset_id", parent.validation_dataset_id),
        "base_model_id": parent.base_model_id,
        "evaluator_model_id": given.get("evaluator_model_id", parent.evaluator_model_id),
        "seed": given.get("seed", parent.seed),
        "max_runtime_s": given.get("max_runtime_s", parent.max_runtime_s),
        "priority": given.get("priority", PRIORITY_NAMES.get(parent.priority, "normal")),
    }
    return Fork(spec.model_copy(update=inherited), hyperparameters, parent, checkpoint)


def _hyperparameters(parent: Job, overrides: dict[str, Any], *, step: int) -> dict[str, Any]:
    merged = {**(parent.hyperparameters or {}), **overrides}
    try:
        resolved = HYPERPARAMETERS[parent.method].model_validate(merged).model_dump(mode="json")
    except ValidationError as exc:
        raise from_validation_error(exc, prefix="hyperparameters") from None
    # The parent's as its run resolved them (stored resolved; resolving again fills any field added since).
    before = HYPERPARAMETERS[parent.method].model_validate(parent.hyperparameters or {}).model_dump(mode="json")
    for name in FIXED[parent.method]:
        if name in overrides and resolved.get(name) != before.get(name):
            raise invalid(f"hyperparameters.{name}", f"fixed by the checkpoint ({before.get(name)!r}); a fork keeps it")
    if "ema_decay" in overrides and (resolved["ema_decay"] == 0) != (before["ema_decay"] == 0):
        raise invalid("hyperparameters.ema_decay", "the checkpoint was written with the EMA on or off; a fork keeps it")
    if resolved["steps"] < step:
        raise invalid("hyperparameters.steps", f"the checkpoint is at step {step}; a fork needs steps >= {step}")
    return resolved


def _check_layout(session: Session, *, tenant_id: str, parent_dataset: str, dataset_id: str) -> None:
    new = datasets.get(session, tenant_id=tenant_id, dataset_id=dataset_id, lock="share")
    if new is None:
        raise invalid("dataset_id", f"dataset {dataset_id!r} not found")
    old = datasets.get(session, tenant_id=tenant_id, dataset_id=parent_dataset)
    old_stats, new_stats = (old.stats if old is not None else {}) or {}, new.stats or {}
    for key in ("layout", "classes"):
        if old_stats.get(key) != new_stats.get(key):
            raise invalid(
                "dataset_id",
                f"its {key} {new_stats.get(key)!r} differs from the parent's dataset ({old_stats.get(key)!r}); "
                "the checkpoint's nets were built for that",
            )


def copy_checkpoint(session: Session, store: Store, *, fork: Fork, job: Job) -> None:
    """Give the new job its own copy of the parent's checkpoint, listed and pointed at (its first
    attempt resumes from it)."""
    source = fork.checkpoint
    key = f"jobs/{job.id}/checkpoints/{source.storage_key.rsplit('/', 1)[-1]}"
    try:
        with store.open_read(source.storage_key) as reader:
            size, sha256 = store.put_stream(key, iter(lambda: reader.read(1024 * 1024), b""))
    except FileNotFoundError:  # the running parent's keep policy dropped it meanwhile
        raise invalid("from_checkpoint.step", f"the checkpoint at step {source.step} is no longer kept") from None
    checkpoints.add(
        session,
        job_id=job.id,
        method=job.method,
        step=source.step,
        storage_key=key,
        size_bytes=size,
        sha256=sha256,
        keep_last=int(fork.hyperparameters.get("keep_checkpoints") or checkpoints.DEFAULT_KEEP),
    )
    job.checkpoint_key, job.checkpoint_step, job.step = key, source.step, source.step
    job.parent_job_id, job.parent_step = fork.parent.id, source.step
