"""Throttled progress recording: the trainer reports as often as it likes, the DB sees at most
one progress write per `interval_s` (DESIGN.md "Performance": the service costs < 5% over the bare core).

Nothing is dropped: every metric point and every evaluation/log event is buffered and goes
into the next write; only the job's `step` and the `progress` event are coalesced to the
latest value. A write is one transaction (ganft/repo/lifecycle.py `record_progress`).

Steps alone wait for the interval. A buffered evaluation or log event is written at once (at most
one write per `EVENT_GAP_S`, for a trainer that evaluates every step): those are what a watching
user waits for, and they are rare. Checkpoint, artifact and status events never pass through here;
the supervisor writes them as they happen (worker/runner.py).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ganft.repo.lifecycle import EventRecord, MetricPoint

EVENT_GAP_S = 0.1  # the shortest time between two writes when the batch holds an event (evaluation, log)


@dataclass
class ProgressBatch:
    """What one write carries."""

    step: int
    total_steps: int
    steps_per_second: float | None
    metrics: list[MetricPoint] = field(default_factory=list)
    events: list[EventRecord] = field(default_factory=list)


# Writes the batch; returns the job's status, or None when the job is no longer this worker's.
WriteFn = Callable[[ProgressBatch], str | None]


def finite_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numeric scalars of a metrics dict (JSON and the metrics table take no NaN/inf)."""
    out: dict[str, float] = {}
    for name, value in metrics.items():
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out[name] = float(value)
    return out


def json_safe(value: Any) -> Any:
    """`value` with NaN/inf replaced by None (Postgres JSONB, like strict JSON, has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


class ProgressRecorder:
    """Buffers the child's `ProgressUpdate`s (as dicts) and writes them at most once per `interval_s`."""

    def __init__(self, write: WriteFn, *, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._write = write
        self._interval_s = interval_s
        self._clock = clock
        self._last_write = -math.inf
        self._batch: ProgressBatch | None = None
        self._latest: dict[str, float] = {}
        self._rate_origin: tuple[float, int] | None = None  # (time, step) of the first step seen in this phase
        self.writes = 0

    @property
    def pending(self) -> bool:
        return self._batch is not None

    def add(self, update: dict[str, Any]) -> None:
        """Buffer one update: kind step | evaluation | log | checkpoint | artifact."""
        kind, step, total = update["kind"], int(update["step"]), int(update["total_steps"])
        metrics = finite_metrics(update.get("metrics") or {})
        batch = self._batch or ProgressBatch(step=step, total_steps=total, steps_per_second=None)
        batch.step, batch.total_steps = step, total
        batch.steps_per_second = self._rate(step)
        if kind in ("step", "evaluation") and metrics:
            batch.metrics.extend(MetricPoint(step=step, name=n, value=v) for n, v in metrics.items())
            self._latest.update(metrics)
        if kind == "evaluation":
            batch.events.append(EventRecord("evaluation", {"step": step, "total_steps": total, "metrics": metrics}))
        if update.get("message"):
            batch.events.append(EventRecord("log", {"step": step, "kind": kind, "message": update["message"]}))
        self._batch = batch

    def _rate(self, step: int) -> float | None:
        """Steps per second since the first step of this phase (a phase restarts when step goes back)."""
        now = self._clock()
        if self._rate_origin is None or step < self._rate_origin[1]:
            self._rate_origin = (now, step)
            return None
        t0, s0 = self._rate_origin
        return (step - s0) / (now - t0) if now > t0 and step > s0 else None

    def due(self) -> bool:
        """Something is buffered and its wait is over: `interval_s` for steps, `EVENT_GAP_S` for events."""
        if self._batch is None:
            return False
        wait = min(self._interval_s, EVENT_GAP_S) if self._batch.events else self._interval_s
        return self._clock() - self._last_write >= wait

    def flush(self) -> str | None:
        """Write what is buffered (call when `pending`); the job's status, or None when the job was lost."""
        batch = self._batch
        if batch is None:
            raise RuntimeError("nothing to flush")
        progress = EventRecord(
            "progress",
            {
                "step": batch.step,
                "total_steps": batch.total_steps,
                "steps_per_second": batch.steps_per_second,
                "metrics": dict(self._latest),
            },
        )
        self._last_write = self._clock()
        self.writes += 1
        # On an exception (DB down) the batch stays buffered for the next try.
        status = self._write(dataclasses.replace(batch, events=[*batch.events, progress]))
        self._batch = None
        return status
