"""Tenants and API keys."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from ganft.db.notify import KEYS_REVOKED_CHANNEL
from ganft.db.reads import Reader, first
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


# The principal of an active key, by the key's hash (built once: the API's Reader compiles it once).
_PRINCIPAL = (
    select(
        ApiKey.id.label("key_id"),
        ApiKey.prefix.label("key_prefix"),
        Tenant.id.label("tenant_id"),
        Tenant.name.label("tenant_name"),
    )
    .join(Tenant, Tenant.id == ApiKey.tenant_id)
    .where(ApiKey.key_hash == bindparam("key_hash"), ApiKey.revoked_at.is_(None))
)


def authenticate(session: Session, *, key: str) -> Principal | None:
    """The principal for an active key, None for unknown, malformed or revoked keys."""
    if key_prefix(key) is None:
        return None
    row = session.execute(_PRINCIPAL, {"key_hash": hash_key(key)}).mappings().one_or_none()
    return None if row is None else Principal(**row)


async def read_principal(reader: Reader, *, key: str) -> Principal | None:
    """`authenticate` without a session (the API's auth: no threadpool hop on Postgres)."""
    if key_prefix(key) is None:
        return None
    row = await first(reader, _PRINCIPAL, {"key_hash": hash_key(key)})
    return None if row is None else Principal(**row)


def revoke_key(session: Session, *, prefix: str) -> int:
    """Revoke the active key with `prefix`; returns how many were revoked (0 or 1)."""
    active = session.scalars(select(ApiKey.id).where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))).all()
    if len(active) > 1:
        raise AmbiguousPrefix(f"{len(active)} active keys share the prefix {prefix!r}")
    if not active:
        return 0
    key_hash = session.execute(
        update(ApiKey).where(ApiKey.id == active[0]).values(revoked_at=utcnow()).returning(ApiKey.key_hash)
    ).scalar_one()
    if session.get_bind().dialect.name == "postgresql":
        # At commit, every API process drops the key from its KeyCache (ganft/db/notify.py): a
        # revoked key stops working at once, not after GANFT_AUTH_CACHE_S.
        session.execute(select(func.pg_notify(KEYS_REVOKED_CHANNEL, key_hash)))
    return 1


def list_keys(session: Session, *, tenant_name: str | None = None) -> list[tuple[ApiKey, str]]:
    """(key row, tenant name) pairs, oldest first."""
    query = select(ApiKey, Tenant.name).join(Tenant, Tenant.id == ApiKey.tenant_id).order_by(ApiKey.created_at)
    if tenant_name is not None:
        query = query.where(Tenant.name == tenant_name)
    return [(key, name) for key, name in session.execute(query).all()]
