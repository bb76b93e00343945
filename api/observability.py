"""Prometheus metrics: request latency by route template, and job figures read at scrape time.

    ganft_http_request_duration_seconds{method,route,status}  histogram, this API's requests
    ganft_jobs{status}                                        gauge, jobs in each state
    ganft_queue_depth                                         gauge, jobs waiting in `queued`
    ganft_queue_oldest_age_seconds                            gauge, how long the oldest queued job has waited
    ganft_job_duration_seconds{method,status}                 histogram, run time of finished jobs
    ganft_job_steps_per_second{job_id,method}                 gauge, speed of each running job
    ganft_database_up                                         gauge, 1 when the job figures could be read

The job figures come from the database when Prometheus scrapes (a custom collector), never
from in-process counters: every API replica and every worker process of one replica answers
the same numbers, and none drift or reset with a restart. The duration histogram counts all
finished jobs ever (terminal states never change), so its counters only grow and `rate()`
works on them.

Request latency is measured in-process. Under `uvicorn --workers N` set
`PROMETHEUS_MULTIPROC_DIR` to an empty folder shared by the workers (wiped at each start):
each worker then writes its observations there and a scrape of any worker sums them all.
Each app has its own registry (the tests build several apps in one process).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import Engine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ganft.db.session import session_scope
from ganft.db.tables import utcnow
from ganft.repo import jobs, stats
from ganft.repo.pages import as_utc
from ganft.states import JOB_STATUSES

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)  # seconds
# Job run times, seconds: 10 s ... 2 days (the demo takes a minute; real fine-tuning hours).
DURATION_BUCKETS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0, 172800.0)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class JobFigures(Collector):
    """Jobs by state, queue depth and age, run-time histograms and running speeds, read in one session."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("ganft_database_up", "1 when the job figures could be read from the database")
        try:
            with session_scope(self._engine) as session:
                counts = jobs.count_by_status(session)
                queue = stats.queue_summary(session)
                durations = stats.duration_histograms(session, bounds=DURATION_BUCKETS)
                rates = stats.running_rates(session)
        except Exception as exc:  # a scrape must not fail because the DB is down: say so instead
            log.warning("job metrics: database unavailable (%s)", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up

        by_state = GaugeMetricFamily("ganft_jobs", "Jobs in each state (all tenants)", labels=["status"])
        for status in JOB_STATUSES:
            by_state.add_metric([status], counts.get(status, 0))
        yield by_state

        yield GaugeMetricFamily("ganft_queue_depth", "Jobs waiting to be claimed by a worker", value=queue.depth)
        age = 0.0 if queue.oldest_created_at is None else (utcnow() - as_utc(queue.oldest_created_at)).total_seconds()
        yield GaugeMetricFamily(
            "ganft_queue_oldest_age_seconds", "How long the oldest queued job has waited (0: empty queue)", value=age
        )

        histogram = HistogramMetricFamily(
            "ganft_job_duration_seconds",
            "Run time (started to finished) of finished jobs, by method and final status",
            labels=["method", "status"],
        )
        for h in durations:
            buckets = [(f"{bound:g}", n) for bound, n in zip(DURATION_BUCKETS, h.bucket_counts, strict=True)]
            histogram.add_metric([h.method, h.status], [*buckets, ("+Inf", h.count)], sum_value=h.sum_seconds)
        yield histogram

        speed = GaugeMetricFamily(
            "ganft_job_steps_per_second",
            "Training steps per second of each running job (as its worker last measured)",
            labels=["job_id", "method"],
        )
        for rate in rates:
            speed.add_metric([rate.job_id, rate.method], rate.steps_per_second)
        yield speed


def make_registry(engine: Engine) -> tuple[CollectorRegistry, Histogram]:
    """(the registry /metrics renders, the request latency histogram the middleware observes)."""
    registry = CollectorRegistry()
    multiproc_dir = os.environ.get(MULTIPROC_ENV)
    if multiproc_dir:
        # Observations go to per-process files in that folder; the scrape sums every process's.
        MultiProcessCollector(registry, path=multiproc_dir)
    latency = Histogram(
        "ganft_http_request_duration_seconds",
        "HTTP request latency by route template",
        ["method", "route", "status"],
        buckets=LATENCY_BUCKETS,
        registry=None if multiproc_dir else registry,
    )
    registry.register(JobFigures(engine))
    return registry, latency


class LatencyMiddleware:
    """Pure ASGI (streams pass through untouched); labels requests by route template, not raw path."""

    def __init__(self, app: ASGIApp, latency: Histogram) -> None:
        self.app = app
        self.latency = latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"  # unmatched paths: one label, bounded cardinality
            self.latency.labels(scope["method"], template, str(status)).observe(time.perf_counter() - start)
