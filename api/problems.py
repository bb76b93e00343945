"""Errors as `application/problem+json` (RFC 9457): `{type, title, status, detail, errors?}`.

`errors` lists `{field, message}` for validation problems; `field` is a dotted path into the
request (`hyperparameters.steps`, `dataset_id`, `file`). Every error leaves the service in
this shape: unknown routes, validation, auth, rate limits, an unreachable database (503 with
Retry-After) and bugs (a 500 that says nothing about the code).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from http import HTTPStatus
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ganft.db.aiopool import PoolTimeout as ReadPoolTimeout
from ganft.store import StoreUnavailable

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
DB_RETRY_AFTER_S = 5  # what a client should wait when the database is unreachable


class Problem(Exception):
    """Raise from anywhere in a request to answer with a problem document."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        errors: Sequence[dict[str, str]] = (),
        headers: dict[str, str] | None = None,
        type_: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = list(errors)
        self.headers = headers or {}
        self.type = type_ or problem_type(status)


def problem_type(status: int) -> str:
    """A stable, non-resolvable URI per kind of problem, e.g. `urn:ganft:problem:not-found`."""
    slug = HTTPStatus(status).phrase.lower().replace(" ", "-").replace("'", "")
    return f"urn:ganft:problem:{slug}"


def problem_response(problem: Problem) -> JSONResponse:
    body: dict[str, Any] = {
        "type": problem.type,
        "title": HTTPStatus(problem.status).phrase,
        "status": problem.status,
        "detail": problem.detail,
    }
    if problem.errors:
        body["errors"] = problem.errors
    return JSONResponse(body, status_code=problem.status, headers=problem.headers, media_type=PROBLEM_JSON)


# ---------------------------------------------------------------- common problems


def not_found(what: str, ident: str) -> Problem:
    return Problem(404, f"{what} {ident!r} not found")


def invalid(field: str, message: str, *, detail: str | None = None) -> Problem:
    """A 422 naming one offending field."""
    return Problem(422, detail or f"{field}: {message}", errors=[{"field": field, "message": message}])


def unauthorized(detail: str, *, error: str | None = None) -> Problem:
    """401 with the RFC 6750 challenge (`error="invalid_token"` when a key was sent but is not valid)."""
    challenge = 'Bearer realm="ganft"' + (f', error="{error}"' if error else "")
    return Problem(401, detail, headers={"WWW-Authenticate": challenge})


def field_path(loc: Iterable[int | str], *, drop: tuple[str, ...] = ("body", "query", "path", "header")) -> str:
    """`("body", "hyperparameters", "steps")` -> `hyperparameters.steps`; list indices as `[i]`."""
    parts: list[str] = []
    for i, item in enumerate(loc):
        if i == 0 and item in drop:
            continue
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "body"


def errors_from_pydantic(errors: Iterable[Any], *, prefix: str = "") -> list[dict[str, str]]:
    """`{field, message}` items from pydantic/FastAPI error dicts, fields prefixed by `prefix`."""
    out = []
    for error in errors:
        path = field_path(error.get("loc", ()))
        if prefix:
            path = prefix if path == "body" else f"{prefix}.{path}"
        message = str(error.get("msg", "invalid value"))
        if error.get("type") == "extra_forbidden":
            message = "unknown field"
        out.append({"field": path, "message": message})
    return out


def validation_problem(errors: list[dict[str, str]]) -> Problem:
    first = errors[0] if errors else {"field": "body", "message": "invalid request"}
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return Problem(422, f"{first['field']}: {first['message']}{more}", errors=errors)


def from_validation_error(exc: ValidationError, *, prefix: str = "") -> Problem:
    return validation_problem(errors_from_pydantic(exc.errors(), prefix=prefix))


# ---------------------------------------------------------------- handlers


async def _on_problem(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return problem_response(exc)


async def _on_http_exception(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    return problem_response(Problem(exc.status_code, detail, headers=dict(exc.headers or {})))


async def _on_request_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = errors_from_pydantic(exc.errors())
    for error, raw in zip(errors, exc.errors(), strict=True):
        if raw.get("type") == "json_invalid":
            error["message"] = "malformed JSON: " + str(raw.get("ctx", {}).get("error", "cannot parse"))
    return problem_response(validation_problem(errors))


async def _on_database_down(request: Request, exc: Exception) -> JSONResponse:
    # A disconnect or an unreachable server is not the caller's fault and usually passes.
    log.warning("database unavailable during %s %s: %s", request.method, request.url.path, exc.__class__.__name__)
    return problem_response(
        Problem(
            503,
            "the database is unavailable; retry later",
            headers={"Retry-After": str(DB_RETRY_AFTER_S)},
        )
    )


async def _on_store_down(request: Request, exc: Exception) -> JSONResponse:
    # The S3 server is down or refuses us: nothing was stored (writes are all-or-nothing).
    log.warning("artifact store unavailable during %s %s: %s", request.method, request.url.path, exc)
    return problem_response(
        Problem(503, "the artifact store is unavailable; retry later", headers={"Retry-After": str(DB_RETRY_AFTER_S)})
    )


async def _on_dbapi_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DBAPIError)
    if exc.connection_invalidated:
        return await _on_database_down(request, exc)
    return await _on_unexpected(request, exc)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(Problem(500, "internal error; the request was logged"))


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into a problem document."""
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(RequestValidationError, _on_request_validation)
    app.add_exception_handler(OperationalError, _on_database_down)
    app.add_exception_handler(PoolTimeoutError, _on_database_down)
    # The same two from the async read path (ganft/db/reads.py), which talks to psycopg directly.
    app.add_exception_handler(psycopg.OperationalError, _on_database_down)
    app.add_exception_handler(ReadPoolTimeout, _on_database_down)
    app.add_exception_handler(DBAPIError, _on_dbapi_error)
    app.add_exception_handler(StoreUnavailable, _on_store_down)
    app.add_exception_handler(Exception, _on_unexpected)
