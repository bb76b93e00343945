"""The session-less read path (ganft/db/reads.py, ganft/repo/jobs.py read/read_page) on both
backends: the real Postgres (psycopg async pool) and SQLite (SQLAlchemy in the threadpool).

What it must get right: the same Job the ORM loads (every column, JSON and timestamps included),
tenant isolation, keyset pages with cursors and a status filter, and recovery from a restart."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, inspect, text, update
from sqlalchemy.engine import make_url

from ganft.db.aiopool import AsyncPool, PoolTimeout
from ganft.db.migrate import upgrade
from ganft.db.reads import PostgresReader, Reader, ThreadReader, make_reader
from ganft.db.session import make_engine, session_scope
from ganft.db.tables import Dataset, Job
from ganft.repo import jobs, keys
from ganft.repo.pages import InvalidCursor
from ganft_core.config import HYPERPARAMETERS

HP = HYPERPARAMETERS["ssgan"].model_validate({"steps": 10}).model_dump(mode="json")


@pytest.fixture(params=["postgres", "sqlite"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "postgres":
        engine: Engine = request.getfixturevalue("engine")
        request.getfixturevalue("clean_db")
        yield engine
        return
    url = f"sqlite:///{tmp_path / 'ganft.sqlite'}"
    upgrade(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


def _jobs(engine: Engine, tenant: str, n: int, **values: Any) -> list[str]:
    """`n` jobs of `tenant`, oldest first, with strictly increasing created_at."""
    ids = []
    with session_scope(engine) as session:
        tenant_id = keys.get_or_create_tenant(session, name=tenant).id
        dataset = Dataset(tenant_id=tenant_id, name="d", format="npz", status="ready", size_bytes=1, stats={})
        session.add(dataset)
        session.flush()
        base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        for i in range(n):
            job = jobs.create(
                session, tenant_id=tenant_id, method="ssgan", dataset_id=dataset.id, validation_dataset_id=None,
                base_model_id=None, evaluator_model_id=None, hyperparameters=HP, seed=i, max_runtime_s=60,
                metadata={"i": str(i), "ü": "ß"}, total_steps=10, max_attempts=3, idempotency_key=f"k{i}",
                request_hash="0" * 64,
            )  # fmt: skip
            job.created_at = base + dt.timedelta(seconds=i)
            for name, value in values.items():
                setattr(job, name, value)
            ids.append(job.id)
    return ids


def _run(reader: Reader, call: Any) -> Any:
    async def main() -> Any:
        await reader.open()
        try:
            return await call
        finally:
            await reader.close()

    return asyncio.run(main())


def _columns(job: Job) -> dict[str, Any]:
    return {attr.key: getattr(job, attr.key) for attr in inspect(Job).column_attrs}


def test_reader_kind_follows_the_database(db: Engine) -> None:
    expected = PostgresReader if db.dialect.name == "postgresql" else ThreadReader
    assert isinstance(make_reader(db), expected)


def test_read_returns_the_job_the_orm_loads_and_only_to_its_tenant(db: Engine) -> None:
    """Tried: a job with JSON results, an error, timestamps and a float rate; read as its tenant,
    as another tenant, and an unknown id. Expect: every column equal to the ORM's, else None."""
    started = dt.datetime(2026, 1, 1, 12, 30, 15, 123456, tzinfo=dt.UTC)
    (job_id,) = _jobs(db, "acme", 1, status="running", step=4, steps_per_second=12.5, started_at=started,
                      result={"accuracy": 0.97, "nested": [1, 2]}, error_code=None)  # fmt: skip
    _jobs(db, "globex", 1)
    with session_scope(db) as session:
        acme = keys.get_or_create_tenant(session, name="acme").id
        globex = keys.get_or_create_tenant(session, name="globex").id
        orm = _columns(jobs.get(session, tenant_id=acme, job_id=job_id))  # type: ignore[arg-type]

    async def reads(reader: Reader) -> tuple[Job | None, Job | None, Job | None]:
        return (
            await jobs.read(reader, tenant_id=acme, job_id=job_id),
            await jobs.read(reader, tenant_id=globex, job_id=job_id),
            await jobs.read(reader, tenant_id=acme, job_id="job_0000"),
        )

    reader = make_reader(db)
    mine, theirs, unknown = _run(reader, reads(reader))
    assert theirs is None and unknown is None
    assert mine is not None and inspect(mine).session is None
    got = _columns(mine)
    for name in ("created_at", "started_at", "updated_at"):  # SQLite hands back naive UTC
        for row in (got, orm):
            if row[name] is not None and row[name].tzinfo is None:
                row[name] = row[name].replace(tzinfo=dt.UTC)
    assert got == orm
    assert got["result"] == {"accuracy": 0.97, "nested": [1, 2]} and got["metadata_"] == {"i": "0", "ü": "ß"}
    assert got["started_at"] == started and got["steps_per_second"] == 12.5


