"""The artifact store: datasets, model files, checkpoints and job outputs, addressed by key.

Keys are relative slash-separated paths (`datasets/ds_1/data`, `jobs/job_1/model.pt2`); they
are validated so that no key can leave the store root. Every write is atomic: bytes go to a
temporary file in the target folder, are fsynced, and the file is renamed into place, so a
reader sees either the old file, the new one, or none — never half of one.

`file://` is FileStore below; `s3://BUCKET/PREFIX` is ganft.store_s3.S3Store (several machines),
with the same methods. Both raise FileNotFoundError for a missing key and StoreError for a bad
key; an S3 server that cannot be reached raises StoreUnavailable (an OSError).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO, Protocol, TypeVar, Union
from urllib.parse import unquote, urlparse

if TYPE_CHECKING:
    from ganft.settings import Settings
    from ganft.store_s3 import S3Store

log = logging.getLogger(__name__)
T = TypeVar("T")

COPY_CHUNK_BYTES = 1024 * 1024  # read/write unit when copying and hashing
MAX_KEY_LENGTH = 1024
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")  # no leading dot: no `..`, no hidden temp files


class StoreError(Exception):
    """A store operation failed because of the key or the store URL (not an I/O error)."""


class StoreUnavailable(OSError):
    """The store's server could not be reached or refused us (network, timeouts, credentials): retry later."""


def with_store_retries(
    call: Callable[[], T],
    *,
    budget_s: float,
    what: str,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """`call()`, retried while it raises StoreUnavailable (waits 1, 2, 4, ... s, at most 30 s each)
    until `budget_s` seconds have passed since the first try; then its last StoreUnavailable."""
    deadline = clock() + budget_s
    delay = 1.0
    while True:
        try:
            return call()
        except StoreUnavailable as exc:
            left = deadline - clock()
            if left <= 0:
                raise
            log.warning("%s: %s; retrying in %.0f s", what, exc, min(delay, left))
            sleep(min(delay, left))
            delay = min(delay * 2, 30.0)


def validate_key(key: str) -> str:
    """`key` if it is a safe relative key, else StoreError (absolute paths, `..`, odd characters)."""
    if not key or len(key) > MAX_KEY_LENGTH:
        raise StoreError(f"invalid store key {key!r}: empty or longer than {MAX_KEY_LENGTH} characters")
    for segment in key.split("/"):
        if not _SEGMENT.match(segment):
            raise StoreError(f"invalid store key {key!r}: segment {segment!r} is not allowed")
    return key


class Writer(Protocol):
    """What `open_write` returns, for either store: AtomicWriter (file) or S3Writer."""

    size: int

    def write(self, data: bytes) -> None: ...
    def commit(self) -> tuple[int, str]: ...
    def abort(self) -> None: ...


class AtomicWriter:
    """Write a stored file incrementally; `commit()` renames it into place, `abort()` drops it.

    Counts and hashes (sha256) what is written. Use as a context manager: leaving the block
    without `commit()` (or with an exception) removes the temporary file.
    """

    def __init__(self, final: Path) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        self._final = final
        self._tmp = final.with_name(f".{final.name}.tmp-{secrets.token_hex(6)}")
        self._file: BinaryIO | None = open(self._tmp, "wb")  # noqa: SIM115 - closed in commit/abort
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        if self._file is None:
            raise StoreError("write after commit or abort")
        self._file.write(data)
        self._hash.update(data)
        self.size += len(data)

    def commit(self) -> tuple[int, str]:
        """Make the file visible under its key; returns (size in bytes, sha256 hex)."""
        if self._file is None:
            raise StoreError("commit after commit or abort")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        os.replace(self._tmp, self._final)
        _fsync_dir(self._final.parent)
        return self.size, self._hash.hexdigest()

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> AtomicWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.abort()


class RangeReader:
    """A read-only file view of bytes [start, end) of a stored file; `read(n)` stops at `end`."""

    def __init__(self, path: Path, start: int, end: int) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close()/context exit
        self._file.seek(start)
        self._left = end - start

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        n = self._left if n < 0 else min(n, self._left)
        data = self._file.read(n)
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> RangeReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class FileStore:
    """A store in a local (or network-mounted) folder."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.url = self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def open_write(self, key: str) -> AtomicWriter:
        """An incremental atomic writer for `key` (see AtomicWriter)."""
        return AtomicWriter(self._path(key))

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> tuple[int, str]:
        """Store the concatenated chunks under `key`; returns (size in bytes, sha256 hex)."""
        with self.open_write(key) as writer:
            for chunk in chunks:
                writer.write(chunk)
            return writer.commit()

    def put_file(self, key: str, path: Path | str) -> tuple[int, str]:
        """Copy the local file `path` to `key`; returns (size in bytes, sha256 hex)."""
        with open(path, "rb") as src:
            return self.put_stream(key, iter(lambda: src.read(COPY_CHUNK_BYTES), b""))

    def put_bytes(self, key: str, data: bytes) -> tuple[int, str]:
        return self.put_stream(key, [data])

    def open_read(self, key: str, start: int = 0, end: int | None = None) -> RangeReader:
        """Bytes [start, end) of `key` (end exclusive, None = to the end). FileNotFoundError if absent."""
        path = self._path(key)
        size = path.stat().st_size
        end = size if end is None else min(end, size)
        return RangeReader(path, min(start, end), end)

    def read_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def local_path(self, key: str) -> Path:
        """The file behind `key` on this machine (file stores only)."""
        return self._path(key)

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        """Remove everything under the folder-like key `prefix` (a file of that name too)."""
        path = self._path(prefix.rstrip("/"))
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)

    def check(self) -> None:
        """Raise OSError unless the store folder exists (it is made if missing) and is writable."""
        self.root.mkdir(parents=True, exist_ok=True)
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise PermissionError(f"the store folder {self.root} is not writable")


Store = Union[FileStore, "S3Store"]  # noqa: UP007 - S3Store is imported lazily (obstore)


def open_store(url: str, settings: Settings | None = None) -> Store:
    """The store behind `url`: `file:///abs/path`, or `s3://BUCKET/PREFIX` configured by the
    GANFT_STORE_* settings (from `settings`, else read from the environment now)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise StoreError(f"file store URL must be local (file:///path), got {url!r}")
        return FileStore(Path(unquote(parsed.path)))
    if parsed.scheme == "s3":
        from ganft.settings import Settings
        from ganft.store_s3 import S3Options, S3Store

        if not parsed.netloc:
            raise StoreError(f"S3 store URL needs a bucket: s3://BUCKET/PREFIX, got {url!r}")
        s = settings if settings is not None else Settings()
        return S3Store(
            S3Options(
                bucket=parsed.netloc,
                prefix=unquote(parsed.path).strip("/"),
                endpoint=s.store_endpoint,
                region=s.store_region,
                access_key_id=s.store_access_key_id,
                secret_access_key=s.store_secret_access_key.get_secret_value(),
                path_style=s.store_path_style,
                cache_dir=s.store_cache_dir,
                part_bytes=s.store_part_bytes,
                max_concurrency=s.store_max_concurrency,
                timeout_s=s.store_timeout_s,
                max_retries=s.store_max_retries,
            )
        )
    raise StoreError(f"unsupported store URL {url!r}: expected file:///path or s3://BUCKET/PREFIX")


def _fsync_dir(folder: Path) -> None:
    # Persist the rename itself (POSIX): without it a crash can forget the new directory entry.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
