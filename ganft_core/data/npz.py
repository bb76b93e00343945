"""The `npz` format: arrays `x` (images or feature vectors), `y` (labels, -1 = unlabeled), optional `classes`.

The npz is read through SafeZip, and `x` and `y` are streamed (npy.py): each is inflated and
checked a few MiB at a time (NaN/inf, value range, label range, counts per class), so
inspecting an upload (`inspect_npz`) needs little memory whatever its size, and loading it
(`load_npz`) needs the float32 dataset and one chunk. Object arrays are refused outright
(nothing is ever unpickled), and an array header claiming more data than its member holds is
refused before anything is allocated.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ganft_core.data.archive import ArchiveLimits, Member, MemberStream, SafeZip
from ganft_core.data.npy import Box, NpyHeader, read_array, read_chunks, read_header
from ganft_core.data.types import (
    UNLABELED,
    Dataset,
    Layout,
    NumberedClasses,
    require_class_examples,
    require_unique_classes,
    summary,
)
from ganft_core.errors import DatasetError

_CHANNELS = (1, 3, 4)  # grey, RGB, RGBA
_CHUNK_BYTES = 8 << 20  # stored bytes of x or y checked at a time


@dataclass(frozen=True)
class _Axes:
    """How x's axes map onto the dataset's (N×C×H×W images, N×F features)."""

    add_channel: bool = False  # N×H×W: a channel axis of 1 goes in at position 1
    order: tuple[int, ...] | None = None  # then this transpose (N×H×W×C -> N×C×H×W)

    def array(self, values: np.ndarray) -> np.ndarray:
        values = values[:, None] if self.add_channel else values
        return values if self.order is None else values.transpose(self.order)

    def box(self, box: Box) -> Box:
        box = (box[0], slice(0, 1), *box[1:]) if self.add_channel else box
        return box if self.order is None else tuple(box[i] for i in self.order)


def _image_layout(shape: tuple[int, ...], notes: list[str]) -> tuple[Layout, _Axes]:
    """A 4-D x is N×C×H×W when axis 1 looks like channels, else N×H×W×C; a 3-D one gets a channel."""
    if len(shape) == 3:
        _, h, w = shape
        return Layout("image", channels=1, height=h, width=w), _Axes(add_channel=True)
    first, last = shape[1] in _CHANNELS, shape[3] in _CHANNELS
    if first and last:
        notes.append(f"x of shape {shape} could be N×C×H×W or N×H×W×C; read as N×C×H×W")
    elif last:
        _, h, w, c = shape
        return Layout("image", channels=c, height=h, width=w), _Axes(order=(0, 3, 1, 2))
    elif not first:
        raise DatasetError(
            f"x has shape {shape}: neither axis 1 nor axis 3 holds 1, 3 or 4 channels (expected N×C×H×W or N×H×W×C)"
        )
    _, c, h, w = shape
    return Layout("image", channels=c, height=h, width=w), _Axes()


def _x_layout(x: NpyHeader, limits: ArchiveLimits, notes: list[str]) -> tuple[Layout, _Axes]:
    """Everything the header of x can tell: size, shape and dtype."""
    if x.size > limits.max_dataset_values:
        raise DatasetError(f"x holds {x.size} values; at most {limits.max_dataset_values} are allowed")
    if x.ndim == 0 or x.shape[0] == 0:
        raise DatasetError("x holds no examples")
    if 0 in x.shape:
        raise DatasetError(f"x has shape {x.shape}: every example is empty")
    if x.ndim == 2:
        if x.dtype.kind not in "biuf":
            raise DatasetError(f"feature vectors in x must be numbers, not {x.dtype}")
        return Layout("features", features=x.shape[1]), _Axes()
    if x.ndim in (3, 4):
        layout, axes = _image_layout(x.shape, notes)
        if x.dtype != np.uint8 and x.dtype.kind != "f":
            raise DatasetError(f"images in x must be uint8 (0..255) or float in [0, 1], not {x.dtype}")
        return layout, axes
    raise DatasetError(f"x has shape {x.shape}: expected N×F (features), N×H×W, N×C×H×W or N×H×W×C (images)")


class Target(Protocol):
    """Where x's values go: a float32 array, or the stored form's shard (uint8 for uint8 images)."""

    dtype: np.dtype

    def __getitem__(self, box: Box, /) -> np.ndarray: ...


# (shape N×C×H×W or N×F, dtype to store) -> the target; dtype is uint8 for uint8 images, else float32
Allocate = Callable[[tuple[int, ...], np.dtype], Target]


def _scan_x(stream: MemberStream, header: NpyHeader, layout: Layout, axes: _Axes, out: Target | None) -> None:
    """Check x chunk by chunk (NaN/inf, the [0, 1] range of float images); fill `out` when given.

    A float32 `out` gets the dataset's values (uint8/255); a uint8 one the stored uint8 values.
    """
    images = layout.kind == "image"
    scaled = images and header.dtype == np.uint8 and out is not None and out.dtype == np.float32
    checked = header.dtype.kind == "f"  # integers are always finite in float32
    first_bad: tuple[int, ...] | None = None
    low, high = np.inf, -np.inf
    for box, values in read_chunks(stream, header, _CHUNK_BYTES):
        target = None if out is None else out[axes.box(box)]
        if checked:
            values = values.astype(np.float32, copy=False)  # as the dataset holds them: float64 1e39 is inf
            finite = np.isfinite(values)
            if not finite.all():
                # The first bad value in the dataset's N×C×H×W order: the box's first, offset by its start.
                bad = axes.array(~finite)
                at = np.unravel_index(int(np.argmax(bad)), bad.shape)
                where = tuple(int(s.start + i) for s, i in zip(axes.box(box), at, strict=True))
                first_bad = where if first_bad is None else min(first_bad, where)
            elif images:
                low, high = min(low, float(values.min())), max(high, float(values.max()))
        if target is not None:
            target[...] = axes.array(values)
            if scaled:
                np.divide(target, 255.0, out=target)
            elif images and checked:
                np.clip(target, 0.0, 1.0, out=target)  # rounding below 0 or above 1 (refused past 1e-6)
    if first_bad is not None:
        raise DatasetError(f"x holds NaN or infinite values (first at index {first_bad})")
    if images and checked:
        if low < -1e-6 or high > 1 + 1e-6:
            raise DatasetError(f"float images must lie in [0, 1]; x holds values from {low:g} to {high:g}")


@dataclass
class _Labels:
    """What the scan of y found: labeled examples per class, and the largest label."""

    counts: np.ndarray  # int64, labeled examples of classes 0..len-1 (len = the largest label counted + 1)
    high: int  # the largest label (-1: none labeled)
    cap: int  # labels from here on were not counted

    @property
    def complete(self) -> bool:
        return self.high < self.cap


def _scan_y(stream: MemberStream | None, header: NpyHeader | None, n: int, out: np.ndarray | None) -> _Labels:
    """Check y chunk by chunk and count labels per class; fill `out` (int64) when given.

    Counts stop at `n + 5` classes (see `require_class_examples`): a y whose labels claim more
    classes than there are examples is refused with the same message without counting them all.
    """
    if header is None or stream is None:
        if out is not None:
            out.fill(UNLABELED)
        return _Labels(np.zeros(0, dtype=np.int64), UNLABELED, cap=0)
    if header.ndim != 1 or header.shape[0] != n:
        raise DatasetError(f"y must have shape ({n},) to match x, not {header.shape}")
    if header.dtype.kind not in "iuf":
        raise DatasetError(f"y must hold integer labels, not {header.dtype}")
    cap = n + 5
    counts = np.zeros(0, dtype=np.int64)
    low, high = np.iinfo(np.int64).max, np.iinfo(np.int64).min
    for box, values in read_chunks(stream, header, _CHUNK_BYTES):
        if header.dtype.kind == "f" and not (np.isfinite(values).all() and (values == np.round(values)).all()):
            raise DatasetError("y must hold integer labels (-1 = unlabeled)")
        labels = values.astype(np.int64)
        low, high = min(low, int(labels.min())), max(high, int(labels.max()))
        part = np.bincount(labels[(labels >= 0) & (labels < cap)])
        if len(part) > len(counts):
            counts = np.concatenate([counts, np.zeros(len(part) - len(counts), dtype=np.int64)])
        counts[: len(part)] += part
        if out is not None:
            out[box] = labels
    if low < UNLABELED:
        raise DatasetError(f"labels must be class indices or -1 (unlabeled); found {low}")
    return _Labels(counts, high, cap)


def _classes(raw: np.ndarray | None, labels: _Labels) -> tuple[list[str] | NumberedClasses, np.ndarray]:
    """The class names, and the labeled examples per class (padded or cut to the classes counted)."""
    if raw is None:
        # Past the cap only the first five empty classes matter for the message, and they lie below it.
        names: list[str] | NumberedClasses = NumberedClasses(min(labels.high, labels.cap) + 1)
    else:
        if raw.ndim != 1 or raw.dtype.kind not in "US":
            raise DatasetError("classes must be a 1-D array of strings")
        names = [c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c) for c in raw.tolist()]
        require_unique_classes(names)
        if labels.high >= len(names):
            raise DatasetError(f"y holds label {labels.high} but only {len(names)} classes are named")
    counts = labels.counts  # every label is below len(names) by now
    if labels.complete and len(counts) < len(names):  # the classes past the largest label have none
        counts = np.concatenate([counts, np.zeros(len(names) - len(counts), dtype=np.int64)])
    return names, counts


@dataclass
class _Npz:
    examples: int
    classes: list[str] | NumberedClasses
    counts: np.ndarray  # labeled examples per class
    layout: Layout
    notes: list[str]
    x: Target | None  # float32 N×C×H×W or N×F when loaded, the stored shard when stored
    y: np.ndarray | None  # int64 (N,), when loaded or stored


def _read_npz(path: str | Path, limits: ArchiveLimits, *, load: bool, allocate: Allocate | None = None) -> _Npz:
    """Check the npz in one streaming pass; with `load`, also build x (float32, or in `allocate`'s target) and y."""
    with SafeZip(path, limits) as archive, ExitStack() as opened:
        by_key: dict[str, Member] = {}
        for member in archive.members:
            if not member.name.endswith(".npy"):
                raise DatasetError(f"npz member {member.name!r} is not a .npy array")
            by_key[member.name[: -len(".npy")]] = member
        if "x" not in by_key:
            raise DatasetError(f"the npz has no array 'x' (found: {', '.join(sorted(by_key)) or 'nothing'})")
        # Every header is checked before any data is read (members in name order).
        streams: dict[str, MemberStream] = {}
        headers: dict[str, NpyHeader] = {}
        for key, member in by_key.items():
            if key in ("x", "y", "classes"):
                streams[key] = opened.enter_context(archive.open(member))
                headers[key] = read_header(streams[key], member.name, member.size)
        ignored = sorted(set(by_key) - set(headers))

        notes: list[str] = [f"ignored arrays: {', '.join(ignored)}"] if ignored else []
        x = headers["x"]
        layout, axes = _x_layout(x, limits, notes)
        n = x.shape[0]
        data: Target | None = None
        if load and allocate is not None:
            stored = np.dtype(np.uint8) if layout.kind == "image" and x.dtype == np.uint8 else np.dtype(np.float32)
            data = allocate((n, *layout.shape()), stored)
        elif load:
            data = np.empty((n, *layout.shape()), dtype=np.float32)  # type: ignore[assignment]  # an ndarray is a Target
        _scan_x(streams["x"], x, layout, axes, data)
        if "y" not in headers:
            notes.append("no y array: every example is unlabeled")
        y = np.empty(n, dtype=np.int64) if load else None
        labels = _scan_y(streams.get("y"), headers.get("y"), n, y)
        raw = read_array(streams["classes"], headers["classes"]) if "classes" in headers else None
    classes, counts = _classes(raw, labels)
    require_class_examples(classes, counts)
    return _Npz(n, list(classes), counts, layout, notes, data, y)


def load_npz(path: str | Path, limits: ArchiveLimits) -> Dataset:
    """Load an npz file (compressed or not); see the module docstring for what it must hold."""
    npz = _read_npz(path, limits, load=True)
    assert isinstance(npz.x, np.ndarray) and npz.y is not None
    return Dataset(x=npz.x, y=npz.y, classes=list(npz.classes), layout=npz.layout, notes=npz.notes)


def store_npz(
    path: str | Path, limits: ArchiveLimits, allocate: Allocate
) -> tuple[np.ndarray, list[str], Layout, list[str]]:
    """Check the npz and write x into `allocate`'s target as stored (uint8 images stay uint8) in one pass.

    Returns (y int64, classes, layout, notes); the same checks and errors as `load_npz`.
    """
    npz = _read_npz(path, limits, load=True, allocate=allocate)
    assert npz.y is not None
    return npz.y, list(npz.classes), npz.layout, npz.notes


def inspect_npz(path: str | Path, limits: ArchiveLimits) -> dict[str, Any]:
    """`dataset_stats(load_npz(path))` without loading the arrays: the same checks, a few MiB of memory."""
    npz = _read_npz(path, limits, load=False)
    return summary(examples=npz.examples, classes=npz.classes, counts=npz.counts, layout=npz.layout, notes=npz.notes)
