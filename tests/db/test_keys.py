"""API keys: format, hash-only storage, authentication, revocation, and the admin CLI."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy import Engine, select

from ganft.db.session import session_scope
from ganft.db.tables import ApiKey, Tenant
from ganft.repo import keys
from ganft.security import hash_key, key_prefix
from ganft.settings import Settings


def test_key_is_stored_only_as_its_hash(engine: Engine, clean_db: None) -> None:
    """The database holds sha256(key) and the public prefix, never the key itself."""
    with session_scope(engine) as session:
        row, key = keys.create_key(session, tenant_name="acme", label="ci")
    assert key.startswith(f"gft_{row.prefix}_") and key_prefix(key) == row.prefix
    with session_scope(engine) as session:
        stored = session.scalars(select(ApiKey)).one()
        assert stored.key_hash == hash_key(key) and key not in (stored.key_hash, stored.prefix, stored.name)


def test_authenticate_and_revoke(engine: Engine, clean_db: None) -> None:
    """A key authenticates as its tenant until revoked; wrong and malformed keys never do."""
    with session_scope(engine) as session:
        row, key = keys.create_key(session, tenant_name="acme")
        _, other = keys.create_key(session, tenant_name="acme")  # same tenant, reused
        assert session.scalar(select(Tenant.id).where(Tenant.name == "acme")) == row.tenant_id
    with session_scope(engine) as session:
        principal = keys.authenticate(session, key=key)
        assert principal is not None and principal.tenant_name == "acme"
        assert keys.authenticate(session, key=key[:-1] + ("A" if key[-1] != "A" else "B")) is None
        assert keys.authenticate(session, key="Bearer nonsense") is None
        assert keys.revoke_key(session, prefix=row.prefix) == 1
    with session_scope(engine) as session:
        assert keys.authenticate(session, key=key) is None
        assert keys.authenticate(session, key=other) is not None
        assert keys.revoke_key(session, prefix=row.prefix) == 0  # already revoked


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "GANFT_DATABASE_URL": settings.database_url,
        "GANFT_DATA_DIR": str(settings.data_dir),
        "PATH": "/usr/bin:/bin",
    }
    return subprocess.run(
        [sys.executable, "-m", "ganft.cli", *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


@pytest.mark.slow
def test_admin_cli_create_and_revoke(settings: Settings, engine: Engine) -> None:
    """`ganft admin create-key` prints exactly one line, the key; `revoke-key PREFIX` disables it."""
    created = _cli(settings, "admin", "create-key", "--tenant", "newco")
    assert created.returncode == 0, created.stderr
    lines = created.stdout.splitlines()
    assert len(lines) == 1 and (prefix := key_prefix(lines[0])) is not None
    with session_scope(engine) as session:
        assert keys.authenticate(session, key=lines[0]) is not None
    revoked = _cli(settings, "admin", "revoke-key", prefix)
    assert revoked.returncode == 0, revoked.stderr
    with session_scope(engine) as session:
        assert keys.authenticate(session, key=lines[0]) is None
    again = _cli(settings, "admin", "revoke-key", prefix)
    assert again.returncode == 1 and "no active key" in again.stderr


def test_cli_migrate_sqlite(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`ganft migrate` with no settings at all creates the embedded SQLite database."""
    env = {"GANFT_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "ganft.cli", "migrate"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "data" / "ganft.db").is_file()
