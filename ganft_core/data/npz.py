"""The `npz` format: arrays `x` (images or feature vectors), `y` (labels, -1 = unlabeled), optional `classes`.

The npz is read through SafeZip and each `.npy` member is parsed here with numpy's header
reader: object arrays are refused outright (nothing is ever unpickled), and an array header
claiming more data than its member holds is refused before anything is allocated.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from ganft_core.data.archive import ArchiveLimits, Member, SafeZip
from ganft_core.data.types import (
    UNLABELED,
    Dataset,
    Layout,
    require_finite,
    require_labeled_classes,
    require_unique_classes,
)
from ganft_core.errors import DatasetError

_KINDS = "biufUS"  # numbers, and strings for `classes`
_CHANNELS = (1, 3, 4)  # grey, RGB, RGBA


def read_npy(data: bytearray, name: str) -> np.ndarray:
    """Parse one `.npy` member without pickles; the result views `data` (no copy)."""
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise DatasetError(f"{name}: unsupported .npy version {version}")
    except ValueError as exc:
        raise DatasetError(f"{name} is not a valid .npy array: {exc}") from exc
    if dtype.hasobject:
        raise DatasetError(f"{name} is an object array; store numbers (and strings for classes), not Python objects")
    if dtype.kind not in _KINDS or dtype.fields is not None:
        raise DatasetError(f"{name} has dtype {dtype}; use integers, floats or strings")
    count = math.prod(shape)
    offset = stream.tell()
    if count * dtype.itemsize != len(data) - offset:
        raise DatasetError(f"{name}: the header says shape {shape} of {dtype} but the member holds other data")
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return flat.reshape(shape, order="F" if fortran else "C")


def _image_layout(x: np.ndarray, notes: list[str]) -> tuple[np.ndarray, Layout]:
    """x as N×C×H×W. A 4-D x is N×C×H×W when axis 1 looks like channels, else N×H×W×C."""
    if x.ndim == 3:
        x = x[:, None]
    else:
        first, last = x.shape[1] in _CHANNELS, x.shape[3] in _CHANNELS
        if first and last:
            notes.append(f"x of shape {x.shape} could be N×C×H×W or N×H×W×C; read as N×C×H×W")
        elif last:
            x = x.transpose(0, 3, 1, 2)
        elif not first:
            raise DatasetError(
                f"x has shape {x.shape}: neither axis 1 nor axis 3 holds 1, 3 or 4 channels "
                "(expected N×C×H×W or N×H×W×C)"
            )
    _, c, h, w = x.shape
    return x, Layout("image", channels=c, height=h, width=w)


def _images(x: np.ndarray, notes: list[str]) -> tuple[np.ndarray, Layout]:
    x, layout = _image_layout(x, notes)
    if x.dtype == np.uint8:
        out = np.ascontiguousarray(x, dtype=np.float32)  # one copy, already in N×C×H×W memory order
        out /= 255.0
        return out, layout
    if x.dtype.kind != "f":
        raise DatasetError(f"images in x must be uint8 (0..255) or float in [0, 1], not {x.dtype}")
    out = np.ascontiguousarray(x, dtype=np.float32)
    require_finite(out, "x")
    low, high = float(out.min()), float(out.max())
    if low < -1e-6 or high > 1 + 1e-6:
        raise DatasetError(f"float images must lie in [0, 1]; x holds values from {low:g} to {high:g}")
    return np.clip(out, 0.0, 1.0, out=out), layout


def _labels(y: np.ndarray | None, n: int, notes: list[str]) -> np.ndarray:
    if y is None:
        notes.append("no y array: every example is unlabeled")
        return np.full(n, UNLABELED, dtype=np.int64)
    if y.ndim != 1 or len(y) != n:
        raise DatasetError(f"y must have shape ({n},) to match x, not {y.shape}")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or not (y == np.round(y)).all():
            raise DatasetError("y must hold integer labels (-1 = unlabeled)")
    elif y.dtype.kind not in "iu":
        raise DatasetError(f"y must hold integer labels, not {y.dtype}")
    labels = y.astype(np.int64)
    if n and labels.min() < UNLABELED:
        raise DatasetError(f"labels must be class indices or -1 (unlabeled); found {int(labels.min())}")
    return labels


def _classes(raw: np.ndarray | None, labels: np.ndarray) -> list[str]:
    if raw is None:
        top = int(labels.max()) if len(labels) else UNLABELED
        return [str(i) for i in range(top + 1)]
    if raw.ndim != 1 or raw.dtype.kind not in "US":
        raise DatasetError("classes must be a 1-D array of strings")
    names = [c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c) for c in raw.tolist()]
    require_unique_classes(names)
    if len(labels) and labels.max() >= len(names):
        raise DatasetError(f"y holds label {int(labels.max())} but only {len(names)} classes are named")
    return names


def load_npz(path: str | Path, limits: ArchiveLimits) -> Dataset:
    """Load an npz file (compressed or not); see the module docstring for what it must hold."""
    arrays: dict[str, np.ndarray] = {}
    ignored: list[str] = []
    with SafeZip(path, limits) as archive:
        by_key: dict[str, Member] = {}
        for member in archive.members:
            if not member.name.endswith(".npy"):
                raise DatasetError(f"npz member {member.name!r} is not a .npy array")
            by_key[member.name[: -len(".npy")]] = member
        if "x" not in by_key:
            raise DatasetError(f"the npz has no array 'x' (found: {', '.join(sorted(by_key)) or 'nothing'})")
        for key, member in by_key.items():
            if key in ("x", "y", "classes"):
                arrays[key] = read_npy(archive.read(member), member.name)
            else:
                ignored.append(key)

    notes: list[str] = [f"ignored arrays: {', '.join(sorted(ignored))}"] if ignored else []
    x = arrays["x"]
    if x.size > limits.max_dataset_values:
        raise DatasetError(f"x holds {x.size} values; at most {limits.max_dataset_values} are allowed")
    if x.ndim == 0 or x.shape[0] == 0:
        raise DatasetError("x holds no examples")
    if 0 in x.shape:
        raise DatasetError(f"x has shape {x.shape}: every example is empty")
    if x.ndim == 2:
        if x.dtype.kind not in "biuf":
            raise DatasetError(f"feature vectors in x must be numbers, not {x.dtype}")
        data = np.ascontiguousarray(x, dtype=np.float32)
        require_finite(data, "x")
        layout = Layout("features", features=x.shape[1])
    elif x.ndim in (3, 4):
        data, layout = _images(x, notes)
    else:
        raise DatasetError(f"x has shape {x.shape}: expected N×F (features), N×H×W, N×C×H×W or N×H×W×C (images)")
    labels = _labels(arrays.get("y"), len(data), notes)
    ds = Dataset(x=data, y=labels, classes=_classes(arrays.get("classes"), labels), layout=layout, notes=notes)
    require_labeled_classes(ds)
    return ds
