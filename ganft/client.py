"""A small synchronous client for ganft's v1 HTTP API (httpx).

    with Client("http://127.0.0.1:8000", api_key) as api:
        ds = api.upload_dataset("digits.npz")
        job = api.create_job({"method": "ssgan", "dataset_id": ds["id"], "seed": 1})
        for event in api.events(job["id"]):
            ...
        api.download_artifact(job["id"], "model.pt2", "model.pt2")

Uploads and downloads stream (a dataset never sits in memory whole); downloads are checked
against the artifact's sha256 before they appear under their final name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

CHUNK_BYTES = 1024 * 1024
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
STREAM_RETRIES = 5  # consecutive failed (re)connections of an event stream before giving up
STREAM_RETRY_S = 1.0  # wait between reconnections (the server's `retry:` field overrides it)

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A non-2xx answer; `problem` is the application/problem+json body when there was one."""

    def __init__(self, status: int, message: str, problem: dict[str, Any] | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.problem = problem or {}


class ChecksumError(Exception):
    """A downloaded file's sha256 differs from the one the server announced."""


@dataclass(frozen=True)
class Event:
    seq: int  # 1, 2, 3 ... per job
    type: str  # status | progress | evaluation | checkpoint | log
    data: dict[str, Any]

    @property
    def terminal(self) -> bool:
        """A status event that ends the job (no event follows it)."""
        return self.type == "status" and self.data.get("status") in TERMINAL_STATUSES


@dataclass(frozen=True)
class ArtifactInfo:
    name: str
    size_bytes: int
    sha256: str
    content_type: str


def _raise_for_status(response: httpx.Response) -> None:
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


class Client:
    """One API key against one server; use as a context manager (or call `close`)."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30.0) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=httpx.Timeout(timeout),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _json(self, method: str, url: str, **kwargs: Any) -> Any:
        response = self._http.request(method, url, **kwargs)
        _raise_for_status(response)
        return response.json()

    # ------------------------------------------------------------ health

    def ready(self) -> bool:
        """The server answers `/readyz` with 200 (database and broker reachable)."""
        try:
            return self._http.get("/readyz", timeout=5.0).status_code == 200
        except httpx.TransportError:
            return False

    # ------------------------------------------------------------ datasets

    def upload_dataset(
        self, path: str | os.PathLike[str], *, name: str | None = None, format: str | None = None
    ) -> Any:
        """Upload a dataset file as the raw request body (streamed); returns the Dataset."""
        path = Path(path)
        params = {"name": name or path.name}
        if format is None and path.suffix.lower() in (".npz", ".csv", ".zip"):
            format = {".npz": "npz", ".csv": "csv", ".zip": "imagefolder"}[path.suffix.lower()]
        if format is not None:
            params["format"] = format
        with open(path, "rb") as f:
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(path.stat().st_size)}
            return self._json(
                "POST", "/v1/datasets", params=params, headers=headers, content=iter(lambda: f.read(CHUNK_BYTES), b"")
            )

    def get_dataset(self, dataset_id: str) -> Any:
        return self._json("GET", f"/v1/datasets/{dataset_id}")

    # ------------------------------------------------------------ jobs

    def create_job(self, spec: dict[str, Any], *, idempotency_key: str | None = None) -> Any:
        """POST a JobCreate (`method`, `dataset_id`, `hyperparameters`, `seed` ...); returns the Job."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._json("POST", "/v1/jobs", json=spec, headers=headers)

    def get_job(self, job_id: str) -> Any:
        return self._json("GET", f"/v1/jobs/{job_id}")

    def cancel_job(self, job_id: str) -> Any:
        return self._json("POST", f"/v1/jobs/{job_id}/cancel")

    def list_events(self, job_id: str, *, after: int = 0) -> list[Event]:
        """Every event after seq `after` so far (all pages), oldest first."""
        events: list[Event] = []
        cursor: str | None = str(after)
        while cursor is not None:
            body = self._json("GET", f"/v1/jobs/{job_id}/events", params={"after": cursor, "limit": 1000})
            events += [Event(int(e["seq"]), e["type"], e.get("data") or {}) for e in body["data"]]
            cursor = body.get("next_cursor")
        return events

    def metrics(self, job_id: str) -> Any:
        return self._json("GET", f"/v1/jobs/{job_id}/metrics")

    def wait(self, job_id: str, *, timeout: float = 3600.0, poll_s: float = 1.0) -> Any:
        """Poll until the job ends; returns it. TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if job["status"] in TERMINAL_STATUSES:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout:.0f} s")
            time.sleep(poll_s)

    def events(self, job_id: str, *, after: int = 0, read_timeout: float = 60.0) -> Iterator[Event]:
        """Follow the job's Server-Sent Events until its terminal status event.

        Reconnects with `Last-Event-ID` when the connection drops, so no event is seen twice
        or skipped; gives up after `STREAM_RETRIES` failed connections in a row.
        """
        last, failures, retry_s = after, 0, STREAM_RETRY_S
        while True:
            headers = {"Accept": "text/event-stream"}
            if last:
                headers["Last-Event-ID"] = str(last)
            try:
                with self._http.stream(
                    "GET",
                    f"/v1/jobs/{job_id}/events",
                    headers=headers,
                    timeout=httpx.Timeout(30.0, read=read_timeout),
                ) as response:
                    _raise_for_status(response)
                    for field, value in _sse_messages(response.iter_lines()):
                        if field == "retry":
                            retry_s = value / 1000.0
                            continue
                        event = value
                        failures = 0
                        if event.seq <= last:
                            continue
                        last = event.seq
                        yield event
                        if event.terminal:
                            return
            except (httpx.TransportError, httpx.StreamError) as exc:
                failures += 1
                if failures >= STREAM_RETRIES:
                    raise
                log.info("event stream of %s dropped (%s); reconnecting after seq %d", job_id, exc, last)
            time.sleep(retry_s)

    # ------------------------------------------------------------ artifacts

    def list_artifacts(self, job_id: str) -> list[ArtifactInfo]:
        body = self._json("GET", f"/v1/jobs/{job_id}/artifacts")
        items = body["data"] if isinstance(body, dict) else body
        return [ArtifactInfo(a["name"], int(a["size_bytes"]), a["sha256"], a["content_type"]) for a in items]

    def download_artifact(
        self, job_id: str, name: str, dest: str | os.PathLike[str], *, sha256: str | None = None
    ) -> Path:
        """Stream an artifact to `dest`, checking its sha256 (given, or the server's ETag).

        The file is written as `dest.part` and renamed only once the hash matches.
        """
        dest = Path(dest)
        part = dest.with_name(dest.name + ".part")
        digest = hashlib.sha256()
        try:
            with self._http.stream("GET", f"/v1/jobs/{job_id}/artifacts/{name}") as response:
                _raise_for_status(response)
                expected = sha256 or response.headers.get("ETag", "").strip('"').removeprefix("W/").strip('"')
                with open(part, "wb") as out:
                    for chunk in response.iter_bytes(CHUNK_BYTES):
                        digest.update(chunk)
                        out.write(chunk)
            if not expected:
                raise ChecksumError(f"{name}: the server sent no sha256 to check the download against")
            if digest.hexdigest() != expected:
                raise ChecksumError(f"{name}: sha256 {digest.hexdigest()} does not match {expected}")
            os.replace(part, dest)
        finally:
            part.unlink(missing_ok=True)
        return dest


def _sse_messages(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
    """Parse a text/event-stream: yields ("event", Event) per message and ("retry", ms) per retry field.

    Messages are separated by blank lines; `data:` lines join with newlines; lines starting
    with ':' are comments (keep-alives). The data is the event's `data` object, or a whole
    event (`{seq, type, data}`).
    """
    seq: str | None = None
    kind = "message"
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                body = json.loads("\n".join(data))
                if isinstance(body, dict) and {"seq", "type", "data"} <= body.keys():
                    yield "event", Event(int(body["seq"]), body["type"], body["data"] or {})
                elif seq is not None:
                    yield "event", Event(int(seq), kind, body if isinstance(body, dict) else {"value": body})
            seq, kind, data = None, "message", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "id":
            seq = value
        elif field == "event":
            kind = value
        elif field == "data":
            data.append(value)
        elif field == "retry" and value.isdigit():
            yield "retry", int(value)
