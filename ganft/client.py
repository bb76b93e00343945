"""ganft's Python client SDK: a synchronous client for the v1 HTTP API (httpx).

    with Client("http://127.0.0.1:8000", api_key) as api:
        ds = api.upload_dataset("digits.npz")
        job = api.create_job({"method": "ssgan", "dataset_id": ds.id, "seed": 1})
        for event in api.watch(job.id):
            ...
        api.download_artifact(job.id, "model.pt2", "model.pt2")

- Results are typed (`ganft.client_types`); errors are `ApiError` (status, problem `detail`, `errors`).
- 429 and 503 answers are retried with exponential backoff and full jitter, honouring
  `Retry-After`; a connection that could not be opened is retried for every request; one that
  broke after the request was sent only for idempotent requests (GET, DELETE, and POST /v1/jobs,
  which always carries an `Idempotency-Key`, generated unless given).
- Uploads stream from the file; `upload_dataset_resumable` sends a large one in parts and carries
  on after a broken connection (or a later call with its upload id); downloads stream to
  `dest.part`, resume with `Range` after a broken connection, and are renamed to `dest` only
  once the sha256 matches.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, TypeVar

import httpx
from pydantic import BaseModel

from ganft.client_errors import ApiError, ChecksumError, raise_for_status, retry_after_s
from ganft.client_sse import sse_messages
from ganft.client_types import (
    TERMINAL_STATUSES,
    ArtifactInfo,
    Checkpoint,
    Dataset,
    Event,
    Job,
    Model,
    Page,
    Usage,
    WebhookDelivery,
)

__all__ = ["ApiError", "ArtifactInfo", "ChecksumError", "Client", "Event", "TERMINAL_STATUSES"]

CHUNK_BYTES = 1024 * 1024
PART_BYTES = 64 * 1024 * 1024  # one part of a resumable upload: what a broken connection costs at most
STREAM_RETRIES = 5  # consecutive failed (re)connections of an event stream or a download before giving up
STREAM_RETRY_S = 1.0  # wait between event-stream reconnections (the server's `retry:` field overrides it)
RETRY_STATUSES = frozenset({429, 503})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})

log = logging.getLogger(__name__)
R = TypeVar("R", bound=BaseModel)


class Client:
    """One API key against one server; use as a context manager (or call `close`).

    `retries` is how many times a retryable failure is retried; waits grow as
    `backoff_s * 2**n` (full jitter), capped at `max_backoff_s`.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        retries: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=httpx.Timeout(timeout),
            transport=transport,
        )
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.sleep: Callable[[float], None] = time.sleep  # replaceable in tests

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------ transport with retries

    def _backoff(self, attempt: int, response: httpx.Response | None = None) -> float:
        hinted = retry_after_s(response) if response is not None else None
        if hinted is not None:
            return min(hinted, self.max_backoff_s)
        return random.uniform(0, min(self.max_backoff_s, self.backoff_s * 2**attempt))

    def request(
        self,
        method: str,
        url: str,
        *,
        idempotent: bool | None = None,
        parts: Callable[[], dict[str, Any]] | None = None,
        **kw: Any,
    ) -> httpx.Response:
        """Send a request, retrying as the module docstring says; raises ApiError on a final non-2xx.

        `parts()` gives the body arguments afresh for each attempt (a streamed file is read again).
        """
        idempotent = method.upper() in IDEMPOTENT_METHODS if idempotent is None else idempotent
        attempt = 0
        while True:
            if parts is not None:
                kw.update(parts())
            try:
                response = self._http.request(method, url, **kw)
            except httpx.TransportError as exc:
                never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
                if attempt >= self.retries or not (never_sent or idempotent):
                    raise
                wait = self._backoff(attempt)
                log.info("%s %s: %s; retrying in %.1f s", method, url, type(exc).__name__, wait)
            else:
                if response.status_code not in RETRY_STATUSES or attempt >= self.retries:
                    raise_for_status(response)
                    return response
                wait = self._backoff(attempt, response)
                log.info("%s %s: HTTP %d; retrying in %.1f s", method, url, response.status_code, wait)
            attempt += 1
            self.sleep(wait)

    def _get(self, model: type[R], url: str, **kw: Any) -> R:
        return model.model_validate(self.request("GET", url, **kw).json())

    def _page(self, model: type[R], url: str, params: dict[str, Any]) -> Page[R]:
        body = self.request("GET", url, params={k: v for k, v in params.items() if v is not None}).json()
        return Page[model](data=[model.model_validate(x) for x in body["data"]], next_cursor=body.get("next_cursor"))  # type: ignore[valid-type]

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
    ) -> Dataset:
        """Upload a dataset file as the raw request body, streamed from disk."""
        path = Path(path)
        params = {"name": name or path.name}
        if format is None and path.suffix.lower() in (".npz", ".csv", ".zip", ".jsonl"):
            format = {".npz": "npz", ".csv": "csv", ".zip": "imagefolder", ".jsonl": "text"}[path.suffix.lower()]
        if format is not None:
            params["format"] = format
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(path.stat().st_size)}
        response = self.request(
            "POST", "/v1/datasets", params=params, headers=headers, parts=lambda: {"content": _file_chunks(path)}
        )
        return Dataset.model_validate(response.json())

    def upload_dataset_resumable(
        self,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        format: str | None = None,
        upload_id: str | None = None,
        part_bytes: int = PART_BYTES,
        on_started: Callable[[str], None] | None = None,
    ) -> Dataset:
        """Upload a (large) dataset file in parts of `part_bytes` through `/v1/datasets/uploads`.

        A part whose connection breaks is sent again from the offset the server reports; give the
        `upload_id` of an earlier, interrupted call (passed to `on_started` when it began) to carry
        on where it stopped instead of starting over. The server checks the file's sha256.
        """
        path = Path(path)
        size = path.stat().st_size
        if upload_id is None:
            body: dict[str, Any] = {"name": name or path.name, "size_bytes": size}
            if format is not None:
                body["format"] = format
            upload = self.request("POST", "/v1/datasets/uploads", json=body, idempotent=False).json()
            upload_id = str(upload["id"])
        else:
            upload = self.request("GET", f"/v1/datasets/uploads/{upload_id}").json()
            if upload["size_bytes"] != size:
                raise ValueError(f"upload {upload_id} is of {upload['size_bytes']} bytes, {path} has {size}")
        if on_started is not None:
            on_started(upload_id)
        offset, failures = int(upload["offset"]), 0
        with open(path, "rb") as handle:
            while offset < size:
                handle.seek(offset)
                part = handle.read(min(part_bytes, size - offset))
                try:
                    response = self._http.put(
                        f"/v1/datasets/uploads/{upload_id}", params={"offset": offset}, content=part,
                        headers={"Content-Type": "application/octet-stream"},
                    )  # fmt: skip
                except httpx.TransportError as exc:  # the part may or may not have arrived: ask
                    failures += 1
                    if failures > self.retries:
                        raise
                    log.info("upload %s: part at %d failed (%s); asking for the offset", upload_id, offset, exc)
                    self.sleep(self._backoff(failures - 1))
                    offset = int(self.request("GET", f"/v1/datasets/uploads/{upload_id}").json()["offset"])
                    continue
                if response.status_code == 409 and "upload-offset" in response.headers:
                    offset = int(response.headers["upload-offset"])  # the server has more (or less) than we thought
                    continue
                if response.status_code in RETRY_STATUSES and failures < self.retries:
                    failures += 1
                    self.sleep(self._backoff(failures - 1, response))
                    continue
                raise_for_status(response)
                offset, failures = int(response.json()["offset"]), 0
        digest = _sha256_of(path)
        response = self.request("POST", f"/v1/datasets/uploads/{upload_id}/complete", json={"sha256": digest},
                                idempotent=False)  # fmt: skip
        return Dataset.model_validate(response.json())

    def get_dataset(self, dataset_id: str) -> Dataset:
        return self._get(Dataset, f"/v1/datasets/{dataset_id}")

    def list_datasets(self, *, limit: int = 50, after: str | None = None) -> Page[Dataset]:
        return self._page(Dataset, "/v1/datasets", {"limit": limit, "after": after})

    def delete_dataset(self, dataset_id: str) -> None:
        self.request("DELETE", f"/v1/datasets/{dataset_id}")

    # ------------------------------------------------------------ models

    def upload_model(
        self,
        config: dict[str, Any],
        *,
        weights: str | os.PathLike[str] | None = None,
        discriminator: str | os.PathLike[str] | None = None,
        program: str | os.PathLike[str] | None = None,
        tokenizer: str | os.PathLike[str] | None = None,
        name: str | None = None,
    ) -> Model:
        """Upload safetensors `weights` (+ a GAN's `discriminator`, or a text model's `tokenizer`.json) or a
        `.pt2` `program` with its config."""
        named = (("weights", weights), ("discriminator", discriminator), ("program", program), ("tokenizer", tokenizer))
        parts = {k: Path(v) for k, v in named if v}
        if not parts:
            raise ValueError("give weights or program")
        data = {"config": json.dumps(config)} | ({"name": name} if name else {})
        files: dict[str, tuple[str, BinaryIO, str]] = {}

        def rewound() -> dict[str, Any]:  # a retry sends the files from their start again
            for _, handle, _ in files.values():
                handle.seek(0)
            return {"files": files, "data": data}

        try:
            for part, path in parts.items():  # httpx streams open files in chunks
                files[part] = (path.name, open(path, "rb"), "application/octet-stream")  # noqa: SIM115
            response = self.request("POST", "/v1/models", parts=rewound, idempotent=False)
        finally:
            for _, handle, _ in files.values():
                handle.close()
        return Model.model_validate(response.json())

    def get_model(self, model_id: str) -> Model:
        return self._get(Model, f"/v1/models/{model_id}")

    def list_models(self, *, limit: int = 50, after: str | None = None) -> Page[Model]:
        return self._page(Model, "/v1/models", {"limit": limit, "after": after})

    def delete_model(self, model_id: str) -> None:
        """Gone from the API at once; its files once no unfinished job uses it."""
        self.request("DELETE", f"/v1/models/{model_id}")

    # ------------------------------------------------------------ storage

    def usage(self) -> Usage:
        """Your tenant's stored bytes by kind and its storage quota (None: unlimited)."""
        return self._get(Usage, "/v1/usage")

    # ------------------------------------------------------------ jobs

    def create_job(self, spec: dict[str, Any], *, idempotency_key: str | None = None) -> Job:
        """POST a JobCreate; retried safely under an `Idempotency-Key` (a fresh uuid4 unless given)."""
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        return Job.model_validate(self.request("POST", "/v1/jobs", json=spec, headers=headers, idempotent=True).json())

    def get_job(self, job_id: str) -> Job:
        return self._get(Job, f"/v1/jobs/{job_id}")

    def list_jobs(self, *, status: str | None = None, limit: int = 50, after: str | None = None) -> Page[Job]:
        return self._page(Job, "/v1/jobs", {"status": status, "limit": limit, "after": after})

    def cancel_job(self, job_id: str) -> Job:
        # Not retried after a broken connection: a repeat of a cancel that went through answers 409.
        return Job.model_validate(self.request("POST", f"/v1/jobs/{job_id}/cancel").json())

    def pause_job(self, job_id: str) -> Job:
        """Pause: `paused` at once for a queued job, `pausing` (then `paused`) for a running one."""
        # Retried after a broken connection: a repeated pause answers the same job.
        return Job.model_validate(self.request("POST", f"/v1/jobs/{job_id}/pause", idempotent=True).json())

    def resume_job(self, job_id: str) -> Job:
        """Resume a paused job: queued again, it continues from its newest checkpoint."""
        return Job.model_validate(self.request("POST", f"/v1/jobs/{job_id}/resume", idempotent=True).json())

    def fork_job(self, job_id: str, step: int, *, hyperparameters: dict[str, Any] | None = None, **fields: Any) -> Job:
        """A new job from `job_id`'s checkpoint at `step`: the parent's settings with these overrides."""
        spec = {"from_checkpoint": {"job_id": job_id, "step": step}, "hyperparameters": hyperparameters or {}}
        return self.create_job({**spec, **fields})

    def export_checkpoint(self, job_id: str, step: int) -> Job:
        """Register the model of one checkpoint: returns the export job (`output_model_id` once it succeeds)."""
        response = self.request("POST", f"/v1/jobs/{job_id}/checkpoints/{int(step)}/export")
        return Job.model_validate(response.json())

    def list_checkpoints(self, job_id: str) -> list[Checkpoint]:
        body = self.request("GET", f"/v1/jobs/{job_id}/checkpoints").json()
        return [Checkpoint.model_validate(c) for c in body["data"]]

    def download_checkpoint(self, job_id: str, step: int, dest: str | os.PathLike[str]) -> Path:
        """Stream a checkpoint to `dest`, checked against its sha256 (as `download_artifact`)."""
        return self._download(f"/v1/jobs/{job_id}/checkpoints/{int(step)}", f"checkpoint {step}", dest, None)

    def list_events(self, job_id: str, *, after: int = 0) -> list[Event]:
        """Every event after seq `after` so far (all pages), oldest first."""
        events: list[Event] = []
        cursor: str | None = str(after)
        while cursor is not None:
            body = self.request("GET", f"/v1/jobs/{job_id}/events", params={"after": cursor, "limit": 1000}).json()
            events += [Event(int(e["seq"]), e["type"], e.get("data") or {}) for e in body["data"]]
            cursor = body.get("next_cursor")
        return events

    def metrics(self, job_id: str, *, name: str | None = None) -> list[dict[str, Any]]:
        """The job's whole metric history `[{step, name, value}]`, in the order it was written."""
        points: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            params = {k: v for k, v in (("name", name), ("after", after), ("limit", 10_000)) if v is not None}
            body = self.request("GET", f"/v1/jobs/{job_id}/metrics", params=params).json()
            points += body["data"]
            after = body.get("next_cursor")
            if after is None:
                return points

    def webhook_deliveries(self, job_id: str) -> list[WebhookDelivery]:
        body = self.request("GET", f"/v1/jobs/{job_id}/webhooks").json()
        return [WebhookDelivery.model_validate(d) for d in body["data"]]

    def wait(self, job_id: str, *, timeout: float = 3600.0, poll_s: float = 1.0) -> Job:
        """Poll until the job ends; returns it. TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if job.terminal:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.status} after {timeout:.0f} s")
            self.sleep(poll_s)

    def watch(self, job_id: str, *, after: int = 0, read_timeout: float = 60.0) -> Iterator[Event]:
        """Follow the job's Server-Sent Events until its terminal status event (see `events`)."""
        return self.events(job_id, after=after, read_timeout=read_timeout)

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
                    if response.status_code in RETRY_STATUSES:
                        raise httpx.RemoteProtocolError(f"HTTP {response.status_code}")
                    raise_for_status(response)
                    for field, value in sse_messages(response.iter_lines()):
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
            self.sleep(retry_s)

    # ------------------------------------------------------------ artifacts

    def list_artifacts(self, job_id: str) -> list[ArtifactInfo]:
        body = self.request("GET", f"/v1/jobs/{job_id}/artifacts").json()
        items = body["data"] if isinstance(body, dict) else body
        return [ArtifactInfo(a["name"], int(a["size_bytes"]), a["sha256"], a["content_type"]) for a in items]

    def download_artifact(
        self, job_id: str, name: str, dest: str | os.PathLike[str], *, sha256: str | None = None
    ) -> Path:
        """Stream an artifact to `dest`, checking its sha256 (given, or the server's strong ETag).

        Written as `dest.part`; a connection that breaks mid-body is resumed with `Range` (and
        `If-Range`, so a changed file restarts from zero); renamed only once the hash matches.
        """
        return self._download(f"/v1/jobs/{job_id}/artifacts/{name}", name, dest, sha256)

    def _download(self, url: str, name: str, dest: str | os.PathLike[str], sha256: str | None) -> Path:
        dest = Path(dest)
        part = dest.with_name(dest.name + ".part")
        expected = sha256
        digest = hashlib.sha256()
        written, failures = 0, 0
        try:
            with open(part, "wb") as out:
                while True:
                    headers = {}
                    if written:
                        headers = {"Range": f"bytes={written}-", "If-Range": f'"{expected}"'}
                    try:
                        # follow_redirects: a presigned S3 URL (GANFT_STORE_PRESIGN); httpx drops the
                        # Authorization header for the other origin. The sha256 ETag is the API's.
                        with self._http.stream("GET", url, headers=headers, follow_redirects=True) as rsp:
                            raise_for_status(rsp)
                            first = rsp.history[0] if rsp.history else rsp
                            etag = first.headers.get("ETag", "").removeprefix("W/").strip('"')
                            expected = expected or etag
                            if written and rsp.status_code != 206:  # the server sent the whole file again
                                out.seek(0)
                                out.truncate()
                                digest, written = hashlib.sha256(), 0
                            for chunk in rsp.iter_bytes():  # as received: a break loses no bytes
                                out.write(chunk)
                                digest.update(chunk)
                                written += len(chunk)
                        break
                    except (httpx.TransportError, httpx.StreamError) as exc:
                        failures += 1
                        if failures >= STREAM_RETRIES or not expected:
                            raise
                        log.info("download of %s broke after %d bytes (%s); resuming", name, written, exc)
                        self.sleep(self._backoff(failures - 1))
            if not expected:
                raise ChecksumError(f"{name}: the server sent no sha256 to check the download against")
            if digest.hexdigest() != expected:
                raise ChecksumError(f"{name}: sha256 {digest.hexdigest()} does not match {expected}")
            os.replace(part, dest)
        finally:
            part.unlink(missing_ok=True)
        return dest


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    for chunk in _file_chunks(path):
        digest.update(chunk)
    return digest.hexdigest()


def _file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            yield chunk
