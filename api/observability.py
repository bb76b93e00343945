"""Prometheus metrics: request latency by route template, and jobs by state read at scrape time.

Each app has its own registry (tests build several apps in one process). The jobs gauge is a
custom collector: it counts rows when Prometheus scrapes, so it is right for every API
replica and never drifts from the database.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ganft.db.session import session_scope
from ganft.repo import jobs
from ganft.states import JOB_STATUSES

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)  # seconds


class JobsByState(Collector):
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily("ganft_jobs", "Jobs in each state (all tenants)", labels=["status"])
        try:
            with session_scope(self._engine) as session:
                counts = jobs.count_by_status(session)
        except Exception as exc:  # a scrape must not fail because the DB is down
            log.warning("jobs gauge: database unavailable (%s)", type(exc).__name__)
            yield gauge
            return
        for status in JOB_STATUSES:
            gauge.add_metric([status], counts.get(status, 0))
        yield gauge


def make_registry(engine: Engine) -> tuple[CollectorRegistry, Histogram]:
    registry = CollectorRegistry()
    latency = Histogram(
        "ganft_http_request_duration_seconds",
        "HTTP request latency by route template",
        ["method", "route", "status"],
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    registry.register(JobsByState(engine))
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
