"""The S3-compatible artifact store (`GANFT_STORE_URL=s3://BUCKET/PREFIX`), through obstore.

Same interface and guarantees as `FileStore` (ganft/store.py): keys are validated the same way
and a reader sees an object whole or not at all (S3 makes an object visible only when its PUT
or its multipart upload completes).

- Writes stream: `open_write` holds the first part (`part_bytes`) itself, then hands what is
  written, in pieces of about 1 MiB through a queue of four, to a thread that runs one
  `obstore.put` over them (a multipart upload: obstore assembles the parts and keeps
  `max_concurrency` in flight). Peak memory per upload is therefore about (2 + max_concurrency)
  parts, whatever the object's size (bench/store_clients.py). An object smaller than one part is
  one plain PUT. `abort()`, or an exception in the block, makes the
  put's input raise, and obstore aborts the multipart upload: nothing stays behind.
- Reads stream ranged GETs (`open_read(key, start, end)`), 1 MiB at a time.
- `local_path(key)` is a local copy in `cache_dir` (the dataset inspector and the worker's
  staging read files): written while uploading through `open_write`, else downloaded on first
  use and reused while the object's S3 ETag is unchanged. Deleting through the store removes the
  copy too; the cache folder may be emptied at any time.

Errors: a missing object is FileNotFoundError (as for files); anything else the server or the
network does (unreachable, timeouts, refused credentials) is StoreUnavailable, an OSError.
"""

from __future__ import annotations

import hashlib
import os
import queue
import secrets
import shutil
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import obstore
from obstore.exceptions import BaseError, NotFoundError
from obstore.store import S3Store as _ObS3

from ganft.store import COPY_CHUNK_BYTES, StoreError, StoreUnavailable, validate_key

# obstore raises the builtin FileNotFoundError (and other OSErrors) for some answers, its own
# exception classes for others.
_NOT_FOUND = (NotFoundError, FileNotFoundError)
_FAILED = (BaseError, OSError)

READ_CHUNK_BYTES = 1024 * 1024  # smallest piece a ranged GET hands back
SEND_BYTES = 1024 * 1024  # writes are joined into pieces of about this size for the uploading thread
QUEUE_PIECES = 4  # pieces waiting for it (obstore assembles them into parts)
DELETE_BATCH = 1000  # keys per bulk delete (S3 DeleteObjects limit)


@dataclass(frozen=True)
class S3Options:
    bucket: str
    prefix: str = ""  # key prefix inside the bucket, without slashes at either end
    endpoint: str = ""  # e.g. http://127.0.0.1:8333; empty = AWS (or AWS_ENDPOINT_URL, read by obstore)
    region: str = ""
    access_key_id: str = ""
    secret_access_key: str = ""
    path_style: bool = False  # http://endpoint/BUCKET/key (MinIO, SeaweedFS) instead of virtual-hosted
    cache_dir: Path | None = None  # local copies for local_path(); None = a private temp folder
    part_bytes: int = 8 * 1024**2  # multipart part size, bytes (S3 minimum 5 MiB)
    max_concurrency: int = 2  # parts in flight per upload
    timeout_s: float = 30.0  # per request
    max_retries: int = 3  # per request, exponential backoff


def _unavailable(exc: BaseException, what: str) -> StoreUnavailable:
    # obstore's messages name the request, the status and the server's answer; keep the first line.
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return StoreUnavailable(f"S3 store unavailable while {what}: {detail[:300]}")


