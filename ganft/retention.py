"""The garbage collector: retention policies, then one mark-and-sweep of the artifact store.

    report = collect(settings)                 # what the workers' sweeper runs every GANFT_GC_INTERVAL_S
    report = collect(settings, dry_run=True)   # `ganft admin gc --dry-run`: what would go, nothing changes

1. The policies (GANFT_RETAIN_*) drop rows of finished jobs: their checkpoints after N days or all
   but the newest, their artifacts after N days unless the output model is in use
   (ganft/repo/retention.py). Committed before any file is touched.
2. The references are read: everything a row still points at (ganft/repo/retention.py `references`).
3. The store is listed and every object that nothing references, and that is older than
   GANFT_GC_GRACE_S, is deleted (ganft/store_gc.py): the folders of deleted datasets and models
   that no unfinished job uses, folders of owners without a row, and in a finished job's folder
   the files no row names (dropped checkpoints and artifacts, superseded live-picture versions).

Safe to run twice, at once on several workers, and against file:// or s3://: each step only
removes what is unreferenced, and a second run finds nothing more. Row deletes come first, so a
crash between the steps leaves files without rows (swept next time), never rows without files.
References are read before the store is listed: an object written after the read is younger than
the grace period and kept.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field

from ganft.db.session import get_engine, session_scope
from ganft.repo import retention
from ganft.settings import Settings
from ganft.store import Store, open_store
from ganft.store_gc import StoredObject, SweepReport, list_objects, sweep_orphans, sweep_unreferenced

log = logging.getLogger(__name__)


@dataclass
class GcReport:
    dry_run: bool
    checkpoints_dropped: int = 0  # job_checkpoints rows the policies removed (or would)
    artifacts_dropped: int = 0  # artifacts rows the policies removed (or would)
    deleted: list[str] = field(default_factory=list)  # store keys (objects, or owner folders) removed
    freed_bytes: int = 0
    kept_recent: int = 0  # unreferenced objects left for the next run (younger than the grace period)

    def add(self, sweep: SweepReport) -> None:
        self.deleted += sweep.deleted
        self.freed_bytes += sweep.freed_bytes
        self.kept_recent += len(sweep.kept_recent)


def policy_of(settings: Settings) -> retention.Policy:
    return retention.Policy(
        checkpoints_days=settings.retain_checkpoints_days,
        checkpoints_last_only=settings.retain_checkpoints_last_only,
        artifacts_days=settings.retain_artifacts_days,
        picture_versions=settings.retain_picture_versions,
    )


def collect(
    settings: Settings, *, store: Store | None = None, now: float | None = None, dry_run: bool = False
) -> GcReport:
    """One garbage-collection pass (see the module text); `now` (unix seconds) for tests."""
    now = time.time() if now is None else now
    store = store if store is not None else open_store(settings.store_url, settings)
    policy = policy_of(settings)
    report = GcReport(dry_run=dry_run)
    with session_scope(get_engine(settings.database_url)) as session:
        dropped = retention.plan(session, policy, now=dt.datetime.fromtimestamp(now, dt.UTC))
        if not dry_run:
            retention.apply(session, dropped)
        refs = retention.references(session, policy, dropped=dropped if dry_run else None)
    report.checkpoints_dropped = len(dropped.checkpoint_ids)
    report.artifacts_dropped = len(dropped.artifact_ids)
    grace = settings.gc_grace_s
    live = {"datasets": refs.datasets, "models": refs.models, "jobs": refs.jobs}
    report.add(sweep_orphans(store, live, grace_s=grace, now=now, dry_run=dry_run))
    finished: list[StoredObject] = []
    for obj in list_objects(store, "jobs"):
        parts = obj.key.split("/")
        if len(parts) >= 3 and parts[1] in refs.jobs and parts[1] not in refs.active_jobs:
            finished.append(obj)
    report.add(
        sweep_unreferenced(
            store, finished, keys=refs.keys, prefixes=refs.prefixes, grace_s=grace, now=now, dry_run=dry_run
        )
    )
    if report.deleted or report.checkpoints_dropped or report.artifacts_dropped:
        log.info(
            "gc%s: %d checkpoint and %d artifact rows dropped, %d store objects/folders deleted (%d bytes)",
            " (dry run)" if dry_run else "",
            report.checkpoints_dropped,
            report.artifacts_dropped,
            len(report.deleted),
            report.freed_bytes,
        )
    return report
