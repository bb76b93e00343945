"""Job lifecycle on the real Postgres: claim, duplicates, reaping, dispatch, finishing, terminal states."""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
from pathlib import Path

import redis
from celery import Celery
from sqlalchemy import Engine, func, select, update

from ganft.db.migrate import upgrade
from ganft.db.session import make_engine, session_scope
from ganft.db.tables import Artifact, Job, Model, utcnow
from ganft.embedded import free_port
from ganft.repo import lifecycle
from ganft.repo.lifecycle import ArtifactRecord, OutputModel
from ganft.settings import Settings
from ganft.store import Store
from tests.worker.conftest import REDIS_URL
from tests.worker.helpers import job_events, job_row, make_job
from worker import sweeper
from worker.app import celery_config
from worker.tasks import run_job


def _claim(engine: Engine, job_id: str, worker_id: str, lease_s: float = 60.0) -> lifecycle.ClaimedJob | None:
    with session_scope(engine) as session:
        return lifecycle.claim_job(session, job_id=job_id, worker_id=worker_id, lease_s=lease_s)


def _expire_lease(engine: Engine, job_id: str) -> None:
    with session_scope(engine) as session:
        session.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=utcnow() - dt.timedelta(seconds=1)))


def test_two_concurrent_claims_one_wins(engine: Engine, store: Store) -> None:
    """Two workers claim the same job at the same moment: exactly one gets it."""
    job_id = make_job(engine, store)
    barrier = threading.Barrier(2)
    results: dict[str, object] = {}

    def claim(worker_id: str) -> None:
        barrier.wait()
        results[worker_id] = _claim(engine, job_id, worker_id)

    threads = [threading.Thread(target=claim, args=(w,)) for w in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [w for w, claimed in results.items() if claimed is not None]
    assert len(winners) == 1
    row = job_row(engine, job_id)
    assert (row.status, row.attempt, row.worker_id) == ("running", 1, winners[0])
    assert row.started_at is not None and row.lease_expires_at is not None
    assert [e[1:] for e in job_events(engine, job_id)] == [
        ("status", {"status": "queued"}),
        ("status", {"status": "running", "attempt": 1}),
    ]


def test_duplicate_message_does_nothing(engine: Engine, store: Store, settings: Settings) -> None:
    """The task on an already-claimed (or finished) job returns at once and changes nothing."""
    job_id = make_job(engine, store)
    assert _claim(engine, job_id, "first") is not None
    before = job_row(engine, job_id)
    assert run_job(job_id) == "skipped"
    after = job_row(engine, job_id)
    assert (after.status, after.attempt, after.worker_id, after.next_event_seq) == (
        before.status,
        before.attempt,
        before.worker_id,
        before.next_event_seq,
    )


def test_reaper_requeues_expired_lease_then_fails_after_max_attempts(engine: Engine, store: Store) -> None:
    job_id = make_job(engine, store, max_attempts=2)

    assert _claim(engine, job_id, "w1") is not None
    with session_scope(engine) as session:  # a live lease is left alone
        assert lifecycle.reap_expired_leases(session) == []
    _expire_lease(engine, job_id)
    with session_scope(engine) as session:
        assert lifecycle.reap_expired_leases(session) == [(job_id, "queued")]
    row = job_row(engine, job_id)
    assert (row.status, row.attempt, row.worker_id, row.dispatched_at) == ("queued", 1, None, None)

    claimed = _claim(engine, job_id, "w2")
    assert claimed is not None and claimed.attempt == 2
    with session_scope(engine) as session:  # the first worker's late writes find nothing of theirs
        assert lifecycle.renew_lease(session, job_id=job_id, worker_id="w1", lease_s=60) is None
        assert not lifecycle.end_job(session, job_id=job_id, worker_id="w1", status="failed", error_code="internal")
    _expire_lease(engine, job_id)
    with session_scope(engine) as session:
        assert lifecycle.reap_expired_leases(session) == [(job_id, "failed")]
    row = job_row(engine, job_id)
    assert (row.status, row.attempt, row.error_code) == ("failed", 2, "worker_lost")
    assert row.finished_at is not None
    assert job_events(engine, job_id)[-1][2]["error"]["code"] == "worker_lost"


def test_reaper_finishes_an_abandoned_cancel(engine: Engine, store: Store) -> None:
    """A `cancelling` job whose worker vanished is `cancelled`, not retried."""
    job_id = make_job(engine, store)
    assert _claim(engine, job_id, "w1") is not None
    with session_scope(engine) as session:
        session.execute(update(Job).where(Job.id == job_id).values(status="cancelling"))
    _expire_lease(engine, job_id)
    with session_scope(engine) as session:
        assert lifecycle.reap_expired_leases(session) == [(job_id, "cancelled")]


def _sweep_app(broker_url: str = REDIS_URL) -> Celery:
    app = Celery("sweep-test", set_as_current=False)
    app.conf.update(broker_url=broker_url, task_serializer="json")
    return app


def _make_stale(engine: Engine, *job_ids: str) -> None:
    """As if their messages were sent an hour ago (many lease periods) and they are still queued."""
    with session_scope(engine) as session:
        session.execute(update(Job).where(Job.id.in_(job_ids)).values(dispatched_at=utcnow() - dt.timedelta(hours=1)))


# kombu's Redis lists of the queue `gpu`, one per priority step, in the order a worker takes from them.
FIRST_LIST, RETRY_LIST = "gpu\x06\x163", "gpu"


def _messages(queue: redis.Redis, lists: tuple[str, ...] = (RETRY_LIST, FIRST_LIST)) -> list[str]:
    """The job ids of the `ganft.run_job` messages waiting in the queue `gpu` (all its priority lists)."""
    raws = [raw for name in lists for raw in queue.lrange(name, 0, -1)]
    bodies = [json.loads(base64.b64decode(json.loads(raw)["body"])) for raw in raws]
    return sorted(args[0] for args, _kwargs, _embed in bodies)


def _waiting(queue: redis.Redis) -> int:
    return int(queue.llen(RETRY_LIST)) + int(queue.llen(FIRST_LIST))


def test_dispatch_sweep_sends_undispatched_jobs(engine: Engine, store: Store, settings: Settings) -> None:
    """Jobs the API could not enqueue (broker down) reach the broker on the next sweep, once."""
    app = _sweep_app()
    queue = redis.Redis.from_url(REDIS_URL)
    first, second = make_job(engine, store), make_job(engine, store)

    result = sweeper.sweep_once(app, settings)
    assert sorted(result.dispatched) == sorted([first, second])
    assert _messages(queue) == sorted([first, second])
    assert all(job_row(engine, j).dispatched_at is not None for j in (first, second))

    assert sweeper.sweep_once(app, settings).dispatched == []  # sent recently: not again
    assert _waiting(queue) == 2
    app.close()


def test_stale_jobs_are_resent_only_when_the_broker_lost_their_messages(
    engine: Engine, store: Store, settings: Settings
) -> None:
    """A long queue of jobs waiting for a worker is not re-sent every few leases; messages lost
    with the broker (a Redis restart empties the queue) are, as many as were lost."""
    app = _sweep_app()
    queue = redis.Redis.from_url(REDIS_URL)
    first, second = make_job(engine, store), make_job(engine, store)
    assert sorted(sweeper.sweep_once(app, settings).dispatched) == sorted([first, second])

    _make_stale(engine, first, second)  # waiting long, but their messages are still in the queue
    assert sweeper.sweep_once(app, settings).dispatched == []
    assert _messages(queue) == sorted([first, second])

    queue.flushdb()  # what a Redis restart without persistence does
    _make_stale(engine, first, second)
    assert sorted(sweeper.sweep_once(app, settings).dispatched) == sorted([first, second])
    assert _messages(queue) == sorted([first, second])
    assert sweeper.sweep_once(app, settings).dispatched == []  # just sent: not again

    _make_stale(engine, first, second)
    queue.rpop(FIRST_LIST)  # one message lost: one job sent again (which one cannot be known)
    assert len(sweeper.sweep_once(app, settings).dispatched) == 1
    assert _waiting(queue) == 2
    app.close()


def test_never_dispatched_jobs_are_sent_whatever_the_queue_holds(
    engine: Engine, store: Store, settings: Settings
) -> None:
    """A job never sent (created while the broker was down, or just reaped) is sent even while the
    queue holds a message for every other queued job; the stale ones are not sent with it."""
    app = _sweep_app()
    queue = redis.Redis.from_url(REDIS_URL)
    waiting = make_job(engine, store)
    assert sweeper.sweep_once(app, settings).dispatched == [waiting]
    _make_stale(engine, waiting)
    queue.lpush("gpu", "a message of some job no longer queued")  # more messages than jobs sent
    fresh = make_job(engine, store)
    assert sweeper.sweep_once(app, settings).dispatched == [fresh]
    assert _waiting(queue) == 3
    app.close()


def test_a_job_that_ran_before_is_taken_before_the_backlog(engine: Engine, store: Store, settings: Settings) -> None:
    """Tried: two new jobs sent, then a third job returned to the queue after its worker was lost
    (attempt 1, not dispatched: as the reaper leaves it). Expect: its message goes to the retry
    list and a consumer (kombu, as a worker takes messages) gets it first, then the others in order."""
    app = _sweep_app()
    queue = redis.Redis.from_url(REDIS_URL)
    first, second = make_job(engine, store), make_job(engine, store)
    assert sorted(sweeper.sweep_once(app, settings).dispatched) == sorted([first, second])
    lost = make_job(engine, store)
    with session_scope(engine) as session:
        session.execute(update(Job).where(Job.id == lost).values(attempt=1))
    assert sweeper.sweep_once(app, settings).dispatched == [lost]
    assert _messages(queue, (RETRY_LIST,)) == [lost] and _messages(queue, (FIRST_LIST,)) == sorted([first, second])

    taken = []
    with app.connection_for_write() as conn:
        channel = conn.channel()
        while (message := channel.basic_get("gpu", no_ack=True)) is not None:
            taken.append(json.loads(message.body)[0][0])
        channel.close()
    assert taken[0] == lost and sorted(taken[1:]) == sorted([first, second])
    app.close()


def test_stale_jobs_wait_while_the_broker_cannot_be_asked(engine: Engine, store: Store, settings: Settings) -> None:
    """A broker that is down has no queue length to read: no stale job is taken (they keep their
    `dispatched_at`, so the next pass, with the broker back, decides), and nothing is sent."""
    job_id = make_job(engine, store)
    assert _claim_dispatch(engine) == [job_id]
    _make_stale(engine, job_id)
    before = job_row(engine, job_id).dispatched_at
    down = _sweep_app(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    assert sweeper.broker_queue_length(down) is None
    assert sweeper.sweep_once(down, settings).dispatched == []
    assert job_row(engine, job_id).dispatched_at == before
    down.close()


def test_queue_length_of_the_embedded_broker(tmp_path: Path) -> None:
    """The filesystem transport's count is its message files: sent ones, not a taken one."""
    fs_settings = Settings(data_dir=tmp_path / "data", broker_url="filesystem://")
    app = Celery("sweep-fs-test", set_as_current=False)
    app.conf.update(celery_config(fs_settings))
    assert sweeper.broker_queue_length(app) == 0
    for job_id in ("a", "b", "c"):
        app.send_task("ganft.run_job", args=[job_id], queue="gpu")
    assert sweeper.broker_queue_length(app) == 3
    with app.connection_for_write() as conn:
        channel = conn.channel()
        assert channel.basic_get("gpu", no_ack=True) is not None  # a worker takes one
        channel.close()
    assert sweeper.broker_queue_length(app) == 2
    app.close()


def _claim_dispatch(engine: Engine) -> list[str]:
    with session_scope(engine) as session:
        return lifecycle.claim_dispatch(session, stale_before=utcnow() - dt.timedelta(minutes=3))


def _artifacts() -> list[ArtifactRecord]:
    return [
        ArtifactRecord(
            "model.safetensors", 10, "a" * 64, "application/octet-stream", "jobs/x/artifacts/model.safetensors"
        ),
        ArtifactRecord("model.json", 5, "b" * 64, "application/json", "jobs/x/artifacts/model.json"),
    ]


def test_finalize_twice_registers_one_set_of_outputs(engine: Engine, store: Store) -> None:
    job_id = make_job(engine, store)
    assert _claim(engine, job_id, "w1") is not None
    model = OutputModel("ssgan out", "classifier", {"architecture": "mlp"}, "jobs/x/artifacts", 10, "a" * 64)
    outcomes = []
    for _ in range(2):
        with session_scope(engine) as session:
            outcomes.append(
                lifecycle.succeed_job(
                    session,
                    job_id=job_id,
                    worker_id="w1",
                    result={"accuracy": 0.9},
                    artifacts=_artifacts(),
                    output_model=model,
                )
            )
    assert outcomes == [True, False]
    row = job_row(engine, job_id)
    assert (row.status, row.result) == ("succeeded", {"accuracy": 0.9})
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(Artifact).where(Artifact.job_id == job_id)) == 2
        models = session.scalars(select(Model).where(Model.source_job_id == job_id)).all()
        assert [m.id for m in models] == [row.output_model_id]


def test_terminal_states_never_change(engine: Engine, store: Store) -> None:
    job_id = make_job(engine, store)
    assert _claim(engine, job_id, "w1") is not None
    with session_scope(engine) as session:
        assert lifecycle.end_job(session, job_id=job_id, worker_id="w1", status="cancelled")
    with session_scope(engine) as session:
        assert not lifecycle.end_job(session, job_id=job_id, worker_id="w1", status="failed", error_code="internal")
        assert lifecycle.renew_lease(session, job_id=job_id, worker_id="w1", lease_s=60) is None
        assert lifecycle.release_job(session, job_id=job_id, worker_id="w1") is None
        assert lifecycle.reap_expired_leases(session) == []
    assert _claim(engine, job_id, "w2") is None
    assert job_row(engine, job_id).status == "cancelled"


def test_leases_and_dispatch_on_sqlite(tmp_path: Path, store: Store) -> None:
    """The embedded default's SQLite stores naive timestamps: lease and dispatch times still compare right."""
    url = f"sqlite:///{tmp_path / 'ganft.db'}"
    upgrade(url)
    engine = make_engine(url)
    job_id = make_job(engine, store)
    with session_scope(engine) as session:
        assert lifecycle.claim_dispatch(session, stale_before=utcnow() - dt.timedelta(minutes=3)) == [job_id]
    with session_scope(engine) as session:  # dispatched a moment ago: not stale yet
        assert lifecycle.claim_dispatch(session, stale_before=utcnow() - dt.timedelta(minutes=3)) == []
    assert _claim(engine, job_id, "w1", lease_s=60) is not None
    with session_scope(engine) as session:
        assert lifecycle.reap_expired_leases(session) == []
    _expire_lease(engine, job_id)
    with session_scope(engine) as session:
        assert lifecycle.reap_expired_leases(session) == [(job_id, "queued")]
    engine.dispose()
