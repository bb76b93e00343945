"""The workers' periodic garbage collection (worker/retention.py): at most one pass per GANFT_GC_INTERVAL_S."""

from __future__ import annotations

import math
import os
import time

import pytest

from ganft.db.tables import new_id
from ganft.settings import Settings
from ganft.store import open_store
from worker import retention


def test_collect_if_due_runs_one_pass_per_interval(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retention, "_last_start", -math.inf)
    settings = settings.model_copy(update={"gc_interval_s": 60.0})
    store = open_store(settings.store_url)
    key = f"jobs/{new_id('job')}/artifacts/x.bin"  # a folder of a job that has no row
    store.put_bytes(key, b"x")
    old = time.time() - 2 * settings.gc_grace_s
    for path in (store.local_path(key), store.local_path(key).parent, store.local_path(key).parent.parent):
        os.utime(path, (old, old))
    now = [1000.0]
    first = retention.collect_if_due(settings, clock=lambda: now[0])
    assert first is not None
    first.join(timeout=60)
    assert not store.exists(key)
    now[0] += 59.0
    assert retention.collect_if_due(settings, clock=lambda: now[0]) is None  # not due yet
    now[0] += 2.0
    second = retention.collect_if_due(settings, clock=lambda: now[0])
    assert second is not None
    second.join(timeout=60)