class S3Writer:
    """Streams one object into S3; `commit()` completes it, `abort()` (or leaving the block) drops it.

    Counts and hashes (sha256) what is written, like AtomicWriter. When `cache_tmp` is given the
    bytes are also written there (disk, not memory) and renamed to `cache_final` on commit.
    """

    _END = b""  # queue sentinels: end of input, and abort (see _parts)
    _ABORT = None

    def __init__(self, store: S3Store, path: str, cache_final: Path | None) -> None:
        self._store = store
        self._path = path
        self._chunks: list[bytes] = []  # written, not yet handed to the uploading thread
        self._pending = 0  # their bytes
        self._hash = hashlib.sha256()
        self.size = 0
        self._queue: queue.Queue[bytes | None] = queue.Queue(QUEUE_PIECES)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._done = False
        self._cache_final = cache_final
        self._cache_tmp: Path | None = None
        self._cache: BinaryIO | None = None
        if cache_final is not None:
            cache_final.parent.mkdir(parents=True, exist_ok=True)
            self._cache_tmp = cache_final.with_name(f".{cache_final.name}.tmp-{secrets.token_hex(6)}")
            self._cache = open(self._cache_tmp, "wb")  # noqa: SIM115 - closed in commit/abort

    def write(self, data: bytes) -> None:
        if self._done:
            raise StoreError("write after commit or abort")
        self._hash.update(data)
        self.size += len(data)
        if self._cache is not None:
            self._cache.write(data)
        if not data:
            return
        self._chunks.append(bytes(data))
        self._pending += len(data)
        # The first part stays here until it is full: a smaller object is one plain PUT at commit.
        if self._pending >= (self._store.options.part_bytes if self._thread is None else SEND_BYTES):
            self._flush()

    def _flush(self) -> None:
        if self._chunks:
            piece = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
            self._chunks, self._pending = [], 0
            self._send(piece)

    def _send(self, part: bytes | None) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._upload, name=f"s3-put {self._path}", daemon=True)
            self._thread.start()
        while True:  # the thread may have died (server gone): never block on a queue nobody reads
            if self._error is not None:
                raise _unavailable(self._error, f"uploading {self._path!r}")
            try:
                self._queue.put(part, timeout=0.5)
                return
            except queue.Full:
                if not self._thread.is_alive():
                    if self._error is None:
                        raise StoreUnavailable(f"S3 upload of {self._path!r} stopped") from None
                    continue

    def _parts(self) -> Iterator[bytes]:
        while True:
            part = self._queue.get()
            if part is self._ABORT:
                raise StoreError("upload aborted")  # obstore aborts the multipart upload
            if part == self._END:
                return
            yield part

    def _upload(self) -> None:
        o = self._store.options
        try:
            obstore.put(
                self._store.client,
                self._path,
                self._parts(),
                chunk_size=o.part_bytes,
                max_concurrency=o.max_concurrency,
            )
        except BaseException as exc:  # noqa: BLE001 - handed to the writing thread
            self._error = exc
            while True:  # unblock a writer waiting on a full queue
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break

    def commit(self) -> tuple[int, str]:
        """Make the object visible under its key; returns (size in bytes, sha256 hex)."""
        if self._done:
            raise StoreError("commit after commit or abort")
        try:
            if self._thread is None:  # smaller than one part: a single PUT
                try:
                    obstore.put(self._store.client, self._path, b"".join(self._chunks), use_multipart=False)
                except _FAILED as exc:
                    raise _unavailable(exc, f"uploading {self._path!r}") from exc
            else:
                self._flush()
                self._send(self._END)
                self._thread.join()
                if self._error is not None:
                    raise _unavailable(self._error, f"uploading {self._path!r}")
        except BaseException:
            self.abort()
            raise
        self._done = True
        self._chunks, self._pending = [], 0
        if self._cache is not None and self._cache_tmp is not None and self._cache_final is not None:
            self._cache.close()
            self._cache = None
            os.replace(self._cache_tmp, self._cache_final)
            self._store._remember(self._cache_final, self._path)
        return self.size, self._hash.hexdigest()

    def abort(self) -> None:
        if not self._done:
            self._done = True
            self._chunks, self._pending = [], 0
            thread = self._thread
            if thread is not None and thread.is_alive():
                while thread.is_alive():
                    try:
                        self._queue.put(self._ABORT, timeout=0.5)
                        break
                    except queue.Full:
                        continue
                thread.join()
        if self._cache is not None:
            self._cache.close()
            self._cache = None
        if self._cache_tmp is not None and self._cache_final is not None and self._cache_tmp.exists():
            self._cache_tmp.unlink(missing_ok=True)

    def __enter__(self) -> S3Writer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.abort()


