"""Liveness, readiness and Prometheus metrics (no auth: for orchestrators and scrapers)."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Engine, text

from api.queue import JobQueue
from api.schemas import Health
from ganft.store import StoreUnavailable

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

READY_TIMEOUT_S = 3.0  # each readiness check must answer within this


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """Liveness: the process serves requests (touches nothing else)."""
    return Health(status="ok")


def _check_db(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


async def _check(name: str, call: object, *args: object) -> tuple[str, str]:
    try:
        await asyncio.wait_for(asyncio.to_thread(call, *args), READY_TIMEOUT_S)  # type: ignore[arg-type]
    except TimeoutError:
        return name, f"no answer within {READY_TIMEOUT_S:g} s"
    except Exception as exc:
        log.warning("readiness: %s failed: %s", name, exc)
        if isinstance(exc, StoreUnavailable):  # says what the server answered (e.g. 403: credentials)
            return name, f"unreachable ({exc})"[:400]
        return name, f"unreachable ({type(exc).__name__})"
    return name, "ok"


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(request: Request) -> JSONResponse:
    """Readiness: the database answers `SELECT 1`, the broker accepts a connection and the artifact store a
    signed listing (503 naming what failed)."""
    queue: JobQueue = request.app.state.queue
    results = await asyncio.gather(
        _check("database", _check_db, request.app.state.engine),
        _check("broker", queue.ping),
        _check("store", request.app.state.store.check),
    )
    checks = dict(results)
    ok = all(v == "ok" for v in checks.values())
    body = Health(status="ok" if ok else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus exposition: request latencies by route and jobs by state."""
    return Response(generate_latest(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)
