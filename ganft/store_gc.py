"""Storage usage and the sweeps of the artifact store, `file://` and `s3://` alike.

The store lays objects out under one folder per owner: `datasets/<id>/...`, `models/<id>/...`
and `jobs/<id>/...`. `usage_by_kind` adds up stored bytes per kind; `sweep_orphans` deletes the
folders of owners that no longer exist (no row in the database), idempotently;
`sweep_unreferenced` deletes the objects of a folder that no row references (the garbage
collector, ganft/retention.py, decides what is referenced).

Safety: a folder is deleted only when its owner id is absent from `live_ids` AND nothing in it
was written within `grace_s` seconds (an upload in flight writes its files before its row is
committed; on S3 an object's time is its last modification, an open multipart upload is not
listed at all and is aborted by `S3Store.abort_stale_uploads`). Ids in `live_ids` are never
touched; neither is a referenced key, an object under a referenced folder, a hidden temporary
file of a write in progress (file://), or an object younger than `grace_s`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field

from ganft.store import FileStore, Store, validate_key

KINDS = ("datasets", "models", "jobs")


@dataclass
class Owner:
    bytes: int = 0  # stored bytes under the owner's folder
    newest: float = 0.0  # newest modification time in it, unix seconds


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int  # bytes
    mtime: float  # last modification, unix seconds


def list_objects(store: Store, prefix: str) -> list[StoredObject]:
    """Every object under the folder-like key `prefix`, for either store. On file:// the hidden
    temporary files of writes in progress (`.name.tmp-...`) are left out."""
    if isinstance(store, FileStore):
        base = store.root / validate_key(prefix)
        if not base.is_dir():
            return []
        found = []
        for path in base.rglob("*"):
            rel = path.relative_to(store.root).as_posix()
            if any(part.startswith(".") for part in rel.split("/")) or not path.is_file():
                continue
            try:
                st = path.stat()
            except FileNotFoundError:  # removed meanwhile
                continue
            found.append(StoredObject(rel, st.st_size, st.st_mtime))
        return found
    return [StoredObject(key, size, mtime) for key, size, mtime in store.list_objects(prefix)]


def _owners(store: Store, kind: str) -> dict[str, Owner]:
    """The owner folders under `kind/`, with their bytes and newest modification time."""
    owners: dict[str, Owner] = {}
    if isinstance(store, FileStore):
        base = store.root / kind
        if not base.is_dir():
            return owners
        for folder in base.iterdir():
            if folder.name.startswith("."):
                continue
            paths = [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else [folder]
            stats = [p.stat() for p in paths]
            owners[folder.name] = Owner(
                sum(st.st_size for st in stats), max([folder.stat().st_mtime] + [st.st_mtime for st in stats])
            )
        return owners
    for key, size, mtime in store.list_objects(kind):
        parts = key.split("/")
        if len(parts) < 3:  # an object directly under kind/: not an owner folder
            continue
        owner = owners.setdefault(parts[1], Owner())
        owner.bytes += size
        owner.newest = max(owner.newest, mtime)
    return owners


def usage_by_kind(store: Store, owners: Mapping[str, Set[str]] | None = None) -> dict[str, int]:
    """Stored bytes per kind; with `owners` ({kind: ids}), only the folders of those ids count."""
    usage: dict[str, int] = {}
    for kind in KINDS:
        usage[kind] = sum(
            o.bytes for name, o in _owners(store, kind).items() if owners is None or name in owners.get(kind, set())
        )
    return usage


@dataclass
class SweepReport:
    deleted: list[str] = field(default_factory=list)  # keys of the owner folders removed
    freed_bytes: int = 0
    kept_recent: list[str] = field(default_factory=list)  # orphans inside the grace period


def sweep_orphans(
    store: Store,
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
        live = live_ids[kind]
        for name, owner in sorted(_owners(store, kind).items()):
            if name in live:
                continue
            key = validate_key(f"{kind}/{name}")
            if now - owner.newest < grace_s:
                report.kept_recent.append(key)
                continue
            if not dry_run:
                store.delete_prefix(key)
            report.deleted.append(key)
            report.freed_bytes += owner.bytes
    return report


def _covered(key: str, prefixes: Set[str]) -> bool:
    """True when a folder-like ancestor of `key` is in `prefixes`."""
    parts = key.split("/")
    return any("/".join(parts[:n]) in prefixes for n in range(1, len(parts)))


def sweep_unreferenced(
    store: Store,
    objects: Iterable[StoredObject],
    *,
    keys: Set[str],
    prefixes: Set[str] = frozenset(),
    grace_s: float = 3600.0,
    now: float | None = None,
    dry_run: bool = False,
) -> SweepReport:
    """Delete each of `objects` that is not in `keys`, under none of `prefixes` and older than `grace_s`.

    Idempotent: what it deleted is not listed again. On file:// a folder it empties is removed too.
    """
    now = time.time() if now is None else now
    report = SweepReport()
    for obj in sorted(objects, key=lambda o: o.key):
        if obj.key in keys or _covered(obj.key, prefixes):
            continue
        if now - obj.mtime < grace_s:
            report.kept_recent.append(obj.key)
            continue
        if not dry_run:
            store.delete(obj.key)
            if isinstance(store, FileStore):
                _remove_empty_parents(store, obj.key)
        report.deleted.append(obj.key)
        report.freed_bytes += obj.size
    return report


def _remove_empty_parents(store: FileStore, key: str) -> None:
    folder = store.local_path(key).parent
    for _ in range(key.count("/") - 1):  # up to, not including, the owner folder's parent (jobs/)
        try:
            folder.rmdir()
        except OSError:  # not empty (or gone): stop
            return
        folder = folder.parent
