"""Many small jobs through two worker processes while one of them is SIGKILLed and restarted.

The normal suite runs SOAK_SMALL jobs; `GANFT_SOAK=1` runs `GANFT_SOAK_JOBS` (default 200).
The figures (wall time, jobs/min, attempts, the killed job's recovery, duplicates, lost, broker
messages sent and discarded) are printed (`pytest -s`), written as JSON to `GANFT_SOAK_REPORT`
when set, and recorded in docs/RELIABILITY.md.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from sqlalchemy import Engine, select

from ganft.db.session import session_scope
from ganft.db.tables import Job, JobEvent
from ganft.repo import quotas
from ganft.settings import Settings
from ganft.store import open_store
from tests.reliability.conftest import Processes
from tests.reliability.jobs import TERMINAL, TINY_SSGAN, artifact_names, output_models, statuses, terminal_rows
from tests.worker.helpers import job_events, make_job, wait_for
from worker.sweeper import broker_queue_length

SOAK_SMALL = 6  # a training child costs ~5-8 s of CPU (spawn, torch import, export): 2 cores bound this
# The jobs go round these tenants; the first may run one job at a time (`max_running_jobs` 1), so with two
# workers its jobs queue while the others' run: the quota is checked under the same kill and restart.
TENANTS = ("soak-limited", "soak-b", "soak-c")


def _jobs_wanted() -> int:
    if os.environ.get("GANFT_SOAK") == "1":
        return int(os.environ.get("GANFT_SOAK_JOBS", "200"))
    return SOAK_SMALL


def _states(engine: Engine, job_ids: list[str]) -> dict[str, tuple[str, int]]:
    """(status, attempt) of every job, in one query (the soak polls this while 200 jobs run)."""
    with session_scope(engine) as session:
        rows = session.execute(select(Job.id, Job.status, Job.attempt).where(Job.id.in_(job_ids))).all()
    return {job_id: (status, attempt) for job_id, status, attempt in rows}


@pytest.mark.soak
@pytest.mark.timeout(300 + 20 * _jobs_wanted())  # the suite's 600 s cap would cut the full soak short
def test_soak_with_a_worker_killed_loses_and_repeats_nothing(
    engine: Engine, rel_settings: Settings, processes: Processes
) -> None:
    """Tried: N tiny ssgan jobs (dispatched by the workers' sweep), two workers, the first one
    SIGKILLed (with its trainer) while running a job once a job succeeded, then restarted; the jobs
    belong to three tenants, one of them limited to one running job.
    Expect: every job ends succeeded; attempts count up by one per lost run (the killed job:
    attempt 2, resumed from its checkpoint); one success event, one artifact set and one output
    model per job; nothing lost; the limited tenant never held two jobs at once."""
    count = _jobs_wanted()
    store = open_store(rel_settings.store_url)
    job_ids = [
        make_job(engine, store, hyperparameters=TINY_SSGAN, seed=i, tenant=TENANTS[i % len(TENANTS)])
        for i in range(count)
    ]
    with session_scope(engine) as session:
        quotas.set_quota(session, tenant_name=TENANTS[0], max_running_jobs=1)
    limited = job_ids[:: len(TENANTS)]
    started = time.monotonic()
    victim = processes.start_worker("w1")
    processes.start_worker("w2")

    def victim_running_after_a_success() -> str | None:
        states = _states(engine, job_ids)
        if not any(status == "succeeded" for status, _ in states.values()):
            return None
        logs = victim.logs()
        running = [j for j, (status, _) in states.items() if status == "running" and f"job {j}: attempt" in logs]
        return running[0] if running else None

    killed_job = wait_for(victim_running_after_a_success, timeout=300, what="w1 running a job after a success",
                          logs=processes.logs)  # fmt: skip
    victim.kill()
    killed_at = time.monotonic()
    checkpoint_at_kill = _row_checkpoint_step(engine, killed_job)
    processes.start_worker("w1")  # the same worker name, restarted (as a supervisor would)

    def all_terminal() -> bool:
        return all(status in TERMINAL for status, _ in _states(engine, job_ids).values())

    wait_for(all_terminal, timeout=60 + 20 * count, what="every job", logs=processes.logs)
    wall_s = time.monotonic() - started
    rows = terminal_rows(engine, job_ids)
    assert rows is not None and len(rows) == count  # none lost

    duplicates = 0
    for job_id, row in rows.items():
        assert row.status == "succeeded", (job_id, row.error_code, row.error_message)
        history = statuses(engine, job_id)
        attempts = [a for s, a in history if s == "running"]
        assert attempts == list(range(1, row.attempt + 1)), history  # one run per attempt, counted up
        names = artifact_names(engine, job_id)
        assert names, job_id
        if [s for s, _ in history].count("succeeded") != 1 or len(names) != len(set(names)):
            duplicates += 1
        if output_models(engine, job_id) != 1:
            duplicates += 1
    assert duplicates == 0
    overlaps = _overlaps(_held_periods(engine, limited))
    assert not overlaps, overlaps  # the limited tenant ran at most one job at any time
    assert rows[killed_job].attempt == 2  # the run lost with w1 was run again, from the queue
    resumed_steps = _attempt_2_steps(engine, killed_job)
    if checkpoint_at_kill:
        assert resumed_steps and min(resumed_steps) >= checkpoint_at_kill  # resumed, not restarted at 0

    figures: dict[str, Any] = {
        "jobs": count,
        "workers": 2,
        "wall_s": round(wall_s, 1),
        "jobs_per_min": round(60 * count / wall_s, 1),
        "attempts": {str(k): v for k, v in sorted(Counter(r.attempt for r in rows.values()).items())},
        "killed_job": killed_job,
        "killed_job_checkpoint_step_at_kill": checkpoint_at_kill,
        "killed_job_first_step_of_attempt_2": min(resumed_steps) if resumed_steps else None,
        "killed_job_done_after_kill_s": round(_finished_at(engine, killed_job) - _wall(killed_at), 1),
        "duplicates": duplicates,
        "limited_tenant_jobs": len(limited),
        "limited_tenant_overlaps": len(overlaps),
        "lost": count - sum(1 for r in rows.values() if r.status in TERMINAL),
        **_messages(processes, rel_settings),
    }
    print(f"\nsoak figures: {json.dumps(figures)}")  # noqa: T201 - the figures docs/RELIABILITY.md records
    if report := os.environ.get("GANFT_SOAK_REPORT"):
        Path(report).write_text(json.dumps(figures, indent=2) + "\n")


def _messages(processes: Processes, settings: Settings) -> dict[str, int]:
    """Broker messages: sent by the workers' sweeps (their "dispatched N queued job(s)" log lines;
    nothing else sends here), discarded by a worker as duplicates ("nothing to do"), still waiting
    in the broker's queue at the end (`worker/sweeper.py broker_queue_length`)."""
    logs = [worker.logs() for worker in processes.workers]
    sent = sum(int(n) for log in logs for n in re.findall(r"dispatched (\d+) queued job\(s\)", log))
    discarded = sum(log.count("nothing to do") for log in logs)
    app = Celery("soak-count", set_as_current=False)
    app.conf.update(broker_url=settings.broker_url)
    left = broker_queue_length(app)
    app.close()
    return {"messages_sent": sent, "duplicates_discarded": discarded, "messages_left": -1 if left is None else left}


