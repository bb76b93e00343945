"""The schema comes only from Alembic: upgrade, downgrade and upgrade again, on Postgres and SQLite."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from ganft.db.migrate import downgrade, upgrade
from ganft.db.session import make_engine, session_scope
from ganft.db.tables import Base, Job, Tenant, new_id
from tests.conftest import PG_ADMIN_URL

TABLES = {t.name for t in Base.metadata.sorted_tables}


@pytest.fixture
def empty_pg() -> Iterator[str]:
    name = f"ganft_mig_{secrets.token_hex(4)}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade_postgres(empty_pg: str) -> None:
    """An empty Postgres database goes to head, back to base (no tables left) and to head again."""
    upgrade(empty_pg)
    assert _tables(empty_pg) == TABLES
    downgrade(empty_pg, "base")
    assert _tables(empty_pg) == set()
    upgrade(empty_pg)
    assert _tables(empty_pg) == TABLES


def test_upgrade_downgrade_sqlite(tmp_path: Path) -> None:
    """The embedded default: a SQLite file that does not exist yet is created and migrated both ways."""
    url = f"sqlite:///{tmp_path / 'sub' / 'ganft.db'}"
    upgrade(url)
    assert _tables(url) == TABLES
    downgrade(url, "base")
    assert _tables(url) == set()
    upgrade(url)
    assert _tables(url) == TABLES


def test_models_match_migrations(engine: Engine) -> None:
    """Autogenerate finds nothing to do: ganft/db/tables.py and the migrations agree."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


def test_status_check_constraint_rejects_bogus_status(engine: Engine, clean_db: None) -> None:
    """Writing a status outside the state machine fails in the database itself."""
    with session_scope(engine) as session:
        tenant = Tenant(name="acme")
        session.add(tenant)
    with pytest.raises(IntegrityError, match="ck_jobs_status"), session_scope(engine) as session:
        session.execute(
            text(
                "INSERT INTO jobs (id, tenant_id, method, status, dataset_id, hyperparameters, seed, metadata,"
                " attempt, max_attempts, step, total_steps, next_event_seq, created_at, updated_at)"
                " VALUES (:id, :tenant, 'ssgan', 'exploded', 'ds_x', '{}', 0, '{}', 0, 3, 0, 0, 1, now(), now())"
            ),
            {"id": new_id("job"), "tenant": tenant.id},
        )


def test_method_check_constraint(engine: Engine, clean_db: None) -> None:
    """An unknown method is refused by the database too (not only by the API)."""
    with session_scope(engine) as session:
        tenant = Tenant(name="acme")
        session.add(tenant)
    with pytest.raises(IntegrityError, match="ck_jobs_method"), session_scope(engine) as session:
        session.add(Job(tenant_id=tenant.id, method="vae", dataset_id="ds_x"))
