"""Priorities and quotas with real worker processes: two workers take 20 queued jobs of 3 tenants highest
priority first, FIFO within one; a tenant at its running-job quota never runs more and blocks no one."""

from __future__ import annotations

import random
import threading

import pytest
from sqlalchemy import Engine, func, select, update

from ganft.db.session import session_scope
from ganft.db.tables import Job, JobEvent
from ganft.repo import claims, keys, quotas
from ganft.repo.lifecycle import HELD
from ganft.store import Store
from tests.worker.helpers import WorkerProcess, make_job, wait_for

TINY = {"steps": 10, "batch_size": 8, "unlabeled_batch_size": 8, "eval_every": 10, "log_every": 5,
        "checkpoint_every": 10, "run_control": False}  # fmt: skip


def queued_job(engine: Engine, store: Store, tenant: str, priority: str, steps: int = 10) -> str:
    job_id = make_job(engine, store, hyperparameters={**TINY, "steps": steps, "eval_every": steps})
    with session_scope(engine) as session:
        tenant_id = keys.get_or_create_tenant(session, name=tenant).id
        values = {"tenant_id": tenant_id, "priority": claims.PRIORITIES[priority]}
        session.execute(update(Job).where(Job.id == job_id).values(**values))
    return job_id


def start_order(engine: Engine) -> list[str]:
    """Job ids in the order their first `running` event was written (event ids count up across jobs)."""
    with session_scope(engine) as session:
        rows = session.execute(
            select(JobEvent.job_id, func.min(JobEvent.id))
            .where(JobEvent.type == "status", JobEvent.data["status"].as_string() == "running")
            .group_by(JobEvent.job_id)
            .order_by(func.min(JobEvent.id))
        ).all()
    return [job_id for job_id, _ in rows]


def all_succeeded(engine: Engine, job_ids: list[str]) -> bool:
    with session_scope(engine) as session:
        done = session.scalar(select(func.count()).where(Job.id.in_(job_ids), Job.status == "succeeded"))
        failed = session.execute(select(Job.id, Job.error_message).where(Job.status == "failed")).all()
    assert not failed, failed
    return done == len(job_ids)


@pytest.mark.slow
@pytest.mark.timeout(1500)  # 20 training children (spawn + torch import each): ~10 min on 2 loaded cores
def test_two_workers_take_20_jobs_of_3_tenants_by_priority_then_fifo(
    engine: Engine, store: Store, start_worker: WorkerProcess.Factory
) -> None:
    rng = random.Random(13)
    plan = [(f"tenant-{i % 3}", rng.choice(list(claims.PRIORITIES))) for i in range(20)]
    job_ids = [queued_job(engine, store, tenant, priority) for tenant, priority in plan]  # created in this order
    rank = {job_id: (-claims.PRIORITIES[p], i) for i, (job_id, (_, p)) in enumerate(zip(job_ids, plan, strict=True))}
    expected = sorted(job_ids, key=rank.__getitem__)
    assert expected != job_ids  # the plan mixes priorities, so FIFO alone would fail this test
    workers = [start_worker("w1"), start_worker("w2")]
    logs = lambda: "\n".join(w.logs() for w in workers)  # noqa: E731
    wait_for(lambda: all_succeeded(engine, job_ids), timeout=1400, what="the 20 jobs", logs=logs)
    started = start_order(engine)
    assert sorted(started) == sorted(job_ids)
    # Two workers claim concurrently, so two neighbours may write their `running` events either way round;
    # beyond that the start order is the queue's order.
    displaced = {
        j: started.index(j) - expected.index(j) for j in job_ids if abs(started.index(j) - expected.index(j)) > 1
    }
    assert not displaced, (displaced, [rank[j] for j in started])


def test_a_tenant_at_its_quota_runs_one_job_at_a_time_and_blocks_no_one(
    engine: Engine, store: Store, start_worker: WorkerProcess.Factory
) -> None:
    busy = [queued_job(engine, store, "busy", "high") for _ in range(2)]
    other = queued_job(engine, store, "other", "low")
    with session_scope(engine) as session:  # both held back until both workers are idle
        quotas.set_quota(session, tenant_name="busy", max_running_jobs=0)
        quotas.set_quota(session, tenant_name="other", max_running_jobs=0)
        busy_tenant = keys.get_or_create_tenant(session, name="busy").id
    workers = [start_worker("w1"), start_worker("w2")]
    logs = lambda: "\n".join(w.logs() for w in workers)  # noqa: E731
    most_running, stop = [0], threading.Event()

    def watch() -> None:  # the quota must hold at every moment, not only at the end
        while not stop.is_set():
            with session_scope(engine) as session:
                n = session.scalar(select(func.count()).where(Job.tenant_id == busy_tenant, Job.status.in_(HELD)))
            most_running[0] = max(most_running[0], int(n or 0))
            stop.wait(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with session_scope(engine) as session:  # one commit: busy may run 1 job, other any number
            quotas.set_quota(session, tenant_name="busy", max_running_jobs=1)
            quotas.set_quota(session, tenant_name="other", max_running_jobs=None)
        wait_for(lambda: all_succeeded(engine, [*busy, other]), timeout=900, what="the 3 jobs", logs=logs)
    finally:
        stop.set()
        watcher.join(5)
    assert most_running[0] == 1
    # Two idle workers, two high jobs of busy: without the quota both would start before other's low one.
    assert start_order(engine) == [busy[0], other, busy[1]]
