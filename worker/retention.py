"""The garbage collector's periodic run on a worker node (ganft/retention.py `collect`).

The sweeper thread (worker/sweeper.py) calls `collect_if_due` on every pass; at most once every
`gc_interval_s` it starts one pass in a thread of its own, so a long listing of a big S3 store
never holds up the reaping of expired leases. Every worker node does this: passes on several
nodes at once are harmless (each only deletes what nothing references).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

from ganft.retention import collect
from ganft.settings import Settings

log = logging.getLogger(__name__)

_lock = threading.Lock()
_last_start = -math.inf
_running: threading.Thread | None = None


def collect_if_due(settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> threading.Thread | None:
    """Start a garbage-collection pass when the last one began `gc_interval_s` ago or more and none is
    running; returns its thread (None when not due)."""
    global _last_start, _running
    with _lock:
        now = clock()
        if now - _last_start < settings.gc_interval_s or (_running is not None and _running.is_alive()):
            return None
        _last_start = now
        _running = threading.Thread(target=_run, args=(settings,), name="ganft-gc", daemon=True)
        _running.start()
        return _running


def _run(settings: Settings) -> None:
    try:
        collect(settings)
    except Exception:  # the DB or the store is down: the next due pass tries again
        log.exception("garbage collection failed; next try in %.0f s", settings.gc_interval_s)
