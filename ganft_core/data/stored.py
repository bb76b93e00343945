"""The stored form: a dataset decoded once into files that training memory-maps instead of loading.

A stored dataset is a folder:
- `x-00000.npy`: the examples as one `.npy` array that `np.load(mmap_mode="r")` opens in place:
  images uint8 N×C×H×W exactly as decoded (0..255, never rescaled or resized here beyond what the
  loader notes), float images and feature vectors float32 N×C×H×W / N×F;
- `y.npy`: int64 labels (N,), -1 = unlabeled;
- `manifest.json`: layout, classes, counts, notes, and for every file its bytes and sha256, plus the
  source's sha256, bytes and format, the time the ingest took and the bytes it wrote.

One x shard, not many: on a 64-bit host a memory map of any size costs address space, not RAM, and
one array lets a batch be one gather; the manifest lists shards so that a later version may split
them. Ingest streams: an npz's x is inflated a few MiB at a time straight into the shard (written
through short-lived maps of the rows each chunk touches, so the process's RSS never holds the
dataset), an imagefolder's images are decoded one at a time (a checking pass, then a writing pass),
a csv is parsed as the loader does (tabular sets are small). The values are exactly what the
in-memory loader gives: `open_stored(...).x == load_dataset(...).x` bit for bit.

A folder is written under a temporary name and renamed into place, so a reader sees a complete
stored form or none; two ingests of the same source race harmlessly (the first rename wins).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from ganft_core.data.archive import ArchiveLimits
from ganft_core.data.csvfile import load_csv
from ganft_core.data.imagefolder import stream_imagefolder
from ganft_core.data.npy import Box
from ganft_core.data.npz import store_npz
from ganft_core.data.types import Dataset, Layout
from ganft_core.errors import DatasetError

log = logging.getLogger(__name__)

VERSION = 1
MANIFEST = "manifest.json"
X_SHARD = "x-00000.npy"
LABELS = "y.npy"
_HASH_CHUNK = 16 << 20  # bytes hashed at a time
_WRITE_ROWS_BYTES = 8 << 20  # imagefolder rows gathered before one write


def stored_beside(source: str | Path) -> Path:
    """The conventional folder for a source file's stored form: `<source>.stored` next to it."""
    source = Path(source)
    return source.with_name(source.name + ".stored")


