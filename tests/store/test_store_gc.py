"""The orphan sweep and usage counts on a real file store and a real S3 server, with an injected clock."""

from __future__ import annotations

import time

from ganft.store import Store
from ganft.store_gc import sweep_orphans, usage_by_kind


def _store(store: Store) -> Store:
    store.put_bytes("datasets/ds_live/data", b"a" * 10)
    store.put_bytes("datasets/ds_gone/data", b"b" * 20)
    store.put_bytes("models/mdl_live/model.json", b"c" * 5)
    store.put_bytes("jobs/job_live/checkpoints/ckpt-1.pt", b"d" * 7)
    store.put_bytes("jobs/job_gone/artifacts/model.pt2", b"e" * 30)
    return store


LIVE = {"datasets": {"ds_live"}, "models": {"mdl_live"}, "jobs": {"job_live"}}


def test_usage_by_kind_counts_bytes_per_kind_and_per_owner_set(store: Store) -> None:
    store = _store(store)
    assert usage_by_kind(store) == {"datasets": 30, "models": 5, "jobs": 37}
    assert usage_by_kind(store, LIVE) == {"datasets": 10, "models": 5, "jobs": 7}


def test_sweep_deletes_only_unreferenced_old_folders_and_is_idempotent(store: Store) -> None:
    store = _store(store)
    later = time.time() + 7200
    report = sweep_orphans(store, LIVE, grace_s=3600, now=later)
    assert sorted(report.deleted) == ["datasets/ds_gone", "jobs/job_gone"]
    assert report.freed_bytes == 50
    for key in ("datasets/ds_live/data", "models/mdl_live/model.json", "jobs/job_live/checkpoints/ckpt-1.pt"):
        assert store.exists(key), key  # referenced: never deleted
    assert not store.exists("datasets/ds_gone/data")
    again = sweep_orphans(store, LIVE, grace_s=3600, now=later)
    assert again.deleted == [] and again.freed_bytes == 0


def test_sweep_keeps_recent_orphans_and_skips_kinds_without_a_reference_set(store: Store) -> None:
    store = _store(store)
    recent = sweep_orphans(store, LIVE, grace_s=3600, now=time.time())
    assert recent.deleted == [] and sorted(recent.kept_recent) == ["datasets/ds_gone", "jobs/job_gone"]
    partial = sweep_orphans(store, {"datasets": {"ds_live"}}, grace_s=0, now=time.time() + 10)
    assert partial.deleted == ["datasets/ds_gone"]
    assert store.exists("jobs/job_gone/artifacts/model.pt2")  # "jobs" unknown: left alone


def test_dry_run_reports_without_deleting(store: Store) -> None:
    store = _store(store)
    report = sweep_orphans(store, LIVE, grace_s=0, now=time.time() + 10, dry_run=True)
    assert sorted(report.deleted) == ["datasets/ds_gone", "jobs/job_gone"]
    assert store.exists("datasets/ds_gone/data") and store.exists("jobs/job_gone/artifacts/model.pt2")
