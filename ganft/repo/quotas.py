"""Tenant quotas: concurrently running jobs (enforced at claim time, ganft/repo/claims.py) and stored
bytes (`max_storage_bytes`, enforced where uploads are stored). NULL is unlimited."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ganft.db.tables import Job, Tenant

UNCHANGED = object()  # `set_quota`'s default: leave that quota as it is


@dataclass(frozen=True)
class Quota:
    tenant: str
    max_running_jobs: int | None  # None: unlimited
    max_storage_bytes: int | None


class UnknownTenant(Exception):
    pass


def set_quota(
    session: Session,
    *,
    tenant_name: str,
    max_running_jobs: int | None | object = UNCHANGED,
    max_storage_bytes: int | None | object = UNCHANGED,
) -> Quota:
    """Set (an int) or clear (None) a tenant's quotas; a quota not given stays as it is.

    The tenant's queued jobs are marked unsent, so the dispatch sweep rings for them again: a job that
    waited at the old limit is claimed at its next pass, not when some other job ends.
    Raises UnknownTenant, or ValueError for a negative value (0 running jobs holds all of them queued).
    """
    tenant = session.scalars(select(Tenant).where(Tenant.name == tenant_name).with_for_update()).one_or_none()
    if tenant is None:
        raise UnknownTenant(f"no tenant named {tenant_name!r}")
    for name, value in (("max_running_jobs", max_running_jobs), ("max_storage_bytes", max_storage_bytes)):
        if value is UNCHANGED:
            continue
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise ValueError(f"{name} must be a whole number >= 0 (or cleared), not {value!r}")
        setattr(tenant, name, value)
    session.flush()
    session.execute(
        update(Job)
        .where(Job.tenant_id == tenant.id, Job.status == "queued")
        .values(dispatched_at=None)
        .execution_options(synchronize_session=False)
    )
    return Quota(tenant.name, tenant.max_running_jobs, tenant.max_storage_bytes)


def get_quota(session: Session, *, tenant_name: str) -> Quota:
    tenant = session.scalars(select(Tenant).where(Tenant.name == tenant_name)).one_or_none()
    if tenant is None:
        raise UnknownTenant(f"no tenant named {tenant_name!r}")
    return Quota(tenant.name, tenant.max_running_jobs, tenant.max_storage_bytes)