def test_read_page_walks_every_job_once_newest_first(db: Engine) -> None:
    """Tried: 7 jobs (3 cancelled) of one tenant and 2 of another, pages of 3 with and without a
    status filter, and a forged cursor. Expect: newest first, each job once, the filter applied,
    other tenants never listed, `InvalidCursor` for the forgery."""
    ids = _jobs(db, "acme", 7)
    _jobs(db, "globex", 2)
    with db.begin() as connection:
        connection.execute(update(Job).where(Job.id.in_(ids[1::2])).values(status="cancelled"))
    with session_scope(db) as session:
        acme = keys.get_or_create_tenant(session, name="acme").id

    async def walk(reader: Reader, status: str | None) -> list[list[str]]:
        pages, after = [], None
        while True:
            page = await jobs.read_page(reader, tenant_id=acme, status=status, limit=3, after=after)
            pages.append([j.id for j in page.items])
            if page.next_cursor is None:
                return pages
            after = page.next_cursor

    async def both(reader: Reader) -> tuple[list[list[str]], list[list[str]]]:
        return await walk(reader, None), await walk(reader, "cancelled")

    reader = make_reader(db)
    everything, cancelled = _run(reader, both(reader))
    newest_first = list(reversed(ids))
    assert everything == [newest_first[0:3], newest_first[3:6], newest_first[6:7]]
    assert cancelled == [[ids[5], ids[3], ids[1]]]

    reader = make_reader(db)
    with pytest.raises(InvalidCursor):
        _run(reader, jobs.read_page(reader, tenant_id=acme, status=None, limit=3, after="bm9wZQ"))


def test_postgres_reader_recovers_after_its_connections_are_cut(engine: Engine, clean_db: None) -> None:
    """Tried: read, then terminate every pooled connection of the reader on the server (what a
    Postgres restart does to them), then read again. Expect: the second read succeeds (the dead
    idle connections are dropped and the read retried once), never an error to the caller."""
    (job_id,) = _jobs(engine, "acme", 1)
    with session_scope(engine) as session:
        acme = keys.get_or_create_tenant(session, name="acme").id
    reader = make_reader(engine)

    async def scenario() -> tuple[Job | None, int, Job | None]:
        await reader.all(jobs._READ, {"job_id": job_id, "tenant_id": acme})  # warm the pool
        first = await jobs.read(reader, tenant_id=acme, job_id=job_id)
        with engine.connect() as connection:  # every other client of this test database, the reader's too
            killed = connection.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
                )
            ).scalar_one()
        second = await jobs.read(reader, tenant_id=acme, job_id=job_id)
        return first, killed, second

    first, killed, second = _run(reader, scenario())
    assert first is not None and killed >= 1
    assert second is not None and second.id == job_id


def test_pool_waits_for_a_busy_connection_then_times_out(pg_url: str) -> None:
    """Tried: a pool of one connection, held by one caller while a second asks for one, first
    with a patient then with an impatient timeout. Expect: the patient caller gets the same
    connection once it is returned; the impatient one gets PoolTimeout (a 503 in the API)."""
    conninfo = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)

    async def scenario() -> tuple[int, int, bool]:
        pool = AsyncPool(conninfo, max_size=1, timeout_s=5.0, connect_timeout_s=5)
        try:
            async with pool.connection() as first:
                first_pid = first.info.backend_pid
                waiter = asyncio.create_task(_backend_pid(pool))
                await asyncio.sleep(0.2)
                assert not waiter.done()  # waits while the only connection is in use
            second_pid = await waiter
            impatient = AsyncPool(conninfo, max_size=1, timeout_s=0.2, connect_timeout_s=5)
            async with impatient.connection():
                try:
                    await _backend_pid(impatient)
                    timed_out = False
                except PoolTimeout:
                    timed_out = True
            await impatient.close()
            return first_pid, second_pid, timed_out
        finally:
            await pool.close()

    first_pid, second_pid, timed_out = asyncio.run(scenario())
    assert first_pid == second_pid and timed_out


async def _backend_pid(pool: AsyncPool) -> int:
    async with pool.connection() as connection:
        return connection.info.backend_pid
