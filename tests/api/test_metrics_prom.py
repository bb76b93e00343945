"""Prometheus exposition: job figures read from the database at scrape time, request latency by route."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from ganft.db.tables import Job, utcnow
from tests.api.conftest import Seed

DOWN_DB = "postgresql+psycopg://postgres@127.0.0.1:9/nowhere"
ROOT = Path(__file__).resolve().parents[2]


def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of one /metrics answer."""
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


def ran(seed: Seed, status: str, seconds: float, *, method: str = "ssgan") -> str:
    """A finished job that ran for `seconds`."""
    now = utcnow()
    return seed.job(
        status=status, method=method, started_at=now - dt.timedelta(seconds=seconds), finished_at=now, step=100
    )


def test_job_figures_at_scrape_time(client: TestClient, seed: Seed) -> None:
    """Jobs by state, queue depth and age, run-time histograms by method/status, running speeds."""
    old_queued = seed.job(status="queued")
    seed.age(Job, old_queued, 120)
    seed.job(status="queued")
    running = seed.job(status="running", steps_per_second=12.5, started_at=utcnow())
    seed.job(status="cancelling", started_at=utcnow())  # no speed measured yet: no sample
    ran(seed, "succeeded", 20)
    ran(seed, "succeeded", 100)
    ran(seed, "failed", 5000, method="adapt")
    seed.job(status="cancelled", finished_at=utcnow())  # cancelled while queued: it never ran
    seed.job(tenant="globex", status="succeeded", steps_per_second=3.0)  # finished: no speed, no run time

    m = scrape(client)
    assert m[("ganft_database_up", ())] == 1
    for status, n in {"queued": 2, "running": 1, "cancelling": 1, "succeeded": 3, "failed": 1, "cancelled": 1}.items():
        assert m[("ganft_jobs", (("status", status),))] == n, status
    assert m[("ganft_queue_depth", ())] == 2
    assert 120 <= m[("ganft_queue_oldest_age_seconds", ())] < 180

    ssgan = {"method": "ssgan", "status": "succeeded"}
    assert m[key("ganft_job_duration_seconds_count", **ssgan)] == 2
    assert abs(m[key("ganft_job_duration_seconds_sum", **ssgan)] - 120) < 1
    buckets = {
        le: m[key("ganft_job_duration_seconds_bucket", le=le, **ssgan)] for le in ("10", "30", "60", "120", "+Inf")
    }
    assert buckets == {"10": 0, "30": 1, "60": 1, "120": 2, "+Inf": 2}
    adapt = {"method": "adapt", "status": "failed"}
    assert m[key("ganft_job_duration_seconds_bucket", le="3600", **adapt)] == 0
    assert m[key("ganft_job_duration_seconds_bucket", le="7200", **adapt)] == 1
    assert not any(k[0].startswith("ganft_job_duration") and ("status", "cancelled") in k[1] for k in m)

    speeds = {k: v for k, v in m.items() if k[0] == "ganft_job_steps_per_second"}
    assert speeds == {key("ganft_job_steps_per_second", job_id=running, method="ssgan"): 12.5}


def test_duration_counts_only_grow(client: TestClient, seed: Seed) -> None:
    """Another finished job adds to the histogram; nothing is dropped between scrapes (counters for rate())."""
    ran(seed, "succeeded", 40)
    first = scrape(client)
    ran(seed, "succeeded", 4000)
    second = scrape(client)
    ssgan = {"method": "ssgan", "status": "succeeded"}
    assert (
        first[key("ganft_job_duration_seconds_count", **ssgan)],
        second[key("ganft_job_duration_seconds_count", **ssgan)],
    ) == (1, 2)
    assert second[key("ganft_job_duration_seconds_bucket", le="+Inf", **ssgan)] == 2
    assert second[key("ganft_job_duration_seconds_bucket", le="60", **ssgan)] == 1
    assert first[("ganft_queue_depth", ())] == 0 and first[("ganft_queue_oldest_age_seconds", ())] == 0


def test_latency_by_route_template(client: TestClient, headers: dict[str, str], seed: Seed) -> None:
    """Requests are counted under their route template; the dashboard's routes too."""
    job = seed.job()
    for _ in range(2):
        assert client.get(f"/v1/jobs/{job}/events", headers=headers).status_code == 200
    assert client.get("/").status_code == 200
    m = scrape(client)
    count = "ganft_http_request_duration_seconds_count"
    assert m[key(count, method="GET", route="/v1/jobs/{job_id}/events", status="200")] == 2
    assert m[key(count, method="GET", route="/", status="200")] == 1
    assert not any(job in str(k) for k in m)


def test_database_down_scrape_still_answers(make_client: Callable[..., TestClient]) -> None:
    """With the database unreachable the scrape answers 200 with ganft_database_up 0 and no job figures."""
    m = scrape(make_client(database_url=DOWN_DB))
    assert m[("ganft_database_up", ())] == 0
    assert not any(k[0] in ("ganft_jobs", "ganft_queue_depth") for k in m)


MULTIPROCESS_SCRIPT = textwrap.dedent(
    """
    import multiprocessing, sys
    from prometheus_client import generate_latest
    from api.observability import make_registry
    from ganft.db.session import make_engine

    def observe(seconds):
        _, latency = make_registry(make_engine(sys.argv[1]))  # what another uvicorn worker builds
        latency.labels("GET", "/v1/jobs", "200").observe(seconds)

    if __name__ == "__main__":
        registry, latency = make_registry(make_engine(sys.argv[1]))
        latency.labels("GET", "/v1/jobs", "200").observe(0.02)
        child = multiprocessing.get_context("spawn").Process(target=observe, args=(0.3,))
        child.start(); child.join()
        sys.stdout.write(generate_latest(registry).decode())
    """
)


def test_latency_is_summed_over_worker_processes(pg_url: str, tmp_path: Path) -> None:
    """With PROMETHEUS_MULTIPROC_DIR set, a scrape of one process counts the other processes' requests."""
    folder = tmp_path / "prom"
    folder.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder), "PYTHONPATH": str(ROOT)}
    script = tmp_path / "two_workers.py"  # a file: spawned children re-import their __main__
    script.write_text(MULTIPROCESS_SCRIPT)
    out = subprocess.run([sys.executable, str(script), pg_url], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(out.stdout)
        for s in family.samples
    }
    labels = {"method": "GET", "route": "/v1/jobs", "status": "200"}
    assert samples[key("ganft_http_request_duration_seconds_count", **labels)] == 2
    assert abs(samples[key("ganft_http_request_duration_seconds_sum", **labels)] - 0.32) < 1e-6
    assert samples[("ganft_database_up", ())] == 1  # the job figures still come from the database
