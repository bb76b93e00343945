"""The FastAPI app: `uvicorn api.main:app` (settings from `GANFT_*` environment variables).

`create_app(settings)` builds an app with its own engine, store, broker client, rate limiter
and metrics registry (the tests build one per test). Building it does no I/O: the database,
broker and store are touched on first use.
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI
from sqlalchemy.exc import SQLAlchemyError

from api import problems
from api.keycache import KeyCache
from api.observability import LatencyMiddleware, make_registry
from api.queue import JobQueue
from api.ratelimit import RateLimiter
from api.routes import dashboard, datasets, events, health, jobs, models, outputs, usage
from api.schemas import JobCreate
from ganft.db.notify import make_hub
from ganft.db.reads import make_reader
from ganft.db.session import POSTGRES_POOL_SIZE, make_engine, make_sessionmaker, session_scope
from ganft.db.tables import utcnow
from ganft.repo import datasets as dataset_repo
from ganft.repo import models as model_repo
from ganft.settings import Settings, get_settings
from ganft.store import Store, open_store

log = logging.getLogger(__name__)

MAX_CONCURRENT_INSPECTIONS = 2  # dataset inspector subprocesses at once, per API process
THREADPOOL_SIZE = POSTGRES_POOL_SIZE  # threads for sync routes and dependencies, per API process


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    engine = make_engine(settings.database_url)
    reader = make_reader(engine)  # the hot read path (api/deps.py JobDep, GET /v1/jobs)
    key_cache = KeyCache(settings.auth_cache_s)
    # Wakes event streams when a job's events commit, and drops revoked keys (Postgres NOTIFY).
    event_hub = make_hub(engine, on_key_revoked=key_cache.forget)
    queue = JobQueue(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.inspect_limiter = anyio.CapacityLimiter(MAX_CONCURRENT_INSPECTIONS)  # needs the event loop
        # Sync routes and dependencies run in anyio's threadpool (40 threads by default): one thread
        # per pooled DB connection, so threads never make the pool open throwaway overflow connections.
        anyio.to_thread.current_default_thread_limiter().total_tokens = THREADPOOL_SIZE
        # A store that cannot be reached (network, credentials) stops the start: every upload would fail.
        await anyio.to_thread.run_sync(app.state.store.check)
        await anyio.to_thread.run_sync(purge_dead_uploads, engine, app.state.store, settings.stale_upload_s)
        await reader.open()
        await event_hub.start()  # LISTENs in the background: a database that is down does not stop the start
        _tune_gc()
        yield
        await event_hub.stop()
        await reader.close()
        queue.close()
        engine.dispose()

    app = FastAPI(
        title="ganft",
        version="1",
        summary="GAN fine-tuning as a REST training-job service",
        lifespan=lifespan,
        # FastAPI's native OpenTelemetry hooks look up the global OTel providers (an os.environ
        # read) on every request even when none is configured: 9% of the CPU of GET /v1/jobs/{id}.
        # ganft exports Prometheus metrics (/metrics) instead.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.reader = reader
    app.state.event_hub = event_hub
    app.state.sessionmaker = make_sessionmaker(engine)
    app.state.store = open_store(settings.store_url, settings)
    app.state.queue = queue
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
    app.state.key_cache = key_cache
    registry, latency = make_registry(engine)
    app.state.metrics_registry = registry

    problems.install(app)
    app.add_middleware(LatencyMiddleware, latency=latency)
    for module in (health, datasets, models, jobs, events, outputs, usage, dashboard):
        app.include_router(module.router)
    _document_manual_bodies(app)
    return app


# The cyclic collector's young-generation threshold in the API process (CPython's default: 700
# allocations). A request allocates a few hundred objects, so the default ran a collection every
# request or two and, through the older generations, full passes over everything the process had
# imported: stalls of 5-130 ms that every in-flight request waited out. Measured on GET
# /v1/jobs/{id} (2 workers, 64 clients, bench/RESULTS.md): p99 116 ms with the defaults, 40-52 ms
# with this threshold, 87 ms with the collector off entirely (so the rest of that tail is not GC).
GC_THRESHOLD = (20_000, 20, 20)


def _tune_gc() -> None:
    """Fewer, not longer, collections: startup objects (modules, the app) are frozen out of every
    later pass, and the young generation collects every 20k allocations instead of 700.
    Reference cycles are still freed, just in bigger batches; plain garbage goes by refcount."""
    if gc.get_threshold() != GC_THRESHOLD:  # once per process (tests start many apps in one)
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLD)


def purge_dead_uploads(engine: Any, store: Store, max_age_s: float) -> list[str]:
    """Remove what uploads cut short by a killed API process left behind; returns the ids removed.

    Datasets: rows still `uploading` older than `max_age_s`, and their files (the partial temp
    file included). Model uploads have no `uploading` row (it is inserted once every file is
    stored): a `models/{id}/` folder without a row in which nothing was written for `max_age_s`
    is dead. Never fails the start: a database that
    is down now is retried at the next start."""
    try:
        with session_scope(engine) as session:
            dead = dataset_repo.purge_stale_uploads(session, created_before=utcnow() - dt.timedelta(seconds=max_age_s))
            idle = model_repo.idle_folders(store, idle_since=time.time() - max_age_s)
            dead_models = model_repo.orphan_folders(session, folder_names=idle)
    except SQLAlchemyError as exc:
        log.warning("could not look for dead uploads (%s); the next start retries", type(exc).__name__)
        return []
    for dataset_id in dead:
        store.delete_prefix(f"datasets/{dataset_id}")
    for model_id in dead_models:
        store.delete_prefix(model_repo.storage_prefix_for(model_id))
    if dead:
        log.warning("removed %d upload(s) that never finished: %s", len(dead), ", ".join(dead))
    if dead_models:
        log.warning("removed %d model upload(s) that never finished: %s", len(dead_models), ", ".join(dead_models))
    abort_stale = getattr(store, "abort_stale_uploads", None)  # S3: multipart uploads whose abort never arrived
    if abort_stale is not None:
        try:
            aborted = abort_stale(older_than_s=max_age_s)
        except OSError as exc:
            log.warning("could not look for open multipart uploads (%s); the next start retries", exc)
        else:
            if aborted:
                log.warning("aborted %d multipart upload(s) left open: %s", len(aborted), ", ".join(aborted))
    return dead + dead_models


def _document_manual_bodies(app: FastAPI) -> None:
    """Add JobCreate to the OpenAPI components: POST /v1/jobs reads its body itself (after auth)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            job_create = JobCreate.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(job_create.pop("$defs", {}))
            components["JobCreate"] = job_create
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


app = create_app()