def _held_periods(engine: Engine, job_ids: list[str]) -> list[tuple[dt.datetime, dt.datetime, str]]:
    """(from, to, job) for each attempt: its `running` status event to the job's next status event.

    Both are written in the transactions that change the status (the claim, the reaper, the end), so a
    job claimed once another ended has its `running` event after that job's end event."""
    with session_scope(engine) as session:
        rows = session.execute(
            select(JobEvent.job_id, JobEvent.created_at, JobEvent.data)
            .where(JobEvent.job_id.in_(job_ids), JobEvent.type == "status")
            .order_by(JobEvent.job_id, JobEvent.seq)
        ).all()
    periods: list[tuple[dt.datetime, dt.datetime, str]] = []
    opened: dict[str, dt.datetime] = {}
    for job_id, at, data in rows:
        if job_id in opened:
            periods.append((opened.pop(job_id), at, job_id))
        if data["status"] == "running":
            opened[job_id] = at
    assert not opened, opened  # every job ended
    return periods


def _overlaps(periods: list[tuple[dt.datetime, dt.datetime, str]]) -> list[tuple[str, str]]:
    ordered = sorted(periods)
    return [(a[2], b[2]) for a, b in zip(ordered, ordered[1:], strict=False) if b[0] < a[1]]


def _row_checkpoint_step(engine: Engine, job_id: str) -> int | None:
    with session_scope(engine) as session:
        return session.scalar(select(Job.checkpoint_step).where(Job.id == job_id))


def _attempt_2_steps(engine: Engine, job_id: str) -> list[int]:
    """Steps of the progress events written by attempt 2."""
    events = job_events(engine, job_id)
    claims = [seq for seq, t, d in events if t == "status" and d["status"] == "running" and d.get("attempt") == 2]
    return [d["step"] for seq, t, d in events if claims and t == "progress" and seq > claims[0]]


def _wall(monotonic_time: float) -> float:
    return time.time() - (time.monotonic() - monotonic_time)


def _finished_at(engine: Engine, job_id: str) -> float:
    with session_scope(engine) as session:
        finished = session.scalar(select(Job.finished_at).where(Job.id == job_id))
    assert finished is not None
    return (finished if finished.tzinfo else finished.replace(tzinfo=dt.UTC)).timestamp()
