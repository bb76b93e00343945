"""`ganft admin set-quota` as a subprocess on the real Postgres: set, change one, clear, and clear errors."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, select

from ganft.db.session import session_scope
from ganft.db.tables import Tenant
from ganft.repo import keys
from ganft.settings import Settings
from tests.db.test_keys import _cli


def _quota(engine: Engine, name: str) -> tuple[int | None, int | None]:
    with session_scope(engine) as session:
        row = session.execute(
            select(Tenant.max_running_jobs, Tenant.max_storage_bytes).where(Tenant.name == name)
        ).one()
    return row[0], row[1]


@pytest.mark.slow
def test_admin_set_quota(settings: Settings, engine: Engine) -> None:
    with session_scope(engine) as session:
        keys.get_or_create_tenant(session, name="acme")
    done = _cli(settings, "admin", "set-quota", "--tenant", "acme", "--max-running", "2", "--max-storage-bytes", "1000")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "acme\t2\t1000\n" and _quota(engine, "acme") == (2, 1000)
    done = _cli(settings, "admin", "set-quota", "--tenant", "acme", "--max-running", "5")  # the other stays
    assert done.stdout == "acme\t5\t1000\n" and _quota(engine, "acme") == (5, 1000)
    done = _cli(settings, "admin", "set-quota", "--tenant", "acme", "--clear")
    assert done.stdout == "acme\tunlimited\tunlimited\n" and _quota(engine, "acme") == (None, None)

    unknown = _cli(settings, "admin", "set-quota", "--tenant", "nobody", "--max-running", "1")
    assert unknown.returncode == 1 and "no tenant named 'nobody'" in unknown.stderr
    negative = _cli(settings, "admin", "set-quota", "--tenant", "acme", "--max-running", "-1")
    assert negative.returncode == 2 and "must be >= 0" in negative.stderr
    nothing = _cli(settings, "admin", "set-quota", "--tenant", "acme")
    assert nothing.returncode == 2 and "--clear" in nothing.stderr
    both = _cli(settings, "admin", "set-quota", "--tenant", "acme", "--clear", "--max-running", "1")
    assert both.returncode == 2
