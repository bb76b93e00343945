"""End to end: a real worker trains a job while a real SSE client watches it through a real API server.

The stream must deliver every event the worker commits, in order, and end after `succeeded`. Along
the way the test measures how long the trainer's reports take to reach the client and prints the
figures (docs/CONTRACTS.md quotes them); it does not assert on them (the latency contract has its own
test, tests/api/test_sse_latency.py). Two clocks are read on this one host:
- trainer -> client: the trainer appends a line to its run folder's `metrics.jsonl` right before it
  reports the same step or evaluation through its progress hook; a thread here notes when each line
  appears (polling every few ms), and the client notes when the matching event arrives;
- commit -> client: the event's `created_at` (set by the worker as it writes the event) against the
  client's wall clock.
Progress is coalesced (one write per `progress_interval_s`), so for steps two figures are printed: the
delay of the step a progress event carries, and for every reported step the delay until the client
has a progress event at or past it.
Worker and API run with the production intervals (`progress_interval_s`, `sse_poll_interval_s`).
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from ganft.settings import Settings
from ganft.store import Store
from tests.worker.helpers import WorkerProcess, job_events, make_job
from tests.worker.test_worker_process import _send

HP = {"steps": 600, "log_every": 10, "eval_every": 100, "checkpoint_every": 100_000, "batch_size": 32}
LINE_POLL_S = 0.003  # how often the metrics.jsonl watcher looks for new lines


class LineWatcher(threading.Thread):
    """Notes when each line of a run folder's metrics.jsonl appeared: (event, step) -> wall time."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.seen: dict[tuple[str, int], float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        offset, partial = 0, b""
        while not self.stop.is_set():
            try:
                with open(self.path, "rb") as f:
                    f.seek(offset)
                    chunk = f.read()
            except FileNotFoundError:  # not written yet, or the run folder is gone (the job ended)
                chunk = b""
            now = time.time()
            if chunk:
                offset += len(chunk)
                *lines, partial = (partial + chunk).split(b"\n")
                for line in lines:
                    record = json.loads(line)
                    self.seen.setdefault((record["event"], int(record["step"])), now)
            time.sleep(LINE_POLL_S)


def _stream(url: str, headers: dict[str, str], received: list[dict[str, Any]], connected: threading.Event) -> None:
    with (
        httpx.Client(timeout=120) as http,
        http.stream("GET", url, headers={**headers, "Accept": "text/event-stream"}) as response,
    ):
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                received.append({**json.loads(line[len("data: ") :]), "received_at": time.time()})
                connected.set()


def _summary(name: str, values: list[float]) -> str:
    if not values:
        return f"{name}: none"
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"{name}: n={len(values)} median {statistics.median(values):.3f} s, p90 {p90:.3f} s, max {ordered[-1]:.3f} s"


def test_a_real_job_streams_every_event_to_a_connected_client(
    engine: Any,
    store: Store,
    settings: Settings,
    start_worker: WorkerProcess.Factory,
    make_live_server: Callable[..., str],
    make_key: Callable[[str], str],
) -> None:
    defaults = Settings.model_fields
    job_id = make_job(engine, store, hyperparameters=HP)
    headers = {"Authorization": f"Bearer {make_key('worker-tests')}"}  # make_job's tenant
    base = make_live_server(sse_poll_interval_s=defaults["sse_poll_interval_s"].default)
    watcher = LineWatcher(settings.data_dir.resolve() / "runs" / job_id / "out" / "metrics.jsonl")
    watcher.start()
    received: list[dict[str, Any]] = []
    connected = threading.Event()
    client = threading.Thread(
        target=_stream, args=(f"{base}/v1/jobs/{job_id}/events", headers, received, connected), daemon=True
    )
    client.start()
    assert connected.wait(20), "the stream did not start"
    worker = start_worker(GANFT_PROGRESS_INTERVAL_S=str(defaults["progress_interval_s"].default))
    _send(job_id)
    client.join(timeout=300)  # the stream ends by itself after the terminal event
    watcher.stop.set()
    assert not client.is_alive(), f"the stream did not end\n{worker.logs()}"

    # Every committed event, in order, and nothing else; the last one is `succeeded`.
    stored = job_events(engine, job_id)
    assert [(e["seq"], e["type"], e["data"]) for e in received] == stored, worker.logs()
    assert received[-1]["data"]["status"] == "succeeded"
    evaluations = [e for e in received if e["type"] == "evaluation"]
    assert [e["data"]["step"] for e in evaluations] == [100, 200, 300, 400, 500, 600]

    # Figures (printed, not asserted).
    committed = [e["received_at"] - dt.datetime.fromisoformat(e["created_at"]).timestamp() for e in received[1:]]
    from_trainer: dict[str, list[float]] = {"evaluation": [], "progress": []}
    for event in received:
        line = {"evaluation": "evaluation", "progress": "step"}.get(event["type"])
        reported = watcher.seen.get((line, int(event["data"].get("step", -1)))) if line else None
        if reported is not None:
            from_trainer[event["type"]].append(event["received_at"] - reported)
    # How stale the client's progress is: for each step the trainer reported, the time until the client
    # had a progress event at or past it (coalesced steps wait for the next progress write).
    progress = [(e["data"]["step"], e["received_at"]) for e in received if e["type"] == "progress"]
    stale = [
        next(at for step, at in progress if step >= reported_step) - reported_at
        for (line, reported_step), reported_at in watcher.seen.items()
        if line == "step" and any(step >= reported_step for step, _ in progress)
    ]
    print()
    print(_summary("commit -> client, every event", committed))
    print(_summary("trainer -> client, evaluation", from_trainer["evaluation"]))
    print(_summary("trainer -> client, the progress event of the step reported", from_trainer["progress"]))
    print(_summary("trainer -> client, any step until a progress event covers it", stale))
    assert from_trainer["evaluation"], "no evaluation line was matched to its event"