class S3RangeReader:
    """A read-only file view of bytes [start, end) of an object, streamed from one ranged GET."""

    def __init__(self, store: S3Store, path: str, start: int, end: int) -> None:
        self._path = path
        self._pending = b""
        self._stream: Any = None
        if end > start:
            try:
                result = obstore.get(store.client, path, options={"range": (start, end)})
            except _NOT_FOUND as exc:
                raise FileNotFoundError(path) from exc
            except _FAILED as exc:
                raise _unavailable(exc, f"reading {path!r}") from exc
            self._stream = iter(result.stream(min_chunk_size=READ_CHUNK_BYTES))

    def read(self, n: int = -1) -> bytes:
        while self._stream is not None and (n < 0 or len(self._pending) < n):
            try:
                self._pending += bytes(next(self._stream))
            except StopIteration:
                self._stream = None
            except _FAILED as exc:
                raise _unavailable(exc, f"reading {self._path!r}") from exc
        if n < 0 or n >= len(self._pending):
            data, self._pending = self._pending, b""
        else:
            data, self._pending = self._pending[:n], self._pending[n:]
        return data

    def close(self) -> None:
        self._stream = None
        self._pending = b""

    def __enter__(self) -> S3RangeReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class S3Store:
    """A store in an S3 bucket (AWS or any S3-compatible server), under an optional key prefix."""

    def __init__(self, options: S3Options) -> None:
        if not options.bucket:
            raise StoreError("an S3 store needs a bucket: s3://BUCKET/PREFIX")
        self.options = options
        self.prefix = options.prefix.strip("/")
        self.url = f"s3://{options.bucket}/{self.prefix}" if self.prefix else f"s3://{options.bucket}"
        if options.cache_dir is None:
            import tempfile

            self.cache_root = Path(tempfile.mkdtemp(prefix="ganft-s3cache-"))
        else:
            self.cache_root = options.cache_dir.resolve()
        config: dict[str, Any] = {}
        if options.endpoint:
            config["endpoint"] = options.endpoint
        if options.region:
            config["region"] = options.region
        if options.access_key_id:
            config["access_key_id"] = options.access_key_id
        if options.secret_access_key:
            config["secret_access_key"] = options.secret_access_key
        client_options: dict[str, Any] = {
            "timeout": timedelta(seconds=options.timeout_s),
            "connect_timeout": timedelta(seconds=min(5.0, options.timeout_s)),
        }
        if options.endpoint.startswith("http://"):
            client_options["allow_http"] = True
        self.client = _ObS3(
            options.bucket,
            virtual_hosted_style_request=not options.path_style,
            client_options=client_options,  # type: ignore[arg-type]
            retry_config={
                "max_retries": options.max_retries,
                "retry_timeout": timedelta(seconds=options.timeout_s * (options.max_retries + 1)),
            },
            **config,
        )

    # -- keys and the local cache ------------------------------------------------------------

    def _key(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _cache_path(self, key: str) -> Path:
        return self.cache_root / validate_key(key)

    @staticmethod
    def _tag_file(cached: Path) -> Path:
        return cached.with_name(f".{cached.name}.etag")  # keys never start with a dot: no clash

    def _remember(self, cached: Path, path: str) -> None:
        """Record the object's ETag beside a fresh local copy (a later local_path reuses it while equal)."""
        try:
            meta = obstore.head(self.client, path)
        except _FAILED:
            cached.unlink(missing_ok=True)  # unknown version: do not trust the copy later
            return
        self._tag_file(cached).write_text(str(meta["e_tag"] or ""))

    def _forget(self, key: str) -> None:
        cached = self._cache_path(key)
        if cached.is_dir():
            shutil.rmtree(cached, ignore_errors=True)
        else:
            cached.unlink(missing_ok=True)
            self._tag_file(cached).unlink(missing_ok=True)

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            return dict(obstore.head(self.client, self._key(key)))
        except _NOT_FOUND:
            return None
        except _FAILED as exc:
            raise _unavailable(exc, f"looking up {key!r}") from exc

    # -- the Store interface -------------------------------------------------------------------

    def open_write(self, key: str) -> S3Writer:
        """An incremental writer for `key` (see S3Writer); the local copy is kept for local_path()."""
        return S3Writer(self, self._key(key), self._cache_path(key))

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> tuple[int, str]:
        """Store the concatenated chunks under `key`; returns (size in bytes, sha256 hex)."""
        with self.open_write(key) as writer:
            for chunk in chunks:
                writer.write(chunk)
            return writer.commit()

    def put_file(self, key: str, path: Path | str) -> tuple[int, str]:
        """Upload the local file `path` to `key` (no cache copy: the caller has the file)."""
        self._forget(key)
        with open(path, "rb") as src, S3Writer(self, self._key(key), None) as writer:
            while chunk := src.read(COPY_CHUNK_BYTES):
                writer.write(chunk)
            return writer.commit()

    def put_bytes(self, key: str, data: bytes) -> tuple[int, str]:
        return self.put_stream(key, [data])

    def open_read(self, key: str, start: int = 0, end: int | None = None) -> S3RangeReader:
        """Bytes [start, end) of `key` (end exclusive, None = to the end). FileNotFoundError if absent."""
        meta = self._head(key)
        if meta is None:
            raise FileNotFoundError(key)
        size = int(meta["size"])
        end = size if end is None else min(end, size)
        return S3RangeReader(self, self._key(key), min(start, end), end)

    def read_bytes(self, key: str) -> bytes:
        try:
            return bytes(obstore.get(self.client, self._key(key)).bytes())
        except _NOT_FOUND as exc:
            raise FileNotFoundError(key) from exc
        except _FAILED as exc:
            raise _unavailable(exc, f"reading {key!r}") from exc

    def local_path(self, key: str) -> Path:
        """A local copy of `key` (downloaded unless the cached one has the object's ETag).

        A key with no object behind it (a folder-like prefix, or a deleted object) gives the
        path in the cache, which may not exist: like FileStore, the caller checks."""
        cached = self._cache_path(key)
        meta = self._head(key)
        if meta is None:
            if cached.is_file():
                self._forget(key)
            return cached
        tag = self._tag_file(cached)
        etag = str(meta["e_tag"] or "")
        if cached.is_file() and tag.is_file() and tag.read_text() == etag and cached.stat().st_size == meta["size"]:
            return cached
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f".{cached.name}.tmp-{secrets.token_hex(6)}")
        try:
            with self.open_read(key) as src, open(tmp, "wb") as out:
                while chunk := src.read(COPY_CHUNK_BYTES):
                    out.write(chunk)
            os.replace(tmp, cached)
        finally:
            tmp.unlink(missing_ok=True)
        tag.write_text(etag)
        return cached

    def size(self, key: str) -> int:
        meta = self._head(key)
        if meta is None:
            raise FileNotFoundError(key)
        return int(meta["size"])

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def delete(self, key: str) -> None:
        try:
            obstore.delete(self.client, self._key(key))
        except _NOT_FOUND:
            pass
        except _FAILED as exc:
            raise _unavailable(exc, f"deleting {key!r}") from exc
        self._forget(key)

    def delete_prefix(self, prefix: str) -> None:
        """Remove every object under the folder-like key `prefix` (an object of that name too)."""
        key = prefix.rstrip("/")
        path = self._key(key)
        try:
            paths = [path]
            for batch in obstore.list(self.client, prefix=path + "/", chunk_size=DELETE_BATCH):
                paths += [meta["path"] for meta in batch]
            for start in range(0, len(paths), DELETE_BATCH):
                obstore.delete(self.client, paths[start : start + DELETE_BATCH])
        except _NOT_FOUND:
            pass
        except _FAILED as exc:
            raise _unavailable(exc, f"deleting {prefix!r}") from exc
        self._forget(key)

    def list_objects(self, prefix: str) -> list[tuple[str, int, float]]:
        """(key, size in bytes, last modified as unix time) of every object under the folder-like key `prefix`."""
        base = self._key(prefix.rstrip("/")) + "/"
        cut = len(self.prefix) + 1 if self.prefix else 0
        try:
            return [
                (meta["path"][cut:], int(meta["size"]), meta["last_modified"].timestamp())
                for batch in obstore.list(self.client, prefix=base, chunk_size=DELETE_BATCH)
                for meta in batch
            ]
        except _FAILED as exc:
            raise _unavailable(exc, f"listing {prefix!r}") from exc

    def list_keys(self, prefix: str) -> list[tuple[str, int]]:
        """(key, size) of every object under the folder-like key `prefix`."""
        return [(key, size) for key, size, _ in self.list_objects(prefix)]

    def check(self) -> None:
        """Raise StoreUnavailable unless the bucket answers a signed listing (credentials, network)."""
        try:
            next(iter(obstore.list(self.client, prefix=self.prefix + "/" if self.prefix else None, chunk_size=1)), None)
        except _FAILED as exc:
            raise _unavailable(exc, f"listing {self.url}") from exc

    def presign_get(self, key: str, expires_s: float) -> str:
        """A URL that GETs `key` without credentials for `expires_s` seconds."""
        return str(obstore.sign(self.client, "GET", self._key(key), timedelta(seconds=expires_s)))

    # -- multipart uploads left open ---------------------------------------------------------------
    # obstore aborts a failed upload itself, but not when the server is unreachable at that moment:
    # such an upload stays open (and billed) until aborted. obstore cannot list open uploads, so
    # these two requests are signed here (AWS Signature V4, the documented algorithm:
    # https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html).

    def abort_stale_uploads(self, *, older_than_s: float) -> list[str]:
        """Abort the multipart uploads under this store's prefix begun more than `older_than_s`
        seconds ago; returns their keys. Needs explicit credentials (GANFT_STORE_* or AWS_*)."""
        import datetime as dt
        import xml.etree.ElementTree as ET

        ns = "{http://s3.amazonaws.com/doc/2006-03-01/}"
        prefix = self.prefix + "/" if self.prefix else ""
        now = dt.datetime.now(dt.UTC)
        aborted: list[str] = []
        params = {"uploads": "", "prefix": prefix}
        while True:
            answer = self._signed("GET", "", params)
            root = ET.fromstring(answer.content)
            for upload in root.iter(f"{ns}Upload"):
                key = upload.findtext(f"{ns}Key") or ""
                upload_id = upload.findtext(f"{ns}UploadId") or ""
                initiated = upload.findtext(f"{ns}Initiated") or ""
                try:
                    began = dt.datetime.fromisoformat(initiated.replace("Z", "+00:00"))
                except ValueError:
                    began = now  # unknown age: keep it
                if not key.startswith(prefix) or (now - began).total_seconds() < older_than_s:
                    continue
                self._signed("DELETE", key, {"uploadId": upload_id})
                aborted.append(key[len(prefix) :])
            if (root.findtext(f"{ns}IsTruncated") or "false").lower() != "true":
                return aborted
            params = {
                "uploads": "",
                "prefix": prefix,
                "key-marker": root.findtext(f"{ns}NextKeyMarker") or "",
                "upload-id-marker": root.findtext(f"{ns}NextUploadIdMarker") or "",
            }

    def _signed(self, method: str, path: str, params: dict[str, str]) -> Any:
        import datetime as dt
        import hmac
        from urllib.parse import quote, urlparse

        import httpx

        o = self.options
        if not (o.access_key_id and o.secret_access_key):
            raise StoreUnavailable("listing open multipart uploads needs explicit S3 credentials")
        region = o.region or "us-east-1"
        endpoint = (o.endpoint or f"https://s3.{region}.amazonaws.com").rstrip("/")
        parsed = urlparse(endpoint)
        host = parsed.netloc if o.path_style else f"{o.bucket}.{parsed.netloc}"
        base_path = parsed.path.rstrip("/")
        url_path = f"{base_path}/{o.bucket}/{path}" if o.path_style else f"{base_path}/{path}"
        canonical_uri = quote(url_path, safe="/-_.~")
        query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(params.items()))
        stamp = dt.datetime.now(dt.UTC)
        amz_date, day = stamp.strftime("%Y%m%dT%H%M%SZ"), stamp.strftime("%Y%m%d")
        payload = hashlib.sha256(b"").hexdigest()
        headers = {"host": host, "x-amz-content-sha256": payload, "x-amz-date": amz_date}
        signed = ";".join(sorted(headers))
        canonical = "\n".join(
            [method, canonical_uri, query, *(f"{k}:{headers[k]}" for k in sorted(headers)), "", signed, payload]
        )
        scope = f"{day}/{region}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        key = ("AWS4" + o.secret_access_key).encode()
        for part in (day, region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={o.access_key_id}/{scope}, SignedHeaders={signed}, Signature={signature}"
        )
        try:
            answer = httpx.request(
                method, f"{parsed.scheme}://{host}{canonical_uri}?{query}", headers=headers, timeout=o.timeout_s
            )
        except httpx.HTTPError as exc:
            raise _unavailable(exc, f"{method} {path or 'uploads'}") from exc
        if answer.status_code >= 300 and not (method == "DELETE" and answer.status_code == 404):
            raise StoreUnavailable(f"S3 store answered {answer.status_code} to {method} ?{query}: {answer.text[:300]}")
        return answer
