"""Downloads of stored files with caching and resumption (RFC 9110 §13-14).

`ETag` is the quoted sha256 of the file (strong: the bytes are immutable once stored);
`If-None-Match` answers 304; a single `Range: bytes=a-b` (also `a-` and `-n`) answers 206
with `Content-Range`, an unsatisfiable one 416. Several ranges are answered with the whole
file (allowed by the RFC; no multipart/byteranges). `If-Range` with another validator
falls back to the whole file. The bytes are read in a threadpool, never on the event loop.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.responses import StreamingResponse

from api.problems import Problem
from ganft.store import Store

# Each chunk is one threadpool hop and one ASGI message: 1 MiB halves the API's CPU per byte against
# 256 KiB and lifts a loopback download from ~0.4-0.7 to ~0.6-1.2 GB/s (bench/RESULTS.md, "service: transfers").
READ_CHUNK_BYTES = 1024 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(start, end exclusive) of a single byte range; None to serve the whole file.

    Raises Problem(416) when the range cannot be satisfied by a file of `size` bytes.
    """
    spec = header.strip()
    if "," in spec:
        return None
    match = _RANGE.match(spec.replace(" ", ""))
    if match is None or match.groups() == ("", ""):
        return None  # not a byte range we understand: ignore it, as the RFC allows
    first, last = match.groups()
    if first == "":  # suffix: the last n bytes
        n = int(last)
        if n == 0 or size == 0:
            raise _unsatisfiable(size)
        return max(0, size - n), size
    start = int(first)
    end = size if last == "" else min(int(last) + 1, size)
    if start >= size or start >= end:
        raise _unsatisfiable(size)
    return start, end


def _unsatisfiable(size: int) -> Problem:
    return Problem(
        416, f"range not satisfiable: the file has {size} bytes", headers={"Content-Range": f"bytes */{size}"}
    )


def _etag_matches(header: str, etag: str) -> bool:
    candidates = [c.strip().removeprefix("W/") for c in header.split(",")]
    return "*" in candidates or etag in candidates


def stored_file_response(
    request: Request,
    *,
    store: Store,
    key: str,
    size: int,
    sha256: str,
    content_type: str,
    filename: str,
) -> Response:
    etag = f'"{sha256}"'
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Cache-Control": "private, max-age=0, must-revalidate",
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename)}",
    }
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None and _etag_matches(if_none_match, etag):
        return Response(status_code=304, headers={k: v for k, v in headers.items() if k != "Content-Disposition"})
    byte_range = None
    range_header = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if range_header is not None and (if_range is None or if_range.strip() == etag):
        byte_range = parse_range(range_header, size)
    start, end = byte_range if byte_range is not None else (0, size)
    if not store.exists(key):
        raise Problem(404, f"the file behind {filename!r} is missing from the artifact store")
    settings = request.app.state.settings
    presign = getattr(store, "presign_get", None)  # S3 stores only
    if settings.store_presign and presign is not None:
        # The bytes come from S3 directly; ETag (the sha256) stays here for the client to verify.
        headers["Location"] = presign(key, settings.store_presign_expires_s)
        del headers["Content-Disposition"]
        return Response(status_code=307, headers=headers)
    headers["Content-Length"] = str(end - start)
    status = 200
    if byte_range is not None:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    return StreamingResponse(
        _chunks(store, key, start, end), status_code=status, headers=headers, media_type=content_type
    )


def _chunks(store: Store, key: str, start: int, end: int) -> Iterator[bytes]:
    # A sync iterator: Starlette runs it in its threadpool, one chunk at a time.
    with store.open_read(key, start, end) as reader:
        while chunk := reader.read(READ_CHUNK_BYTES):
            yield chunk
