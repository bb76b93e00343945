"""Server-Sent Events parsing for ganft's client (the `text/event-stream` of /v1/jobs/{id}/events)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from ganft.client_types import Event


def sse_messages(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
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
