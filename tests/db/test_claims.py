"""The claim order on the real Postgres and on SQLite: priority, FIFO within one, retries keep their place,
tenant quotas (also under concurrent claims), the doorbell's bookkeeping, and `set_quota`."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, update

from ganft.db.migrate import upgrade
from ganft.db.session import make_engine, session_scope
from ganft.db.tables import Dataset, Job, Tenant, utcnow
from ganft.repo import claims, keys, lifecycle, quotas

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.fixture(params=["postgresql", "sqlite"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "postgresql":
        request.getfixturevalue("clean_db")
        yield request.getfixturevalue("engine")
        return
    url = f"sqlite:///{tmp_path / 'ganft.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


def add_job(engine: Engine, tenant: str, *, priority: str = "normal", minute: int, dispatched: bool = True) -> str:
    """A queued job of `tenant` created `minute` minutes after T0 (rows only: claims read no files)."""
    with session_scope(engine) as session:
        tenant_id = keys.get_or_create_tenant(session, name=tenant).id
        dataset = Dataset(tenant_id=tenant_id, name="d.npz", format="npz", status="ready", storage_key="k")
        session.add(dataset)
        session.flush()
        job = Job(
            tenant_id=tenant_id,
            method="ssgan",
            status="queued",
            dataset_id=dataset.id,
            hyperparameters={},
            priority=claims.PRIORITIES[priority],
            created_at=T0 + dt.timedelta(minutes=minute),
            dispatched_at=utcnow() if dispatched else None,
            next_event_seq=1,
        )
        session.add(job)
        session.flush()
        return job.id


def claim(engine: Engine, worker: str = "w", doorbell: str | None = None) -> str | None:
    with session_scope(engine) as session:
        job = claims.claim_next(session, worker_id=worker, lease_s=60, doorbell=doorbell)
        return None if job is None else job.id


def finish(engine: Engine, job_id: str) -> None:
    with session_scope(engine) as session:
        worker = session.scalar(select(Job.worker_id).where(Job.id == job_id))
        assert lifecycle.end_job(session, job_id=job_id, worker_id=worker or "", status="cancelled")


def set_quota(engine: Engine, tenant: str, n: int | None) -> None:
    with session_scope(engine) as session:
        quotas.set_quota(session, tenant_name=tenant, max_running_jobs=n)


def test_highest_priority_first_then_fifo(db: Engine) -> None:
    plan = [("a", "low", 0), ("b", "normal", 1), ("a", "high", 2), ("c", "normal", 3), ("b", "high", 4)]
    ids = {(t, p, m): add_job(db, t, priority=p, minute=m) for t, p, m in plan}
    order = [claim(db) for _ in plan]
    expected = [("a", "high", 2), ("b", "high", 4), ("b", "normal", 1), ("c", "normal", 3), ("a", "low", 0)]
    assert order == [ids[k] for k in expected]
    assert claim(db) is None


def test_a_retried_job_keeps_its_head_start(db: Engine) -> None:
    first = add_job(db, "a", minute=0)
    later = [add_job(db, "a", minute=m) for m in (1, 2)]
    assert claim(db, "w1") == first
    with session_scope(db) as session:  # its worker is lost: the reaper puts it back
        session.execute(update(Job).where(Job.id == first).values(lease_expires_at=utcnow() - dt.timedelta(seconds=1)))
        assert lifecycle.reap_expired_leases(session) == [(first, "queued")]
    assert claim(db, "w2") == first
    assert [claim(db), claim(db)] == later


def test_a_tenant_at_its_quota_waits_and_blocks_no_one(db: Engine) -> None:
    busy = [add_job(db, "busy", priority="high", minute=m) for m in range(3)]
    other = add_job(db, "other", priority="low", minute=9)
    set_quota(db, "busy", 1)
    assert claim(db) == busy[0]
    assert claim(db) == other  # busy's high jobs wait at its quota, other's low one goes
    assert claim(db) is None
    finish(db, busy[0])
    assert claim(db) == busy[1]
    set_quota(db, "busy", None)
    assert claim(db) == busy[2]


def test_quota_zero_holds_every_job_queued(db: Engine) -> None:
    add_job(db, "held", minute=0)
    set_quota(db, "held", 0)
    assert claim(db) is None


def test_concurrent_claims_respect_the_quota_and_take_each_job_once(engine: Engine, clean_db: None) -> None:
    quota_jobs = [add_job(engine, "q", priority="high", minute=m) for m in range(6)]
    free_jobs = [add_job(engine, "f", minute=10 + m) for m in range(6)]
    set_quota(engine, "q", 2)
    barrier = threading.Barrier(8)
    got: list[str | None] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        barrier.wait()
        job = claim(engine, f"w{n}")
        with lock:
            got.append(job)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [j for j in got if j is not None]
    assert len(claimed) == len(set(claimed)) == 8
    assert len(set(claimed) & set(quota_jobs)) == 2  # the quota, though its jobs are the best
    assert set(claimed) - set(quota_jobs) == set(free_jobs)


def test_a_doorbell_spent_on_a_job_without_a_message_is_rung_again(db: Engine) -> None:
    rung = add_job(db, "a", minute=5)
    unsent = add_job(db, "a", priority="high", minute=6, dispatched=False)  # created while the broker was down
    assert claim(db, doorbell=rung) == unsent
    with session_scope(db) as session:
        assert session.scalar(select(Job.dispatched_at).where(Job.id == rung)) is None  # the sweep sends it again
        assert lifecycle.claim_dispatch(session, stale_before=utcnow()) == [rung]


def test_set_quota_sets_clears_and_checks(db: Engine) -> None:
    add_job(db, "t", minute=0)
    with session_scope(db) as session:
        got = quotas.set_quota(session, tenant_name="t", max_running_jobs=3, max_storage_bytes=10**9)
        assert (got.max_running_jobs, got.max_storage_bytes) == (3, 10**9)
        got = quotas.set_quota(session, tenant_name="t", max_storage_bytes=None)  # running stays as it was
        assert (got.max_running_jobs, got.max_storage_bytes) == (3, None)
        assert session.scalar(select(Job.dispatched_at).where(Job.status == "queued")) is None
        with pytest.raises(quotas.UnknownTenant):
            quotas.set_quota(session, tenant_name="nobody", max_running_jobs=1)
        with pytest.raises(ValueError, match="max_running_jobs"):
            quotas.set_quota(session, tenant_name="t", max_running_jobs=-1)
    with session_scope(db) as session:
        assert session.scalar(select(Tenant.max_running_jobs).where(Tenant.name == "t")) == 3
