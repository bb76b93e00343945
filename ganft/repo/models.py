"""Models: uploaded pretrained models and the output models of finished jobs.

A model's store folder (`storage_prefix`) is directly usable as a trainer's `base_model`
folder (docs/CONTRACTS.md): `model.safetensors` + `model.json`, plus `discriminator.*`
for a GAN, or `model.pt2` + `model.json` for an exported program.
"""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from ganft.db.tables import Model
from ganft.repo.pages import Page, paginate


def storage_prefix_for(model_id: str) -> str:
    return f"models/{model_id}"


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


def get(session: Session, *, tenant_id: str, model_id: str, lock: bool = False) -> Model | None:
    """The tenant's model, None when absent or another tenant's. `lock`: FOR SHARE until commit."""
    query = select(Model).where(Model.id == model_id, Model.tenant_id == tenant_id)
    if lock:
        query = query.with_for_update(read=True)
    return session.scalars(query).one_or_none()


def list_models(session: Session, *, tenant_id: str, limit: int, after: str | None) -> Page[Model]:
    query = select(Model).where(Model.tenant_id == tenant_id)
    return paginate(session, query, created_at=Model.created_at, row_id=Model.id, limit=limit, after=after)
