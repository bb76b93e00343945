"""`RowReader`: rows of a memory-mapped `.npy` shard read with file reads, not through the map.

Pages touched through a memory map count in the process's RSS (as file pages, `RssFile`) for as long
as the map lives, so reading a random sample of a 12 GB shard through its map "grew" a training run by
up to 0.7 GB of pages it never needed again (bench/RESULTS.md, "core: datasets at scale": ssgan's
normalisation sample). `pread` into a fresh array leaves the pages in the page cache only, which
serves both alike. Both `Feed` (batches on the device) and `Dataset.batches` (host batches) read
rows here. numpy only: `ganft_core.data` must not import torch.
"""

from __future__ import annotations

import mmap
import os

import numpy as np


class RowReader:
    """`x[rows]` for an array `x` of rows (N×...): file reads when `x` is a whole-file `np.load(mmap_mode="r")`
    map (`file_backed`), numpy's gather otherwise. Safe to call from several threads (positional reads)."""

    def __init__(self, x: np.ndarray) -> None:
        self._x = x
        self.example_shape = tuple(int(s) for s in x.shape[1:])
        self._file = _mapped_file(x)

    @property
    def file_backed(self) -> bool:
        return self._file is not None

    def read(self, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """`x[rows]` (int64 positions, any order, repeats allowed) into `out` (a new array when None).

        From a file, the sorted rows are read in file order (each page once, forwards), a run of
        consecutive rows in one read, then scattered into `rows`' order.
        """
        if out is None:
            out = np.empty((len(rows), *self.example_shape), dtype=self._x.dtype)
        order = np.argsort(rows, kind="stable")
        if self._file is None:
            out[order] = self._x[rows[order]]
            return out
        if not len(rows):
            return out
        sorted_rows = rows[order]
        # Rows land in file order in `staged` (the output itself when `rows` is sorted), then one scatter.
        in_order = bool(np.all(order == np.arange(len(order))))
        staged = out if in_order else np.empty_like(out)
        row_bytes = staged[0].nbytes
        view = staged.reshape(-1).view(np.uint8).data
        breaks = np.flatnonzero(np.diff(sorted_rows) != 1) + 1  # starts of runs of consecutive rows
        fd, offset = self._file
        name = getattr(self._x, "filename", "")
        for first, stop in zip(np.r_[0, breaks].tolist(), np.r_[breaks, len(sorted_rows)].tolist(), strict=True):
            _pread_into(fd, view[first * row_bytes : stop * row_bytes], offset + int(sorted_rows[first]) * row_bytes,
                        name)  # fmt: skip
        if not in_order:
            out[order] = staged
        return out

    def close(self) -> None:
        """Close the file (reads after this fail); a dropped reader closes it too."""
        file, self._file = self._file, None
        if file is not None:
            os.close(file[0])

    def __del__(self) -> None:
        file = getattr(self, "_file", None)
        if file is not None:
            os.close(file[0])


def _mapped_file(x: np.ndarray) -> tuple[int, int] | None:
    """(a read-only descriptor of the file, the data's offset in it) for a C-ordered array memory-mapped from
    a whole file (what `np.load(mmap_mode="r")` gives) whose size still matches the array, else None."""
    if not (isinstance(x, np.memmap) and isinstance(x.base, mmap.mmap) and x.filename is not None):
        return None
    if not x.flags.c_contiguous:
        return None
    try:
        fd = os.open(str(x.filename), os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None  # read through the map instead
    stat = os.fstat(fd)
    mapped = _mapping_identity(x.ctypes.data)
    # Not the file that was mapped (the path was replaced since, e.g. a stored form remade from a changed
    # source): a reader by name would see the new file's values, the map still holds the old ones.
    if stat.st_size < int(x.offset) + x.nbytes or (mapped is not None and mapped != (stat.st_dev, stat.st_ino)):
        os.close(fd)
        return None
    return fd, int(x.offset)


def _mapping_identity(address: int) -> tuple[int, int] | None:
    """(device, inode) of the file mapped at `address`, from /proc/self/maps; None where there is no such file
    (not Linux: then the file's size is the only check)."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                low, _, high = fields[0].partition("-")
                if int(low, 16) <= address < int(high, 16):
                    major, _, minor = fields[3].partition(":")
                    return os.makedev(int(major, 16), int(minor, 16)), int(fields[4])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _pread_into(fd: int, view: memoryview, offset: int, name: object) -> None:
    """Fill `view` from `fd` at `offset` (Linux returns at most ~2 GiB a call: loop)."""
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done : done + (1 << 30)]], offset + done)
        if got <= 0:
            raise OSError(f"{name} ends before the mapped array does")
        done += got
