"""Errors of ganft's Python client, and reading them (and `Retry-After`) off a response."""

from __future__ import annotations

import email.utils
import time
from typing import Any

import httpx


class ApiError(Exception):
    """A non-2xx answer. `problem` is the application/problem+json body (empty when there was none)."""

    def __init__(self, status: int, message: str, problem: dict[str, Any] | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.problem = problem or {}
        self.detail: str = message
        self.errors: list[dict[str, Any]] = list(self.problem.get("errors") or [])  # [{field, message}]

    def __str__(self) -> str:
        lines = [f"HTTP {self.status}: {self.detail}"]
        for error in self.errors:
            line = f"{error.get('field', '?')}: {error.get('message', '')}"
            if line != self.detail:  # a one-field 422's detail is already that line: say it once
                lines.append(f"  {line}")
        return "\n".join(lines)


class ChecksumError(Exception):
    """A downloaded file's sha256 differs from the one the server announced."""


def raise_for_status(response: httpx.Response) -> None:
    if response.is_success:
        return
    response.read()  # a streamed response has not read its (error) body yet
    problem: dict[str, Any] | None = None
    message = response.reason_phrase
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        problem = body
        message = str(body.get("detail") or body.get("title") or message)
    raise ApiError(response.status_code, message, problem)


def retry_after_s(response: httpx.Response) -> float | None:
    """`Retry-After` in seconds (delta-seconds or an HTTP date), None when absent or unreadable."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.replace(".", "", 1).isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
