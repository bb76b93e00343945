"""Reading one `.npy` member of an npz as a stream: its header, then its data in bounded chunks.

Nothing is ever unpickled: object arrays are refused from the header, as are headers that
claim more (or less) data than the member declares, before any data is read. The data then
comes in chunks of at most `budget` bytes, each a box of the array (a range along one axis
with the axes before it fixed), so a 1 GiB array is checked with a few MiB of memory.
"""

from __future__ import annotations

import io
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ganft_core.errors import DatasetError

_KINDS = "biufUS"  # numbers, and strings for `classes`
_MAGIC_BYTES = 8  # b"\x93NUMPY" + major + minor
_LENGTH_FORMAT = {(1, 0): "<H", (2, 0): "<I"}  # how each version stores the header's length
_MAX_HEADER_BYTES = 10_000  # numpy refuses longer headers too; checked before reading one
_READ_BYTES = 1 << 20  # bytes asked of the member stream at a time

Box = tuple[slice, ...]  # a region of an array: one slice per axis, each with a start and a stop


class Readable(Protocol):
    def read(self, n: int, /) -> bytes: ...


@dataclass(frozen=True)
class NpyHeader:
    """What a `.npy` header says: the array's shape, memory order and dtype."""

    name: str  # the member's name, for messages
    shape: tuple[int, ...]
    fortran: bool  # column-major data: the first axis varies fastest
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)


def read_header(stream: Readable, name: str, member_bytes: int) -> NpyHeader:
    """Parse the header at the start of `stream` (a member of `member_bytes` bytes) and check it."""
    magic = stream.read(_MAGIC_BYTES)
    try:
        version = np.lib.format.read_magic(io.BytesIO(magic))
        length_format = _LENGTH_FORMAT.get(version)
        if length_format is None:
            raise DatasetError(f"{name}: unsupported .npy version {version}")
        length = stream.read(struct.calcsize(length_format))
        if len(length) == struct.calcsize(length_format):
            (header_bytes,) = struct.unpack(length_format, length)
            if header_bytes > _MAX_HEADER_BYTES:  # read nothing that large: it could be a GiB
                raise ValueError(f"the header claims {header_bytes} bytes (at most {_MAX_HEADER_BYTES})")
            length += stream.read(header_bytes)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = reader(io.BytesIO(length))
    except ValueError as exc:
        raise DatasetError(f"{name} is not a valid .npy array: {exc}") from exc
    if any(side < 0 for side in shape):
        raise DatasetError(f"{name} is not a valid .npy array: shape {shape} has a negative side")
    if dtype.hasobject:
        raise DatasetError(f"{name} is an object array; store numbers (and strings for classes), not Python objects")
    if dtype.kind not in _KINDS or dtype.fields is not None or dtype.itemsize == 0:
        raise DatasetError(f"{name} has dtype {dtype}; use integers, floats or strings")
    header = NpyHeader(name, tuple(shape), bool(fortran), dtype)
    offset = len(magic) + len(length)
    if header.size * dtype.itemsize != member_bytes - offset:
        raise DatasetError(f"{name}: the header says shape {header.shape} of {dtype} but the member holds other data")
    return header


def read_array(stream: Readable, header: NpyHeader) -> np.ndarray:
    """The whole array (for small ones such as `classes`)."""
    data = _read_exact(stream, header.size * header.dtype.itemsize, header.name)
    _expect_end(stream, header.name)
    flat = np.frombuffer(data, dtype=header.dtype, count=header.size)
    return flat.reshape(header.shape, order="F" if header.fortran else "C")


def read_chunks(stream: Readable, header: NpyHeader, budget: int) -> Iterator[tuple[Box, np.ndarray]]:
    """(box, values) pieces that together cover the array once, each at most `budget` bytes.

    `values` is a read-only array of the box's shape, in the array's axis order (a transposed
    view for Fortran-order data). The member's end is checked after the last piece, so the
    caller must consume them all.
    """
    # The data is the C-order layout of `stored`: the shape itself, or reversed for Fortran order.
    stored = header.shape[::-1] if header.fortran else header.shape
    itemsize = header.dtype.itemsize
    for box in _boxes(stored, itemsize, budget):
        extent = tuple(s.stop - s.start for s in box)
        count = math.prod(extent)
        data = _read_exact(stream, count * itemsize, header.name)
        values = np.frombuffer(data, dtype=header.dtype, count=count).reshape(extent)
        yield (box[::-1], values.T) if header.fortran else (box, values)
    _expect_end(stream, header.name)


def _boxes(shape: tuple[int, ...], itemsize: int, budget: int) -> Iterator[Box]:
    """Consecutive boxes of a C-order array of `shape`, each a contiguous run of at most `budget` bytes.

    Axis `d` is the first whose trailing block (one index of it) fits the budget: a box is
    `step` indices of axis `d` with every axis before it fixed, so a box is never smaller than
    half the budget unless it ends its run.
    """
    if not shape:
        yield ()  # a 0-d array: one value
        return
    if 0 in shape:
        return
    d = 0
    while d < len(shape) - 1 and math.prod(shape[d + 1 :]) * itemsize > budget:
        d += 1
    step = max(1, budget // (math.prod(shape[d + 1 :]) * itemsize))
    rest = tuple(slice(0, side) for side in shape[d + 1 :])
    for prefix in np.ndindex(*shape[:d]):
        fixed = tuple(slice(i, i + 1) for i in prefix)
        for start in range(0, shape[d], step):
            yield (*fixed, slice(start, min(start + step, shape[d])), *rest)


def _read_exact(stream: Readable, n: int, name: str) -> bytearray:
    # 1 MiB a read into one buffer: zipfile buffers (and for deflate re-copies) whatever one read asks for.
    out = bytearray(n)
    view = memoryview(out)
    done = 0
    while done < n:
        piece = stream.read(min(n - done, _READ_BYTES))
        if not piece:
            raise DatasetError(f"{name}: the member ends before the data its header describes")
        view[done : done + len(piece)] = piece
        done += len(piece)
    return out


def _expect_end(stream: Readable, name: str) -> None:
    # Reading past the data is also what makes zipfile check the member's CRC.
    if stream.read(1):
        raise DatasetError(f"{name}: the member holds more data than its header describes")
