"""Postgres (a private cluster) down and back under the API's async read path (ganft/db/reads.py).

The key lookup is cached (GANFT_AUTH_CACHE_S), so during the outage `GET /v1/jobs/{id}` and
`GET /v1/jobs` reach the psycopg pool itself rather than failing at authentication first."""

from __future__ import annotations

import time

import httpx

from ganft.db.migrate import upgrade
from ganft.db.session import make_engine, session_scope
from ganft.repo import keys
from ganft.store import open_store
from tests.reliability.conftest import Processes
from tests.worker.helpers import make_job, wait_for

OUTAGE_S = 4.0
CLIENT_TIMEOUT_S = 10.0  # a request that takes longer counts as a hang


def test_hot_reads_answer_503_while_postgres_is_down_and_heal_after(processes: Processes) -> None:
    """Tried: warm the API's read pool, crash Postgres (`pg_ctl stop -m immediate`), call the job
    and the job list every 0.25 s for ~4 s, start Postgres again. Expect: every answer during the
    outage is a 503 problem with Retry-After within the client timeout (never a 500, never a hang);
    after the restart the same calls answer 200 again by themselves (no API restart)."""
    server = processes.postgres_server()
    upgrade(server.url)
    engine = make_engine(server.url)
    with session_scope(engine) as session:
        _, key = keys.create_key(session, tenant_name="worker-tests")
    job_id = make_job(engine, open_store(processes.env["GANFT_STORE_URL"]))
    engine.dispose()
    auth = {"Authorization": f"Bearer {key}"}
    api = processes.start_api(GANFT_DATABASE_URL=server.url, GANFT_AUTH_CACHE_S="3600")
    paths = (f"/v1/jobs/{job_id}", "/v1/jobs")
    for path in paths:  # warm: pooled connections exist, the key is cached
        assert httpx.get(f"{api.url}{path}", headers=auth, timeout=CLIENT_TIMEOUT_S).status_code == 200

    server.stop("immediate")
    answers: list[tuple[str, int, str | None, float]] = []
    started = time.monotonic()
    while time.monotonic() - started < OUTAGE_S:
        for path in paths:
            sent = time.monotonic()
            answer = httpx.get(f"{api.url}{path}", headers=auth, timeout=CLIENT_TIMEOUT_S)
            answers.append((path, answer.status_code, answer.headers.get("retry-after"), time.monotonic() - sent))
            assert answer.status_code == 503, (path, answer.status_code, answer.text, processes.logs())
            assert answer.json()["type"] == "urn:ganft:problem:service-unavailable"
        time.sleep(0.25)
    server.start()

    assert answers and all(status == 503 and retry for _, status, retry, _ in answers), answers

    def healed() -> bool:
        return all(httpx.get(f"{api.url}{p}", headers=auth, timeout=CLIENT_TIMEOUT_S).status_code == 200 for p in paths)

    wait_for(healed, timeout=30, what="the read path to recover", logs=processes.logs)
    assert api.process.poll() is None
