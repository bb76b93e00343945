"""Streaming uploads: request body -> artifact store, hashed and counted, never all in memory.

Multipart bodies are parsed incrementally with python-multipart's push parser; file parts go
straight to atomic store writers (in a threadpool, so disk writes never block the event
loop), small text parts are kept. The body is counted as it arrives: more than `max_bytes`
is a 413 at once, whether or not the client sent a Content-Length (chunked bodies). Files
become visible in the store only when the whole body arrived intact. An `UploadLimit` says which
limit binds (GANFT_MAX_UPLOAD_BYTES or what is left of the tenant's storage quota, api/quota.py)
and the problem that exceeding it answers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field

from fastapi import Request
from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header
from starlette.concurrency import run_in_threadpool

from api.problems import Problem, invalid
from ganft.store import Store, Writer

WRITE_BUFFER_BYTES = 1024 * 1024  # gather this much before one threadpool hop to disk
MAX_PARTS = 16


@dataclass(frozen=True)
class ReceivedFile:
    field: str
    filename: str | None
    key: str  # where it is in the store now
    size: int
    sha256: str


@dataclass
class Received:
    fields: dict[str, str] = field(default_factory=dict)  # small text parts
    files: dict[str, ReceivedFile] = field(default_factory=dict)


def too_large(max_bytes: int) -> Problem:
    return Problem(413, f"the upload exceeds the limit of {max_bytes} bytes (GANFT_MAX_UPLOAD_BYTES)")


@dataclass(frozen=True)
class UploadLimit:
    """At most `max_bytes` of body; more answers `problem()` (a 413)."""

    max_bytes: int
    problem: Callable[[], Problem]

    @classmethod
    def of(cls, max_bytes: int) -> UploadLimit:
        """The plain GANFT_MAX_UPLOAD_BYTES limit."""
        return cls(max_bytes, lambda: too_large(max_bytes))


def _limit(limit: int | UploadLimit) -> UploadLimit:
    return limit if isinstance(limit, UploadLimit) else UploadLimit.of(limit)


def check_declared_length(request: Request, max_bytes: int | UploadLimit) -> None:
    """413 before reading anything when Content-Length already says the body is too big."""
    limit = _limit(max_bytes)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit.max_bytes:
        raise limit.problem()


async def _body(request: Request, max_bytes: int | UploadLimit) -> AsyncIterator[bytes]:
    """The request body in chunks, 413 as soon as more than the limit arrived."""
    limit = _limit(max_bytes)
    check_declared_length(request, limit)
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit.max_bytes:
            raise limit.problem()
        if chunk:
            yield chunk


class _BufferedWriter:
    """A store Writer fed from async code: gathers chunks, then writes them in one threadpool hop.

    The chunks are kept as they came (no copy into a buffer and out again): receiving is CPU-bound,
    and those two copies of every byte cost a third of the API's CPU time of an upload (with them:
    ~250 MB/s on loopback, without: ~300-390; bench/RESULTS.md, "service: transfers").
    """

    def __init__(self, writer: Writer) -> None:
        self.writer = writer
        self._chunks: list[bytes] = []
        self._pending = 0  # bytes in _chunks

    async def write(self, data: bytes) -> None:
        self._chunks.append(data)
        self._pending += len(data)
        if self._pending >= WRITE_BUFFER_BYTES:
            await self.flush()

    async def flush(self) -> None:
        if self._chunks:
            chunks, self._chunks, self._pending = self._chunks, [], 0
            await run_in_threadpool(self._write_all, chunks)

    def _write_all(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self.writer.write(chunk)


async def receive_raw(request: Request, *, store: Store, key: str, max_bytes: int | UploadLimit) -> ReceivedFile:
    """Store the whole request body under `key`."""
    writer = _BufferedWriter(await run_in_threadpool(store.open_write, key))
    try:
        async for chunk in _body(request, max_bytes):
            await writer.write(chunk)
        await writer.flush()
        size, sha256 = await run_in_threadpool(writer.writer.commit)
    finally:
        await run_in_threadpool(writer.writer.abort)
    return ReceivedFile(field="body", filename=None, key=key, size=size, sha256=sha256)


class _PartEvents:
    """Collects python-multipart callbacks; the async side consumes them after each write."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[str, bytes] = {}
        self.finished = False

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: self._header_field.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._header_value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": lambda: self.events.append(("begin", dict(self._headers))),
            "on_part_data": lambda data, start, end: self.events.append(("data", bytes(data[start:end]))),
            "on_part_end": lambda: self.events.append(("end", None)),
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._headers = {}

    def _header_end(self) -> None:
        self._headers[self._header_field.decode("latin-1").lower()] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def _end(self) -> None:
        self.finished = True