def ingest(
    source: str | Path, fmt: str, out_dir: str | Path, *, limits: ArchiveLimits = ArchiveLimits()
) -> dict[str, Any]:
    """Check `source` (format `fmt`) and write its stored form to `out_dir` (which must not exist yet).

    Returns the manifest. Every problem with the source is the loader's DatasetError; `out_dir` is
    then left absent.
    """
    out_dir = Path(out_dir)
    started = time.monotonic()
    tmp = out_dir.with_name(f"{out_dir.name}.tmp-{uuid.uuid4().hex[:12]}")
    tmp.mkdir(parents=True)
    try:
        y, classes, layout, notes = _write_examples(Path(source), fmt, tmp / X_SHARD, limits)
        np.save(tmp / LABELS, np.ascontiguousarray(y, dtype=np.int64))
        files = [_file_entry(tmp / X_SHARD), _file_entry(tmp / LABELS)]
        source_stat = Path(source).stat()
        manifest: dict[str, Any] = {
            "version": VERSION,
            "layout": layout.to_dict(),
            "examples": int(len(y)),
            "dtype": str(np.load(tmp / X_SHARD, mmap_mode="r").dtype),
            "classes": list(classes),
            "class_counts": [int(c) for c in np.bincount(y[y >= 0], minlength=len(classes))],
            "notes": list(notes),
            "x_shards": [files[0]["name"]],
            "labels": files[1]["name"],
            "files": files,
            "source": {
                "format": fmt,
                "bytes": source_stat.st_size,
                "mtime_ns": source_stat.st_mtime_ns,
                "sha256": _sha256(Path(source)),
            },
            "stored_bytes": sum(f["bytes"] for f in files),
        }
        manifest["ingest_seconds"] = round(time.monotonic() - started, 3)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        try:
            tmp.rename(out_dir)
        except OSError:
            if not (out_dir / MANIFEST).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process stored it first: theirs is as good
            return read_manifest(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(
        "stored %s: %d examples, %d bytes in %.1f s",
        source,
        len(y),
        manifest["stored_bytes"],
        manifest["ingest_seconds"],
    )
    return manifest


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of a stored form, or DatasetError naming what is wrong with it."""
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"the stored dataset at {folder} has no {MANIFEST}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{MANIFEST} of the stored dataset is corrupt: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("version") != VERSION:
        raise DatasetError(f"{MANIFEST} of the stored dataset is not version {VERSION}")
    return manifest


def open_stored(folder: str | Path, *, verify: bool = True) -> Dataset:
    """The stored dataset in `folder`, its examples memory-mapped (nothing is read into RAM but the labels).

    Every file must have the size the manifest says and a valid `.npy` header of the expected shape;
    with `verify`, its sha256 too (one streaming read, bounded memory). Otherwise DatasetError naming
    the file.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    try:
        layout = Layout.from_dict(manifest["layout"])
        n = int(manifest["examples"])
        entries = {f["name"]: f for f in manifest["files"]}
        (x_name,) = manifest["x_shards"]
        y_name = manifest["labels"]
        classes = [str(c) for c in manifest["classes"]]
        notes = [str(s) for s in manifest["notes"]]
        dtype = np.dtype(manifest["dtype"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"{MANIFEST} of the stored dataset is incomplete: {exc}") from None
    for name in (x_name, y_name):
        _check_file(folder, entries.get(name) or {"name": name}, verify=verify)
    x = _map(folder / x_name, (n, *layout.shape()), dtype)
    y = np.array(_map(folder / y_name, (n,), np.dtype(np.int64)))
    ds = Dataset.mapped(x, y, classes, layout, notes)
    ds.storage = {  # what the ingest cost: reported in spec.json and the Dataset record
        "folder": str(folder),
        "stored_bytes": int(manifest.get("stored_bytes", 0)),
        "ingest_seconds": float(manifest.get("ingest_seconds", 0.0)),
        "source_sha256": manifest.get("source", {}).get("sha256"),
    }
    return ds


def load_stored(
    source: str | Path, fmt: str, folder: str | Path, *, limits: ArchiveLimits = ArchiveLimits(), verify: bool = True
) -> Dataset:
    """The stored form of `source` in `folder`: reused when it was made from the same file, else (re)made.

    "The same file" is the same size and modification time and a complete manifest; a stored form
    that fails its checks is replaced, not trusted.
    """
    folder = Path(folder)
    stat = Path(source).stat()
    if (folder / MANIFEST).is_file():
        try:
            kept = read_manifest(folder)
            origin = kept.get("source", {})
            if (
                origin.get("bytes") == stat.st_size
                and origin.get("mtime_ns") == stat.st_mtime_ns
                and (origin.get("format") == fmt)
            ):
                return open_stored(folder, verify=verify)
            log.info("the stored form at %s is of another file; storing %s again", folder, source)
        except DatasetError as exc:
            log.warning("the stored form at %s is unusable (%s); storing %s again", folder, exc.message, source)
        shutil.rmtree(folder, ignore_errors=True)
    ingest(source, fmt, folder, limits=limits)
    return open_stored(folder, verify=False)  # just written and hashed


# ---------------------------------------------------------------------- writing


class _ShardRows:
    """An `.npy` file being filled: `shard[box]` is a writable window over the rows the box touches.

    Each window is a fresh memory map dropped by the caller after one chunk, so written pages
    leave the process (to the page cache) instead of accumulating in its RSS.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
        created = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        self.offset = int(created.offset)
        del created
        self.path, self.shape, self.dtype = path, shape, np.dtype(dtype)
        self.row_bytes = int(np.prod(shape[1:])) * self.dtype.itemsize

    def __getitem__(self, box: Box) -> np.ndarray:
        first, stop = box[0].start or 0, box[0].stop
        window = np.memmap(
            self.path,
            dtype=self.dtype,
            mode="r+",
            offset=self.offset + first * self.row_bytes,
            shape=(stop - first, *self.shape[1:]),
        )
        return window[(slice(0, stop - first), *box[1:])]


def _write_examples(
    source: Path, fmt: str, x_path: Path, limits: ArchiveLimits
) -> tuple[np.ndarray, list[str], Layout, list[str]]:
    """Write the examples of `source` to `x_path` as stored; (labels, classes, layout, notes)."""
    if fmt == "npz":
        shards: list[_ShardRows] = []

        def allocate(shape: tuple[int, ...], dtype: np.dtype) -> _ShardRows:
            shards.append(_ShardRows(x_path, shape, dtype))
            return shards[-1]

        return store_npz(source, limits, allocate)
    if fmt == "imagefolder":
        labels, classes, layout, notes, examples = stream_imagefolder(source, limits)
        shape = (len(labels), *layout.shape())
        header_offset = _ShardRows(x_path, shape, np.dtype(np.uint8)).offset
        batch = max(1, _WRITE_ROWS_BYTES // int(np.prod(layout.shape())))
        with open(x_path, "r+b") as out:
            out.seek(header_offset)
            pending: list[np.ndarray] = []
            for pixels in examples:
                pending.append(pixels)
                if len(pending) == batch:
                    out.write(np.stack(pending).tobytes())
                    pending = []
            if pending:
                out.write(np.stack(pending).tobytes())
        return labels, classes, layout, notes
    if fmt == "csv":
        ds = load_csv(source, limits)
        np.save(x_path, ds.x)
        return ds.y, list(ds.classes), ds.layout, list(ds.notes)
    raise DatasetError(f"unknown dataset format {fmt!r}", field="format")


# ---------------------------------------------------------------------- checking


def _file_entry(path: Path) -> dict[str, Any]:
    return {"name": path.name, "bytes": path.stat().st_size, "sha256": _sha256(path)}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _check_file(folder: Path, entry: dict[str, Any], *, verify: bool) -> None:
    name = str(entry["name"])
    path = folder / name
    if not path.is_file():
        raise DatasetError(f"shard {name} of the stored dataset is missing")
    size = path.stat().st_size
    if "bytes" in entry and size != int(entry["bytes"]):
        raise DatasetError(
            f"shard {name} of the stored dataset is truncated or damaged: "
            f"{size} bytes, the manifest says {entry['bytes']}"
        )
    if verify and "sha256" in entry and _sha256(path) != entry["sha256"]:
        raise DatasetError(f"shard {name} of the stored dataset is corrupt: its sha256 differs from the manifest's")


def _map(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """`np.load(path, mmap_mode="r")`, checked against the shape and dtype the manifest promises."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DatasetError(f"shard {path.name} of the stored dataset is not a readable .npy array: {exc}") from None
    if array.shape != shape or array.dtype != dtype:
        raise DatasetError(
            f"shard {path.name} of the stored dataset holds {array.dtype} {array.shape}, "
            f"the manifest says {dtype} {shape}"
        )
    return array
