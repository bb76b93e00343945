"""The file artifact store: atomic writes, ranges, key validation, unsupported URLs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ganft.store import StoreError, open_store, validate_key


def test_put_stream_reports_size_and_sha256_and_reads_back(tmp_path: Path) -> None:
    """Chunks are concatenated; size and sha256 describe exactly the stored bytes."""
    store = open_store((tmp_path / "s").as_uri())
    size, sha = store.put_stream("jobs/job_1/model.bin", [b"abc", b"", b"defg"])
    assert (size, sha) == (7, hashlib.sha256(b"abcdefg").hexdigest())
    assert store.exists("jobs/job_1/model.bin") and store.size("jobs/job_1/model.bin") == 7
    with store.open_read("jobs/job_1/model.bin", 2, 5) as reader:
        assert reader.read() == b"cde"
    with store.open_read("jobs/job_1/model.bin", 5) as reader:
        assert reader.read(1) == b"f" and reader.read() == b"g" and reader.read() == b""


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    """An exception mid-stream leaves neither the file nor a temporary behind."""
    store = open_store((tmp_path / "s").as_uri())

    def chunks():  # type: ignore[no-untyped-def]
        yield b"partial"
        raise RuntimeError("client went away")

    with pytest.raises(RuntimeError):
        store.put_stream("datasets/ds_1/data", chunks())
    assert not store.exists("datasets/ds_1/data")
    assert list((tmp_path / "s" / "datasets" / "ds_1").iterdir()) == []


def test_overwrite_is_atomic_replace(tmp_path: Path) -> None:
    """Writing a key again replaces the old bytes whole."""
    store = open_store((tmp_path / "s").as_uri())
    store.put_bytes("a/b", b"old")
    with store.open_write("a/b") as writer:
        writer.write(b"new!")
        assert store.read_bytes("a/b") == b"old"  # not visible before commit
        writer.commit()
    assert store.read_bytes("a/b") == b"new!"


def test_put_file_and_delete_prefix(tmp_path: Path) -> None:
    """Copying a local file, then removing a whole folder-like prefix."""
    store = open_store((tmp_path / "s").as_uri())
    src = tmp_path / "x.txt"
    src.write_bytes(b"hello")
    store.put_file("models/m1/model.json", src)
    store.put_bytes("models/m1/model.safetensors", b"w")
    store.put_bytes("models/m10/model.json", b"other")
    store.delete_prefix("models/m1")
    assert not store.exists("models/m1/model.json") and store.exists("models/m10/model.json")
    assert store.local_path("models/m10/model.json").read_bytes() == b"other"


@pytest.mark.parametrize("key", ["", "/etc/passwd", "../x", "a/../../x", "a//b", "a/./b", "a/.hidden", "a\\b", "a b"])
def test_bad_keys_are_refused(tmp_path: Path, key: str) -> None:
    """Absolute paths, traversal, empty segments and odd characters never reach the filesystem."""
    store = open_store((tmp_path / "s").as_uri())
    with pytest.raises(StoreError):
        store.put_bytes(key, b"x")
    with pytest.raises(StoreError):
        validate_key(key)


def test_s3_is_a_clear_error() -> None:
    """S3 is planned but not implemented: the error says so and what to use instead."""
    with pytest.raises(StoreError, match="not implemented yet"):
        open_store("s3://bucket/prefix")
    with pytest.raises(StoreError, match="unsupported"):
        open_store("ftp://host/x")