def _part_name(headers: dict[str, bytes]) -> tuple[str, str | None]:
    disposition, options = parse_options_header(headers.get("content-disposition", b""))
    name = options.get(b"name")
    if disposition != b"form-data" or name is None:
        raise Problem(400, "malformed multipart body: a part has no form-data name")
    filename = options.get(b"filename")
    return name.decode("utf-8", "replace"), filename.decode("utf-8", "replace") if filename is not None else None


class _Parts:
    """Routes each part of a multipart body: file parts to store writers, text parts to memory."""

    def __init__(
        self, store: Store, file_keys: Mapping[str, str], text_fields: frozenset[str], max_text_bytes: int
    ) -> None:
        self.store = store
        self.file_keys = file_keys
        self.text_fields = text_fields
        self.max_text_bytes = max_text_bytes
        self.writers: dict[str, _BufferedWriter] = {}
        self.filenames: dict[str, str | None] = {}
        self.fields: dict[str, str] = {}
        self.current: str | None = None
        self.text = bytearray()

    async def begin(self, headers: dict[str, bytes]) -> None:
        name, filename = _part_name(headers)
        if len(self.filenames) >= MAX_PARTS or name in self.filenames:
            raise invalid(name, "repeated field, or too many parts")
        if name in self.file_keys:
            self.writers[name] = _BufferedWriter(await run_in_threadpool(self.store.open_write, self.file_keys[name]))
        elif name not in self.text_fields:
            allowed = sorted(set(self.file_keys) | self.text_fields)
            raise invalid(name, f"unknown form field; expected {', '.join(allowed)}")
        self.filenames[name] = filename
        self.current = name
        self.text.clear()

    async def data(self, payload: bytes) -> None:
        if self.current is None:
            return
        if self.current in self.writers:
            await self.writers[self.current].write(payload)
            return
        self.text += payload
        if len(self.text) > self.max_text_bytes:
            raise invalid(self.current, f"longer than {self.max_text_bytes} bytes")

    def end(self) -> None:
        if self.current is not None and self.current not in self.writers:
            try:
                self.fields[self.current] = self.text.decode("utf-8")
            except UnicodeDecodeError:
                raise invalid(self.current, "not UTF-8 text") from None
        self.current = None

    async def commit(self) -> Received:
        received = Received(fields=self.fields)
        for name, writer in self.writers.items():
            await writer.flush()
            size, sha256 = await run_in_threadpool(writer.writer.commit)
            received.files[name] = ReceivedFile(
                field=name, filename=self.filenames[name], key=self.file_keys[name], size=size, sha256=sha256
            )
        return received

    async def abort(self) -> None:
        for writer in self.writers.values():
            await run_in_threadpool(writer.writer.abort)  # a no-op after commit


async def receive_multipart(
    request: Request,
    *,
    store: Store,
    file_keys: Mapping[str, str],
    text_fields: frozenset[str],
    max_bytes: int | UploadLimit,
    max_text_bytes: int,
) -> Received:
    """Parse a multipart/form-data body: parts named in `file_keys` stream to those store keys,
    parts in `text_fields` are kept as text (at most `max_text_bytes` each); any other part is a 422."""
    _, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if not boundary:
        raise Problem(400, "multipart body without a boundary in Content-Type")
    events = _PartEvents()
    parser = MultipartParser(boundary, events.callbacks())  # type: ignore[arg-type]
    parts = _Parts(store, file_keys, text_fields, max_text_bytes)
    try:
        async for chunk in _body(request, max_bytes):
            try:
                parser.write(chunk)
            except MultipartParseError as exc:
                raise Problem(400, f"malformed multipart body: {exc}") from None
            # The parser's callbacks only recorded what happened; act on it here, where we can await.
            for kind, payload in events.events:
                if kind == "begin":
                    await parts.begin(payload)  # type: ignore[arg-type]
                elif kind == "data":
                    await parts.data(payload)  # type: ignore[arg-type]
                else:
                    parts.end()
            events.events.clear()
        parser.finalize()
        if not events.finished:
            raise Problem(400, "truncated multipart body: the closing boundary never came")
        return await parts.commit()
    finally:
        await parts.abort()
