"""Tenants and API keys."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ganft.db.tables import ApiKey, Tenant, utcnow
from ganft.security import generate_key, hash_key, key_prefix


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant and the key used (the rate limit is per key)."""

    tenant_id: str
    tenant_name: str
    key_id: str
    key_prefix: str


class AmbiguousPrefix(Exception):
    """More than one active key has this prefix; revoke by full key instead."""


def get_or_create_tenant(session: Session, *, name: str) -> Tenant:
    tenant = session.scalars(select(Tenant).where(Tenant.name == name)).one_or_none()
    if tenant is None:
        tenant = Tenant(name=name)
        session.add(tenant)
        session.flush()
    return tenant


def create_key(session: Session, *, tenant_name: str, label: str | None = None) -> tuple[ApiKey, str]:
    """A new key for `tenant_name` (the tenant is created if needed); returns (row, full key)."""
    tenant = get_or_create_tenant(session, name=tenant_name)
    new = generate_key()
    row = ApiKey(tenant_id=tenant.id, prefix=new.prefix, key_hash=new.key_hash, name=label)
    session.add(row)
    session.flush()
    return row, new.key


def authenticate(session: Session, *, key: str) -> Principal | None:
    """The principal for an active key, None for unknown, malformed or revoked keys."""
    if key_prefix(key) is None:
        return None
    row = session.execute(
        select(ApiKey.id, ApiKey.prefix, Tenant.id, Tenant.name)
        .join(Tenant, Tenant.id == ApiKey.tenant_id)
        .where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
    ).one_or_none()
    if row is None:
        return None
    key_id, prefix, tenant_id, tenant_name = row
    return Principal(tenant_id=tenant_id, tenant_name=tenant_name, key_id=key_id, key_prefix=prefix)


def revoke_key(session: Session, *, prefix: str) -> int:
    """Revoke the active key with `prefix`; returns how many were revoked (0 or 1)."""
    active = session.scalars(select(ApiKey.id).where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))).all()
    if len(active) > 1:
        raise AmbiguousPrefix(f"{len(active)} active keys share the prefix {prefix!r}")
    if not active:
        return 0
    session.execute(update(ApiKey).where(ApiKey.id == active[0]).values(revoked_at=utcnow()))
    return 1


def list_keys(session: Session, *, tenant_name: str | None = None) -> list[tuple[ApiKey, str]]:
    """(key row, tenant name) pairs, oldest first."""
    query = select(ApiKey, Tenant.name).join(Tenant, Tenant.id == ApiKey.tenant_id).order_by(ApiKey.created_at)
    if tenant_name is not None:
        query = query.where(Tenant.name == tenant_name)
    return [(key, name) for key, name in session.execute(query).all()]
