"""The per-process API key cache: a revoked key works for at most `auth_cache_s`, failures are never kept."""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlalchemy import Engine, update

from api.keycache import KeyCache
from ganft.db.session import session_scope
from ganft.db.tables import ApiKey, utcnow
from ganft.repo import keys
from ganft.repo.keys import Principal
from ganft.security import hash_key, key_prefix


def _principal(n: int) -> Principal:
    return Principal(tenant_id=f"ten_{n}", tenant_name=f"t{n}", key_id=f"key_{n}", key_prefix=f"{n:08x}")


def _revoke(engine: Engine, api_key: str) -> None:
    with session_scope(engine) as session:
        assert keys.revoke_key(session, prefix=key_prefix(api_key) or "") == 1


def test_entries_expire_after_the_ttl() -> None:
    cache = KeyCache(ttl_s=0.5)
    cache.put("gft_00000001_secret", _principal(1))
    assert cache.get("gft_00000001_secret") == _principal(1)
    assert cache.get("gft_00000002_other") is None
    time.sleep(0.6)
    assert cache.get("gft_00000001_secret") is None


def test_zero_ttl_keeps_nothing() -> None:
    cache = KeyCache(ttl_s=0)
    cache.put("gft_00000001_secret", _principal(1))
    assert cache.get("gft_00000001_secret") is None


def test_the_oldest_entry_goes_when_full() -> None:
    cache = KeyCache(ttl_s=60, max_entries=3)
    for n in range(4):
        cache.put(f"gft_{n:08x}_secret", _principal(n))
    assert cache.get("gft_00000000_secret") is None
    assert [cache.get(f"gft_{n:08x}_secret") for n in (1, 2, 3)] == [_principal(1), _principal(2), _principal(3)]


def test_a_revoked_key_is_refused_once_its_entry_expired(
    make_client: Callable[..., TestClient], engine: Engine, api_key: str, headers: dict[str, str]
) -> None:
    """Within auth_cache_s the process answers from its cache (no lookup); after it, revocation holds."""
    client = make_client(auth_cache_s=0.5)
    assert client.get("/v1/jobs", headers=headers).status_code == 200
    _revoke(engine, api_key)
    time.sleep(0.6)
    response = client.get("/v1/jobs", headers=headers)
    assert response.status_code == 401, response.text


def test_a_cached_key_skips_the_lookup(
    make_client: Callable[..., TestClient], engine: Engine, api_key: str, headers: dict[str, str]
) -> None:
    """The cache really answers without the database: a key revoked behind the API's back (a plain
    UPDATE, no notification: what a missed one looks like) still works where it is cached.
    (`keys.revoke_key` notifies every API process: tests/api/test_key_revocation.py.)"""
    client = make_client(auth_cache_s=300)
    assert client.get("/v1/jobs", headers=headers).status_code == 200
    with engine.begin() as connection:
        connection.execute(update(ApiKey).where(ApiKey.key_hash == hash_key(api_key)).values(revoked_at=utcnow()))
    assert client.get("/v1/jobs", headers=headers).status_code == 200
    # Another process (here: another app) never saw the key, so it looks it up and refuses it.
    assert make_client(auth_cache_s=300).get("/v1/jobs", headers=headers).status_code == 401


def test_failed_lookups_are_not_cached(make_client: Callable[..., TestClient], engine: Engine) -> None:
    """A key refused once works as soon as it exists: only successful lookups are kept."""
    client = make_client(auth_cache_s=300)
    new_key = "gft_0badcafe_" + "k" * 43
    headers = {"Authorization": f"Bearer {new_key}"}
    assert client.get("/v1/jobs", headers=headers).status_code == 401
    with session_scope(engine) as session:
        tenant = keys.get_or_create_tenant(session, name="acme")
        session.add(ApiKey(tenant_id=tenant.id, prefix="0badcafe", key_hash=hash_key(new_key)))
    assert client.get("/v1/jobs", headers=headers).status_code == 200
