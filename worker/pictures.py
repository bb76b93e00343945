"""Live pictures: the sample grid and curves a trainer rewrites at each evaluation, published while the job runs.

The core reports each rewritten picture as an `artifact` progress update; the supervisor notes it
here and, at most once per `interval_s`, `publish()` stores the newest version of each and registers
it as the job's artifact of that name (replacing the previous one) with an `artifact` event
(ganft/repo/lifecycle.py `record_artifact`). Pictures are small and evaluations rare, so this is a
few hundred kB and one short transaction per picture now and then.

Each version gets a store key of its own (named by its sha256): a download that read the previous
row keeps reading the bytes its ETag names while a newer version is registered. The last
`KEEP_VERSIONS` of each name stay in the store; older ones are deleted. The final set, registered
when the job succeeds, lives under `jobs/<id>/artifacts/` like every other output.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

from ganft.repo.lifecycle import ArtifactRecord
from ganft.store import Store
from worker import staging

LIVE = ("samples.png", "curves.png")  # the run-folder files published while the job runs
KEEP_VERSIONS = 2  # the newest and the one before it (a download of it may still be running)

log = logging.getLogger(__name__)

# Registers one version (one transaction); False when the job is no longer this worker's.
RecordFn = Callable[[ArtifactRecord, int], bool]


class LivePictures:
    """The pictures of one job attempt waiting to be published, and the versions already stored."""

    def __init__(
        self,
        store: Store,
        job_id: str,
        out_dir: Path,
        record: RecordFn,
        *,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._job_id = job_id
        self._out_dir = out_dir
        self._record = record
        self._interval_s = interval_s
        self._clock = clock
        self._pending: dict[str, int] = {}  # name -> step of the evaluation that rewrote it
        self._published: dict[str, list[str]] = {}  # name -> stored keys, oldest first
        self._last_publish = -math.inf
        self.uploads = 0  # versions stored (a test and the logs read it)

    def add(self, name: str | None, step: int) -> None:
        """Note a picture the trainer rewrote (other artifacts are published when the job succeeds)."""
        if name in LIVE:
            self._pending[name] = step

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def due(self) -> bool:
        return bool(self._pending) and self._clock() - self._last_publish >= self._interval_s

    def publish(self) -> bool:
        """Store and register the newest version of each pending picture; False when the job was lost.

        A store or DB error propagates and leaves the pictures pending for the next try.
        """
        self._last_publish = self._clock()
        for name, step in list(self._pending.items()):
            try:
                # One read: what is hashed is what is stored, even if the trainer replaces the file meanwhile.
                data = (self._out_dir / name).read_bytes()
            except FileNotFoundError:  # the run folder is going away (the job is ending)
                del self._pending[name]
                continue
            sha256 = hashlib.sha256(data).hexdigest()
            keys = self._published.setdefault(name, [])
            if keys and keys[-1] == staging.picture_key(self._job_id, name, sha256):
                del self._pending[name]  # unchanged since its last publication (e.g. the final report)
                continue
            key = staging.picture_key(self._job_id, name, sha256)
            if not self._store.exists(key):
                self._store.put_bytes(key, data)
                self.uploads += 1
            if not self._record(ArtifactRecord(name, len(data), sha256, staging.content_type(name), key), step):
                return False
            del self._pending[name]
            if key in keys:
                keys.remove(key)
            keys.append(key)
            for old in keys[:-KEEP_VERSIONS]:
                self._store.delete(old)
            del keys[:-KEEP_VERSIONS]
        return True
