"""The FastAPI app: `uvicorn api.main:app` (settings from `GANFT_*` environment variables).

`create_app(settings)` builds an app with its own engine, store, broker client, rate limiter
and metrics registry (the tests build one per test). Building it does no I/O: the database,
broker and store are touched on first use.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI

from api import problems
from api.keycache import KeyCache
from api.observability import LatencyMiddleware, make_registry
from api.queue import JobQueue
from api.ratelimit import RateLimiter
from api.routes import dashboard, datasets, events, health, jobs, models, outputs
from api.schemas import JobCreate
from ganft.db.session import POSTGRES_POOL_SIZE, make_engine, make_sessionmaker
from ganft.settings import Settings, get_settings
from ganft.store import open_store

log = logging.getLogger(__name__)

MAX_CONCURRENT_INSPECTIONS = 2  # dataset inspector subprocesses at once, per API process
THREADPOOL_SIZE = POSTGRES_POOL_SIZE  # threads for sync routes and dependencies, per API process


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    engine = make_engine(settings.database_url)
    queue = JobQueue(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.inspect_limiter = anyio.CapacityLimiter(MAX_CONCURRENT_INSPECTIONS)  # needs the event loop
        # Sync routes and dependencies run in anyio's threadpool (40 threads by default): one thread
        # per pooled DB connection, so threads never make the pool open throwaway overflow connections.
        anyio.to_thread.current_default_thread_limiter().total_tokens = THREADPOOL_SIZE
        yield
        queue.close()
        engine.dispose()

    app = FastAPI(
        title="ganft",
        version="1",
        summary="GAN fine-tuning as a REST training-job service",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = make_sessionmaker(engine)
    app.state.store = open_store(settings.store_url)
    app.state.queue = queue
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
    app.state.key_cache = KeyCache(settings.auth_cache_s)
    registry, latency = make_registry(engine)
    app.state.metrics_registry = registry

    problems.install(app)
    app.add_middleware(LatencyMiddleware, latency=latency)
    for module in (health, datasets, models, jobs, events, outputs, dashboard):
        app.include_router(module.router)
    _document_manual_bodies(app)
    return app


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
