"""The artifact store, file:// and s3:// (a real SeaweedFS): atomic writes, ranges, keys, URLs.

Tests that take `store` run once per kind; the S3-only ones check what only S3 has (multipart
uploads, the local cache, credentials).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from pydantic import SecretStr

from ganft.settings import Settings
from ganft.store import FileStore, StoreError, StoreUnavailable, open_store, validate_key
from ganft.store_s3 import S3Store
from tests.s3_server import SeaweedS3

MIB = 1024**2


def test_put_stream_reports_size_and_sha256_and_reads_back(store) -> None:  # type: ignore[no-untyped-def]
    """Chunks are concatenated; size and sha256 describe exactly the stored bytes."""
    size, sha = store.put_stream("jobs/job_1/model.bin", [b"abc", b"", b"defg"])
    assert (size, sha) == (7, hashlib.sha256(b"abcdefg").hexdigest())
    assert store.exists("jobs/job_1/model.bin") and store.size("jobs/job_1/model.bin") == 7
    with store.open_read("jobs/job_1/model.bin", 2, 5) as reader:
        assert reader.read() == b"cde"
    with store.open_read("jobs/job_1/model.bin", 5) as reader:
        assert reader.read(1) == b"f" and reader.read() == b"g" and reader.read() == b""
    with store.open_read("jobs/job_1/model.bin", 7) as reader:
        assert reader.read() == b""


def test_missing_keys_are_file_not_found(store) -> None:  # type: ignore[no-untyped-def]
    assert not store.exists("datasets/none/data")
    for call in (store.size, store.read_bytes, store.open_read):
        with pytest.raises(FileNotFoundError):
            call("datasets/none/data")
    store.delete("datasets/none/data")  # deleting what is not there is fine
    store.delete_prefix("datasets/none")


def test_empty_object(store) -> None:  # type: ignore[no-untyped-def]
    assert store.put_bytes("a/empty", b"") == (0, hashlib.sha256(b"").hexdigest())
    assert store.exists("a/empty") and store.read_bytes("a/empty") == b""


def test_failed_write_leaves_nothing(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """An exception mid-stream leaves neither the object nor a temporary behind."""

    def chunks():  # type: ignore[no-untyped-def]
        yield b"partial"
        raise RuntimeError("client went away")

    with pytest.raises(RuntimeError):
        store.put_stream("datasets/ds_1/data", chunks())
    assert not store.exists("datasets/ds_1/data")
    if isinstance(store, FileStore):
        assert list((tmp_path / "s" / "datasets" / "ds_1").iterdir()) == []


def test_overwrite_is_atomic_replace(store) -> None:  # type: ignore[no-untyped-def]
    """Writing a key again replaces the old bytes whole; nothing new is visible before commit."""
    store.put_bytes("a/b", b"old")
    with store.open_write("a/b") as writer:
        writer.write(b"new!")
        assert store.read_bytes("a/b") == b"old"
        writer.commit()
    assert store.read_bytes("a/b") == b"new!"


def test_put_file_and_delete_prefix(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Copying a local file, then removing a whole folder-like prefix (not its namesake neighbour)."""
    src = tmp_path / "x.txt"
    src.write_bytes(b"hello")
    assert store.put_file("models/m1/model.json", src) == (5, hashlib.sha256(b"hello").hexdigest())
    store.put_bytes("models/m1/model.safetensors", b"w")
    store.put_bytes("models/m10/model.json", b"other")
    assert store.local_path("models/m1/model.json").read_bytes() == b"hello"
    store.delete_prefix("models/m1")
    assert not store.exists("models/m1/model.json") and not store.exists("models/m1/model.safetensors")
    assert store.exists("models/m10/model.json")
    assert store.local_path("models/m10/model.json").read_bytes() == b"other"
    assert not store.local_path("models/m1/model.json").exists()


def test_large_stream_in_parts_with_ranges(store) -> None:  # type: ignore[no-untyped-def]
    """Several multipart parts on S3 (5 MiB here) plus a tail; ranges across part boundaries."""
    block = bytes(range(256)) * 4096  # 1 MiB
    chunks = [block] * 11 + [b"tail"]
    size, sha = store.put_stream("jobs/j/big.bin", chunks)
    data = b"".join(chunks)
    assert (size, sha) == (len(data), hashlib.sha256(data).hexdigest())
    with store.open_read("jobs/j/big.bin", 5 * MIB - 3, 5 * MIB + 5) as reader:
        assert reader.read() == data[5 * MIB - 3 : 5 * MIB + 5]
    with store.open_read("jobs/j/big.bin", 11 * MIB) as reader:
        assert reader.read() == b"tail"
    with store.open_read("jobs/j/big.bin") as reader:
        got = hashlib.sha256()
        while piece := reader.read(777_777):
            got.update(piece)
    assert got.hexdigest() == sha


@pytest.mark.parametrize("key", ["", "/etc/passwd", "../x", "a/../../x", "a//b", "a/./b", "a/.hidden", "a\\b", "a b"])
def test_bad_keys_are_refused(store, key: str) -> None:  # type: ignore[no-untyped-def]
    """Absolute paths, traversal, empty segments and odd characters never reach the store."""
    with pytest.raises(StoreError):
        store.put_bytes(key, b"x")
    with pytest.raises(StoreError):
        validate_key(key)


def test_check_passes_on_a_working_store(store) -> None:  # type: ignore[no-untyped-def]
    store.check()


