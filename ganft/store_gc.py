"""Storage usage and the orphan sweep for the artifact store (issue 12, first part).

The store lays objects out under one folder per owner: `datasets/<id>/...`, `models/<id>/...`
and `jobs/<id>/...`. `usage_by_kind` adds up stored bytes per kind; `sweep_orphans` deletes the
folders of owners that no longer exist (no row in the database), idempotently.

Safety: a folder is deleted only when its owner id is absent from `live_ids` AND nothing in it
was written within `grace_s` seconds (an upload in flight writes its files before its row is
committed). Ids in `live_ids` are never touched. Only `file://` stores are implemented here;
S3 stores and the retention policies (checkpoints of finished jobs, picture versions) are not.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Set
from dataclasses import dataclass, field
from pathlib import Path

from ganft.store import FileStore, validate_key

KINDS = ("datasets", "models", "jobs")


def _files(folder: Path) -> Iterator[Path]:
    for path in folder.rglob("*"):
        if path.is_file():
            yield path


def usage_by_kind(store: FileStore, owners: Mapping[str, Set[str]] | None = None) -> dict[str, int]:
    """Stored bytes per kind; with `owners` ({kind: ids}), only the folders of those ids count."""
    usage: dict[str, int] = {}
    for kind in KINDS:
        total = 0
        base = store.root / kind
        if base.is_dir():
            for owner in base.iterdir():
                if owners is not None and owner.name not in owners.get(kind, set()):
                    continue
                total += sum(p.stat().st_size for p in _files(owner)) if owner.is_dir() else owner.stat().st_size
        usage[kind] = total
    return usage


@dataclass
class SweepReport:
    deleted: list[str] = field(default_factory=list)  # keys of the owner folders removed
    freed_bytes: int = 0
    kept_recent: list[str] = field(default_factory=list)  # orphans inside the grace period


def _newest_mtime(owner: Path) -> float:
    times = (
        [owner.stat().st_mtime] + [p.stat().st_mtime for p in _files(owner)]
        if owner.is_dir()
        else [owner.stat().st_mtime]
    )
    return max(times)


def sweep_orphans(
    store: FileStore,
    live_ids: Mapping[str, Set[str]],
    *,
    grace_s: float = 3600.0,
    now: float | None = None,
    dry_run: bool = False,
) -> SweepReport:
    """Delete owner folders whose id is not in `live_ids[kind]` and that are older than `grace_s`.

    Running it twice deletes nothing more the second time. A kind missing from `live_ids` is
    skipped entirely (an unknown reference set is never read as "nothing referenced").
    """
    now = time.time() if now is None else now
    report = SweepReport()
    for kind in KINDS:
        if kind not in live_ids:
            continue
        base = store.root / kind
        if not base.is_dir():
            continue
        live = live_ids[kind]
        for owner in sorted(base.iterdir()):
            if owner.name in live or owner.name.startswith("."):
                continue
            key = validate_key(f"{kind}/{owner.name}")
            if now - _newest_mtime(owner) < grace_s:
                report.kept_recent.append(key)
                continue
            size = sum(p.stat().st_size for p in _files(owner)) if owner.is_dir() else owner.stat().st_size
            if not dry_run:
                store.delete_prefix(key)
            report.deleted.append(key)
            report.freed_bytes += size
    return report
