"""`GET /v1/usage`: the caller's tenant's stored bytes by kind, and its storage quota."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import SessionDep, TenantDep
from ganft.client_types import Usage
from ganft.repo import usage

router = APIRouter(prefix="/v1/usage", tags=["usage"])


@router.get("", response_model=Usage)
def get_usage(session: SessionDep, tenant: TenantDep) -> Usage:
    """Stored bytes of your datasets, models, kept checkpoints and job artifacts, and your quota (null: none)."""
    by_kind = usage.tenant_usage(session, tenant_id=tenant.tenant_id)
    quota = usage.storage_quota(session, tenant_id=tenant.tenant_id)
    return Usage(total_bytes=sum(by_kind.values()), by_kind=by_kind, max_storage_bytes=quota)