def test_store_urls() -> None:
    """Unsupported schemes and an s3:// URL without a bucket are clear errors."""
    with pytest.raises(StoreError, match="unsupported"):
        open_store("ftp://host/x")
    with pytest.raises(StoreError, match="needs a bucket"):
        open_store("s3:///prefix")
    store = open_store("s3://bkt/some/prefix/", Settings(store_region="us-east-1", store_endpoint="http://127.0.0.1:9"))
    assert isinstance(store, S3Store) and store.url == "s3://bkt/some/prefix" and store.prefix == "some/prefix"


# -- S3 only ------------------------------------------------------------------------------------


def _s3(settings: Settings) -> S3Store:
    store = open_store(settings.store_url, settings)
    assert isinstance(store, S3Store)
    return store


def test_aborted_upload_aborts_its_multipart_upload(s3_settings: Settings, s3_server: SeaweedS3) -> None:
    """Parts already sent (3 x 5 MiB) are dropped with the upload: no object, no open multipart upload."""
    store = _s3(s3_settings)
    with store.open_write("datasets/ds_2/data") as writer:
        for _ in range(16):
            writer.write(b"x" * MIB)
        assert writer._thread is not None  # a multipart upload is under way
        # leaving the block without commit() aborts
    assert not store.exists("datasets/ds_2/data")
    assert [k for k in s3_server.pending_uploads() if k.startswith(store.prefix)] == []
    assert not any(p.name.startswith(".data.tmp") for p in (store.cache_root / "datasets" / "ds_2").iterdir())


def test_keys_live_under_the_prefix(s3_settings: Settings) -> None:
    store = _s3(s3_settings)
    store.put_bytes("jobs/j/a", b"1")
    store.put_bytes("jobs/j/sub/b", b"22")
    assert sorted(store.list_keys("jobs/j")) == [("jobs/j/a", 1), ("jobs/j/sub/b", 2)]
    other = _s3(s3_settings.model_copy(update={"store_url": store.url + "-other"}))
    assert not other.exists("jobs/j/a")


def test_local_path_is_a_cached_copy_refreshed_when_the_object_changes(s3_settings: Settings, tmp_path: Path) -> None:
    """Written through the store: cached at once. Changed by another process: downloaded again."""
    store = _s3(s3_settings)
    store.put_bytes("datasets/d/data", b"v1")
    path = store.local_path("datasets/d/data")
    assert path.read_bytes() == b"v1" and path.is_relative_to(store.cache_root)
    elsewhere = _s3(s3_settings.model_copy(update={"store_cache_dir": tmp_path / "other-cache"}))
    assert elsewhere.local_path("datasets/d/data").read_bytes() == b"v1"  # downloaded there
    elsewhere.put_bytes("datasets/d/data", b"version 2")
    assert store.local_path("datasets/d/data").read_bytes() == b"version 2"
    elsewhere.delete("datasets/d/data")
    assert not store.local_path("datasets/d/data").exists()


def test_wrong_credentials_are_store_unavailable(s3_settings: Settings) -> None:
    store = _s3(s3_settings.model_copy(update={"store_secret_access_key": SecretStr("wrong-secret-key-000000")}))
    with pytest.raises(StoreUnavailable, match="S3 store unavailable"):
        store.check()
    with pytest.raises(StoreUnavailable):
        store.put_bytes("a/b", b"x")


def test_unreachable_server_is_store_unavailable(s3_settings: Settings) -> None:
    settings = s3_settings.model_copy(update={"store_endpoint": "http://127.0.0.1:9", "store_max_retries": 0})
    store = _s3(settings)
    with pytest.raises(StoreUnavailable):
        store.check()
    with pytest.raises(StoreUnavailable):
        store.exists("a/b")
    with pytest.raises(StoreUnavailable):
        store.put_stream("a/big", [b"x" * MIB] * 12)


def test_presigned_get_reads_without_credentials(s3_settings: Settings) -> None:
    import httpx

    store = _s3(s3_settings)
    store.put_bytes("jobs/j/artifacts/model.json", b"{}")
    answer = httpx.get(store.presign_get("jobs/j/artifacts/model.json", 60))
    assert answer.status_code == 200 and answer.content == b"{}"


def test_stale_multipart_uploads_are_aborted(s3_settings: Settings, s3_server: SeaweedS3) -> None:
    """An upload whose abort could not reach the server stays open; abort_stale_uploads ends it,
    and only those under this store's prefix and older than the limit."""
    import obstore

    store = _s3(s3_settings)
    other = _s3(s3_settings.model_copy(update={"store_url": store.url + "-other"}))
    for s, name in ((store, "datasets/d/data"), (other, "datasets/e/data")):
        # A writer dropped without commit or abort: obstore leaves its multipart upload open.
        w = obstore.open_writer(s.client, s._key(name), buffer_size=5 * MIB)
        w.write(b"y" * (6 * MIB))
        del w
    import time

    time.sleep(1)
    mine = [k for k in s3_server.pending_uploads() if k.startswith(store.prefix + "/")]
    assert mine == [f"{store.prefix}/datasets/d/data"]
    assert store.abort_stale_uploads(older_than_s=3600) == []  # too recent
    assert store.abort_stale_uploads(older_than_s=0) == ["datasets/d/data"]
    pending = s3_server.pending_uploads()
    assert f"{store.prefix}/datasets/d/data" not in pending and f"{other.prefix}/datasets/e/data" in pending
    assert other.abort_stale_uploads(older_than_s=0) == ["datasets/e/data"]
