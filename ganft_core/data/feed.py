"""`Feed`: batches of a dataset's examples on the training device, from RAM or a memory-mapped stored form.

The one place where examples cross from the host to the device. Two paths:
- on device (the fast path): the whole array fits under `max_device_bytes`, so it is copied to
  the device once, in its stored dtype (uint8 images take a quarter of float32's room), and a
  batch is one device-side gather;
- streamed: the array stays where it is (RAM or a `np.load(mmap_mode="r")` shard), and each
  batch's rows are gathered on the host (from a shard: file reads of just those rows, in file
  order, so the trainer's RSS does not grow with the pages it has read), copied to the device
  (from pinned memory, non-blocking, on CUDA) and converted there. `prefetch(idx)` starts the
  next batch's gather and copy on a background thread while the current step runs.

This module imports torch, unlike the rest of `ganft_core.data` (whose inspection must stay
small): import it as `ganft_core.data.feed`, never from the package.

Values: uint8 images become float32 value/255 on the device (bit-identical to numpy's float32
division, which the in-memory loader used); float32 data is returned as is.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from ganft_core.data.rows import RowReader

# The stored bytes a Feed moves to the device whole when the caller gives no threshold. On CUDA
# also at most a quarter of the device's memory: the nets, activations and optimiser need the rest.
# GANFT_FEED_MAX_DEVICE_BYTES overrides it (0: always stream).
DEFAULT_MAX_DEVICE_BYTES = 4 << 30
ENV_MAX_DEVICE_BYTES = "GANFT_FEED_MAX_DEVICE_BYTES"
_CUDA_SHARE = 4  # at most 1/4 of the device's total memory by default


def default_max_device_bytes(device: torch.device) -> int:
    """The on-device threshold: GANFT_FEED_MAX_DEVICE_BYTES, else 4 GiB (and ≤ 1/4 of a CUDA device)."""
    raw = os.environ.get(ENV_MAX_DEVICE_BYTES)
    if raw is not None and raw.strip():
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"{ENV_MAX_DEVICE_BYTES} must be a whole number of bytes, not {raw!r}") from None
        if value < 0:
            raise ValueError(f"{ENV_MAX_DEVICE_BYTES} must be >= 0, not {value}")
        return value
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        return min(DEFAULT_MAX_DEVICE_BYTES, total // _CUDA_SHARE)
    return DEFAULT_MAX_DEVICE_BYTES


class Feed:
    """Examples of `x` (uint8 N×C×H×W images or float32 N×F / N×C×H×W data) as float32 batches on `device`.

    `rows` (optional, int64): the feed's example i is `x[rows[i]]`, so a subset of a memory-mapped
    dataset needs no copy. `len(feed)` counts the feed's examples.
    """

    def __init__(
        self,
        x: np.ndarray,
        device: torch.device | str,
        *,
        max_device_bytes: int | None = None,
        channels_last: bool = False,
        rows: np.ndarray | None = None,
    ) -> None:
        if x.ndim < 2:
            raise ValueError(f"x must hold one example per row (N×...), got shape {x.shape}")
        if x.dtype != np.uint8 and x.dtype != np.float32:
            raise ValueError(f"x must be uint8 images or float32, not {x.dtype}")
        self.device = torch.device(device)
        self.scaled = x.dtype == np.uint8  # uint8: value/255
        self.channels_last = channels_last and x.ndim == 4
        self._x = x
        self._rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self._n = len(x) if self._rows is None else len(self._rows)
        self.example_shape = tuple(int(s) for s in x.shape[1:])
        self.nbytes = self._n * int(np.prod(self.example_shape)) * x.dtype.itemsize  # as stored
        limit = default_max_device_bytes(self.device) if max_device_bytes is None else max_device_bytes
        self.on_device = self.nbytes <= limit
        self._cuda = self.device.type == "cuda"
        self._whole: torch.Tensor | None = None
        # A whole `np.load(mmap_mode="r")` shard is read with file reads, never through its map: pages touched
        # through a map count in the process's RSS (as file pages) for as long as the map lives, so a pass over
        # a 10 GiB shard would "grow" the trainer by 10 GiB. Page cache serves both alike (data/rows.py).
        self._reader = RowReader(x)
        if self.on_device:
            if self._rows is not None or self._reader.file_backed:
                every = np.arange(self._n, dtype=np.int64)
                host = self._read_rows(every if self._rows is None else self._rows)  # a fresh array in RAM
            elif isinstance(x, np.memmap) or not x.flags.writeable or not x.flags.c_contiguous:
                host = np.array(x, order="C")  # into RAM once (torch wants writable memory)
            else:
                host = x  # shared with the caller on a CPU device, copied once to any other
            self._whole = torch.from_numpy(host).to(self.device)
        self._pool: ThreadPoolExecutor | None = None
        self._pending: tuple[torch.Tensor, Future[torch.Tensor]] | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._n

    # ------------------------------------------------------------------ random batches

    def gather(self, idx: torch.Tensor) -> torch.Tensor:
        """The examples at `idx` (feed positions), float32 on the device (channels_last when asked).

        On the streamed path, pass `idx` on the CPU: indices on a CUDA device cost a host sync.
        """
        if self._whole is not None:
            return self._convert(self._whole[idx.to(self.device)])
        pending, self._pending = self._pending, None
        if pending is not None and pending[0].shape == idx.shape and torch.equal(pending[0], idx.cpu()):
            return self._convert(pending[1].result())
        if pending is not None:
            pending[1].result()  # let a stale prefetch finish before its buffer is forgotten
        return self._convert(self._fetch(idx.cpu()))

    def prefetch(self, idx: torch.Tensor) -> None:
        """Start gathering the batch at `idx` (and its copy to the device); the next `gather(idx)` returns it.

        A no-op on the on-device path, where a gather is already one device kernel.
        """
        if self._whole is not None:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ganft-feed")
        if self._pending is not None:
            self._pending[1].result()
        host_idx = idx.cpu().clone()
        self._pending = (host_idx, self._pool.submit(self._fetch, host_idx))

    # ------------------------------------------------------------------ ordered batches

    def iter_batches(self, batch: int) -> Iterator[torch.Tensor]:
        """Every example once, in order, `batch` at a time (the last batch may be smaller)."""
        if batch < 1:
            raise ValueError(f"batch must be >= 1, not {batch}")
        starts = list(range(0, self._n, batch))
        for k, start in enumerate(starts):
            out = self.gather(torch.arange(start, min(start + batch, self._n)))
            if k + 1 < len(starts):
                nxt = starts[k + 1]
                self.prefetch(torch.arange(nxt, min(nxt + batch, self._n)))  # read while the caller works
            yield out

    def close(self) -> None:
        """Stop the prefetch thread (a Feed that is dropped stops it too)."""
        if self._pending is not None:
            self._pending[1].result()
            self._pending = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)

    # ------------------------------------------------------------------ internals

    def _fetch(self, idx: torch.Tensor) -> torch.Tensor:
        """Host gather of the rows at `idx` (into pinned memory on CUDA), then the copy to the device."""
        positions = idx.numpy().astype(np.int64, copy=False)
        if len(positions) and (positions.min() < 0 or positions.max() >= self._n):
            raise IndexError(f"index out of range for a feed of {self._n} examples")
        rows = positions if self._rows is None else self._rows[positions]
        host = torch.empty(
            (len(rows), *self.example_shape), dtype=_TORCH_DTYPE[self._x.dtype.type], pin_memory=self._cuda
        )
        self._read_rows(rows, out=host.numpy())
        return host.to(self.device, non_blocking=True) if self._cuda else host

    def _read_rows(self, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """`x[rows]` into `out` (a new array when None): file reads of a file-backed shard, else numpy's gather."""
        return self._reader.read(rows, out)

    def _convert(self, batch: torch.Tensor) -> torch.Tensor:
        out = batch.float().div_(255) if self.scaled else batch.float()
        if self.channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        return out


_TORCH_DTYPE = {np.uint8: torch.uint8, np.float32: torch.float32}
