"""Models: uploaded pretrained models and the output models of finished jobs.

A model's store folder (`storage_prefix`) is directly usable as a trainer's `base_model`
folder (docs/CONTRACTS.md): `model.safetensors` + `model.json`, plus `discriminator.*`
for a GAN, or `model.pt2` + `model.json` for an exported program.

A job's output model points at the job's artifact folder; `models/{id}/` holds uploads only.
An upload has no `uploading` state: its row is inserted only once every file is in the store,
so an API process killed before that leaves a folder without a row, never visible;
`idle_folders` + `orphan_folders` find such folders for the API's start-up purge (api/main.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Literal

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from ganft.db.tables import Job, Model, utcnow
from ganft.repo.pages import Page, paginate
from ganft.states import ACTIVE_STATUSES
from ganft.store import Store

STORAGE_ROOT = "models"
_ID = re.compile(r"^mdl_[0-9a-f]+$")  # ganft.db.tables.new_id("mdl")


def storage_prefix_for(model_id: str) -> str:
    return f"{STORAGE_ROOT}/{model_id}"


def idle_folders(store: Store, *, idle_since: float) -> list[str]:
    """Names of the folders under `models/` in which nothing changed after `idle_since` (unix time):
    the folder's and its files' newest mtime. A live upload keeps writing its temporary file."""
    root = store.local_path(STORAGE_ROOT)
    if not root.is_dir():
        return []
    idle = []
    for folder in root.iterdir():
        try:
            newest = max(path.stat().st_mtime for path in (folder, *folder.iterdir()))
        except (FileNotFoundError, NotADirectoryError):  # removed meanwhile, or a stray file
            continue
        if newest < idle_since:
            idle.append(folder.name)
    return idle


def orphan_folders(session: Session, *, folder_names: Iterable[str]) -> list[str]:
    """Of the folder names found under `models/`, the model ids that have no row (a killed upload
    or finalize; the caller decides by age whether one is dead). Names that are not model ids are
    never returned: nothing else is ours to delete."""
    ids = sorted({name for name in folder_names if _ID.match(name)})
    orphans = []
    for start in range(0, len(ids), 1000):  # bounded IN lists
        batch = ids[start : start + 1000]
        known = set(session.scalars(select(Model.id).where(Model.id.in_(batch))))
        orphans += [model_id for model_id in batch if model_id not in known]
    return orphans


def main_file_key(model: Model) -> str:
    """Store key of the file `GET /v1/models/{id}/weights` serves."""
    name = "model.pt2" if model.kind == "program" else "model.safetensors"
    return f"{model.storage_prefix}/{name}"


def create(
    session: Session,
    *,
    model_id: str,
    tenant_id: str,
    name: str,
    kind: Literal["weights", "program"],
    role: str,
    config: dict[str, Any],
    size_bytes: int,
    sha256: str,
    source_job_id: str | None = None,
) -> Model:
    row = Model(
        id=model_id,
        tenant_id=tenant_id,
        name=name,
        kind=kind,
        role=role,
        config=config,
        storage_prefix=storage_prefix_for(model_id),
        size_bytes=size_bytes,
        sha256=sha256,
        source_job_id=source_job_id,
    )
    session.add(row)
    session.flush()
    return row


def get(
    session: Session, *, tenant_id: str, model_id: str, lock: Literal["share", "update"] | bool = False
) -> Model | None:
    """The tenant's model, None when absent, deleted or another tenant's.

    `lock` takes a row lock until commit: a job being created holds FOR SHARE (`True` or "share") on
    its models and a delete takes FOR UPDATE, so a delete never slips past a new job's reference.
    """
    query = select(Model).where(Model.id == model_id, Model.tenant_id == tenant_id, Model.deleted_at.is_(None))
    if lock:
        query = query.with_for_update(read=lock is True or lock == "share")
    return session.scalars(query).one_or_none()


def list_models(session: Session, *, tenant_id: str, limit: int, after: str | None) -> Page[Model]:
    query = select(Model).where(Model.tenant_id == tenant_id, Model.deleted_at.is_(None))
    return paginate(session, query, created_at=Model.created_at, row_id=Model.id, limit=limit, after=after)


def in_use(session: Session, *, model_id: str) -> bool:
    """True when a job that is not finished uses this model (as its base or its evaluator)."""
    uses = (Job.base_model_id == model_id) | (Job.evaluator_model_id == model_id)
    return bool(session.scalar(select(exists().where(uses, Job.status.in_(ACTIVE_STATUSES)))))


def mark_deleted(session: Session, *, model_id: str) -> None:
    """Soft delete: jobs keep their reference; the files go with the garbage collector (ganft/retention.py)."""
    session.execute(update(Model).where(Model.id == model_id, Model.deleted_at.is_(None)).values(deleted_at=utcnow()))
