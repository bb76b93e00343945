"""`load_dataset` / `inspect_dataset`: pick the format (given, or sniffed from the file's first bytes), then
load the dataset, or only check it and summarise it (what the API's upload check runs)."""

from __future__ import annotations

import codecs
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from ganft_core.data.archive import ArchiveLimits, SafeZip
from ganft_core.data.csvfile import inspect_csv, load_csv
from ganft_core.data.imagefolder import inspect_imagefolder, load_imagefolder
from ganft_core.data.npz import inspect_npz, load_npz
from ganft_core.data.stored import load_stored
from ganft_core.data.text import inspect_text, load_text, looks_like_text
from ganft_core.data.types import Dataset
from ganft_core.errors import DatasetError

FORMATS = ("imagefolder", "npz", "csv", "text")
_LOADERS: dict[str, Callable[[Path, ArchiveLimits], Dataset]] = {
    "imagefolder": load_imagefolder,
    "npz": load_npz,
    "csv": load_csv,
    "text": cast(Callable[[Path, ArchiveLimits], Dataset], load_text),  # a TextDataset (texts, not arrays)
}
# Each gives dataset_stats(loader(...)) after the same checks, without holding the dataset in memory.
_INSPECTORS: dict[str, Callable[[Path, ArchiveLimits], dict[str, Any]]] = {
    "imagefolder": inspect_imagefolder,
    "npz": inspect_npz,
    "csv": inspect_csv,
    "text": inspect_text,
}
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header, or the end record of an empty zip
_NPY_MAGIC = b"\x93NUMPY"
_SNIFF_BYTES = 64 * 1024


def detect_format(path: str | Path, limits: ArchiveLimits = ArchiveLimits()) -> str:
    """'npz' for a zip of only .npy members, 'imagefolder' for any other zip, 'text' for JSONL or a CSV with a
    `text` column, 'csv' for other UTF-8 text."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"no dataset file at {path}")
    with open(path, "rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    if not head:
        raise DatasetError("the file is empty")
    if head.startswith(_ZIP_MAGIC):
        # An npz is itself a zip: tell them apart by the members' names.
        with SafeZip(path, limits) as archive:
            names = [m.name for m in archive.members]
        if not names:
            raise DatasetError("the archive is empty")
        return "npz" if all(n.endswith(".npy") for n in names) else "imagefolder"
    if head.startswith(_NPY_MAGIC):
        raise DatasetError("a bare .npy file is not a dataset: save x and y together with numpy.savez", field="format")
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        raise DatasetError("unrecognised file: not a zip, an npz or a UTF-8 csv", field="format") from None
    if b"\x00" in head:
        raise DatasetError("unrecognised file: not a zip, an npz or a UTF-8 csv", field="format")
    return "text" if looks_like_text(head) else "csv"


def load_dataset(
    path: str | Path,
    fmt: str | None = None,
    *,
    limits: ArchiveLimits = ArchiveLimits(),
    stored: str | Path | None = None,
) -> Dataset:
    """Load an uploaded dataset (`fmt`: 'imagefolder', 'npz', 'csv' or None to detect it).

    With `stored` (a folder, e.g. `stored_beside(path)`), the dataset is decoded once into its stored
    form there (or the one already there is reused) and returned memory-mapped: RAM holds the labels,
    not the examples (ganft_core.data.stored). Without it, the examples are loaded as float32.
    Every problem the user can fix is a DatasetError whose message names it.
    """
    path, fmt = _resolve(path, fmt, limits)
    if stored is not None and fmt != "text":  # texts are tokenised when a run starts, not stored
        return load_stored(path, fmt, stored, limits=limits)
    return _LOADERS[fmt](path, limits)


def inspect_dataset(
    path: str | Path, fmt: str | None = None, *, limits: ArchiveLimits = ArchiveLimits()
) -> dict[str, Any]:
    """`dataset_stats(load_dataset(path, fmt))`, with the same checks and errors, in bounded memory.

    The dataset is streamed, never held: an npz's arrays a few MiB at a time, a csv's rows one
    at a time, an imagefolder's images one at a time (only their sizes and modes are kept).
    """
    path, fmt = _resolve(path, fmt, limits)
    return _INSPECTORS[fmt](path, limits)


def _resolve(path: str | Path, fmt: str | None, limits: ArchiveLimits) -> tuple[Path, str]:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"no dataset file at {path}")
    if fmt is None:
        fmt = detect_format(path, limits)
    if fmt.lower() not in _LOADERS:
        raise DatasetError(f"unknown dataset format {fmt!r}; use one of {', '.join(FORMATS)}", field="format")
    return path, fmt.lower()
