"""The in-memory dataset every loader returns, and the checks and summary shared by all formats."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, overload

import numpy as np

from ganft_core.data.rows import RowReader
from ganft_core.errors import DatasetError

UNLABELED = -1  # the label of an example without a class


@dataclass(frozen=True)
class Layout:
    """The shape of one example: an image (C×H×W) or a feature vector (F)."""

    kind: Literal["image", "features"]
    channels: int = 0  # images: 1 (grey), 3 (RGB) or 4 (RGBA)
    height: int = 0  # images: pixels
    width: int = 0  # images: pixels
    features: int = 0  # feature vectors: length

    def shape(self) -> tuple[int, ...]:
        """(C, H, W) for images, (F,) for feature vectors."""
        if self.kind == "image":
            return (self.channels, self.height, self.width)
        return (self.features,)

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "image":
            return {"kind": "image", "channels": self.channels, "height": self.height, "width": self.width}
        return {"kind": "features", "features": self.features}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Layout:
        kind = data.get("kind")
        if kind == "image":
            return cls("image", channels=int(data["channels"]), height=int(data["height"]), width=int(data["width"]))
        if kind == "features":
            return cls("features", features=int(data["features"]))
        raise ValueError(f"unknown layout kind {kind!r}")

    def describe(self) -> str:
        """Human text for error messages, e.g. '3×32×32 images' or '4 features'."""
        if self.kind == "image":
            return f"{self.channels}×{self.height}×{self.width} images"
        return f"{self.features} features"


class Dataset:
    """A loaded dataset: its examples, labels, class names and layout.

    Two kinds, one interface:
    - in memory (`Dataset(x, y, classes, layout)`, what every loader built before the stored
      form): `x` is coerced to float32 on construction;
    - stored (`Dataset.mapped(...)`, what `ganft_core.data.stored.open_stored` returns): the
      examples stay in their stored array, usually a `np.load(mmap_mode="r")` shard, uint8 for
      images (values 0..255) or float32 (features, float images), and `rows` may select a subset
      of them without a copy.

    Dtype rules, the same for both kinds:
    - `x`: images N×C×H×W float32 scaled to [0, 1] (uint8/255, float data as given); features
      N×F float32 raw. On a stored dataset, reading `x` builds that float32 array in RAM once
      (4× the uint8 images): trainers read batches through `feed()` (or `batches()`) instead.
    - `source`: the examples as stored (uint8 or float32; a stored dataset's full shard), and
      `rows` the int64 positions of this dataset's examples in it (None: all, in order).
    - `y`: int64 (N,), class index per example, -1 = unlabeled; always in RAM.
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        classes: list[str],
        layout: Layout,
        notes: list[str] | None = None,
    ) -> None:
        self._init(np.ascontiguousarray(x, dtype=np.float32), None, y, classes, layout, notes)
        self._x: np.ndarray | None = self.source

    @classmethod
    def mapped(
        cls,
        source: np.ndarray,
        y: np.ndarray,
        classes: list[str],
        layout: Layout,
        notes: list[str] | None = None,
        *,
        rows: np.ndarray | None = None,
    ) -> Dataset:
        """A dataset whose examples stay in `source` (uint8 images or float32), e.g. a memory-mapped shard.

        `y` holds the labels of this dataset's examples (of `source[rows]`, or of all of `source`).
        """
        if source.dtype != np.uint8 and source.dtype != np.float32:
            raise DatasetError(f"stored examples must be uint8 or float32, not {source.dtype}")
        if source.dtype == np.uint8 and layout.kind != "image":
            raise DatasetError("uint8 examples must be images")
        ds = cls.__new__(cls)
        ds._init(
            source, None if rows is None else np.ascontiguousarray(rows, dtype=np.int64), y, classes, layout, notes
        )
        ds._x = None
        return ds

    def _init(
        self,
        source: np.ndarray,
        rows: np.ndarray | None,
        y: np.ndarray,
        classes: list[str],
        layout: Layout,
        notes: list[str] | None,
    ) -> None:
        self.source = source
        self.rows = rows
        self.y = np.ascontiguousarray(y, dtype=np.int64)
        self.classes = classes  # index = label
        self.layout = layout
        self.notes: list[str] = [] if notes is None else notes  # what the loader changed (resized, converted, ...)
        # a stored dataset's ingest figures (folder, stored_bytes, ingest_seconds, source_sha256); None in memory
        self.storage: dict[str, Any] | None = None
        n = len(source) if rows is None else len(rows)
        if self.y.ndim != 1 or len(self.y) != n:
            raise DatasetError(f"x holds {n} examples but y has shape {self.y.shape}")
        if source.shape[1:] != layout.shape():
            raise DatasetError(f"x has shape {(n, *source.shape[1:])} but the layout says {layout.describe()}")
        if rows is not None and len(rows) and (rows.min() < 0 or rows.max() >= len(source)):
            raise DatasetError(f"rows must lie in 0..{len(source) - 1}")
        if len(self.y) and (self.y.min() < UNLABELED or self.y.max() >= len(classes)):
            raise DatasetError(
                f"labels must lie in -1..{len(classes) - 1} for {len(classes)} classes, "
                f"found {int(self.y.min())}..{int(self.y.max())}"
            )

    @property
    def x(self) -> np.ndarray:
        """float32 examples in RAM (see the class docstring); built on first use for a stored dataset."""
        if self._x is None:
            out = np.empty((len(self), *self.layout.shape()), dtype=np.float32)
            start = 0
            for part in self.batches(_MATERIALISE_ROWS):
                out[start : start + len(part)] = part
                start += len(part)
            self._x = out
        return self._x

    @property
    def is_mapped(self) -> bool:
        """True for a stored dataset (examples in `source`, float32 `x` built only when read)."""
        return self._x is not self.source

    def __len__(self) -> int:
        return len(self.y)

    @property
    def labeled(self) -> np.ndarray:
        """Boolean mask (N,) of the labeled examples."""
        return self.y != UNLABELED

    def batches(self, size: int) -> Iterator[np.ndarray]:
        """The examples in order as float32 host arrays of `size` rows (the last may be shorter)."""
        if self._x is not None and not self.is_mapped:
            for start in range(0, len(self), size):
                yield self._x[start : start + size]
            return
        # A memory-mapped shard is read with file reads (RowReader), not through the map, so a pass over a
        # stored dataset leaves the process's RSS where it was; an array in RAM is sliced or gathered.
        reader = RowReader(self.source)
        try:
            for start in range(0, len(self), size):
                part = slice(start, start + size)
                if reader.file_backed:
                    rows = np.arange(start, min(start + size, len(self))) if self.rows is None else self.rows[part]
                    values = reader.read(rows)
                else:
                    values = np.asarray(self.source[part] if self.rows is None else self.source[self.rows[part]])
                yield self._float(values)
        finally:
            reader.close()

    def _float(self, values: np.ndarray) -> np.ndarray:
        out = values.astype(np.float32)
        if values.dtype == np.uint8:
            np.divide(out, 255.0, out=out)  # the loaders' scaling, bit for bit
        return out

    def feed(self, device: Any, **options: Any) -> Any:
        """A `ganft_core.data.feed.Feed` over the examples as stored (imports torch; options go to Feed)."""
        from ganft_core.data.feed import Feed  # torch only where batches go to a device

        return Feed(self.source, device, rows=self.rows, **options)

    def subset(self, indices: np.ndarray, *, notes: list[str] | None = None) -> Dataset:
        """The examples at `indices` (in that order), with the same classes and layout (no copy when stored)."""
        indices = np.asarray(indices)
        if indices.dtype == bool:
            indices = np.flatnonzero(indices)
        keep = list(self.notes if notes is None else notes)
        if not self.is_mapped:
            return Dataset(
                x=self.source[indices], y=self.y[indices], classes=list(self.classes), layout=self.layout, notes=keep
            )
        rows = indices if self.rows is None else self.rows[indices]
        out = Dataset.mapped(self.source, self.y[indices], list(self.classes), self.layout, keep, rows=rows)
        out.storage = self.storage
        return out

    def relabeled(self, y: np.ndarray, classes: list[str], layout: Layout) -> Dataset:
        """The same examples (not copied) with new labels and class names."""
        if self.is_mapped:
            out = Dataset.mapped(self.source, y, classes, layout, list(self.notes), rows=self.rows)
            out.storage = self.storage
            return out
        return Dataset(x=self.x, y=y, classes=classes, layout=layout, notes=list(self.notes))


_MATERIALISE_ROWS = 4096  # rows converted to float32 at a time when `x` is built from a stored dataset


def class_counts(ds: Dataset) -> np.ndarray:
    """Labeled examples per class, shape (K,)."""
    return np.bincount(ds.y[ds.labeled], minlength=len(ds.classes))


class NumberedClasses(Sequence[str]):
    """The class names '0'..'K-1' without building K strings (K comes from an untrusted label)."""

    def __init__(self, count: int) -> None:
        self._count = count

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...
    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        if isinstance(index, slice):
            return [str(i) for i in range(self._count)[index]]
        return str(range(self._count)[index])


def require_labeled_classes(ds: Dataset) -> None:
    """Every class must have at least one labeled example (a class without any cannot be learned)."""
    require_class_examples(ds.classes, class_counts(ds))


def require_class_examples(classes: Sequence[str], counts: np.ndarray) -> None:
    """`require_labeled_classes` from per-class counts of labeled examples.

    Classes past the end of `counts` count as empty. A streaming reader stops counting at
    `examples + 5` classes: past that, at least five classes inside `counts` are empty, so the
    message (the first five, then '...') is the same as with every class counted.
    """
    empty = np.flatnonzero(counts[: len(classes)] == 0)
    beyond = max(0, len(classes) - len(counts))
    if len(empty) or beyond:
        first = [*empty[:5].tolist(), *range(len(counts), len(counts) + min(beyond, 5))][:5]
        shown = ", ".join(repr(classes[i]) for i in first) + (" ..." if len(empty) + beyond > 5 else "")
        raise DatasetError(f"every class needs at least one labeled example; none for class {shown}")


def require_finite(x: np.ndarray, what: str) -> None:
    """NaN or infinite values are refused: they would poison every loss they touch."""
    if not np.isfinite(x).all():
        bad = np.argwhere(~np.isfinite(x))[0]
        raise DatasetError(f"{what} holds NaN or infinite values (first at index {tuple(int(i) for i in bad)})")


def require_unique_classes(classes: list[str]) -> None:
    seen: set[str] = set()
    for name in classes:
        if not name.strip():
            raise DatasetError("class names must not be empty")
        if name in seen:
            raise DatasetError(f"class name {name!r} appears twice")
        seen.add(name)


def dataset_stats(ds: Dataset) -> dict[str, Any]:
    """JSON-ready summary: what `python -m ganft_core inspect` prints and the API stores."""
    return summary(examples=len(ds), classes=ds.classes, counts=class_counts(ds), layout=ds.layout, notes=ds.notes)


def summary(
    *, examples: int, classes: Sequence[str], counts: np.ndarray, layout: Layout, notes: list[str]
) -> dict[str, Any]:
    """`dataset_stats` from what a streaming reader counted (`counts`: labeled examples per class)."""
    labeled = int(counts.sum())
    return {
        "examples": examples,
        "labeled": labeled,
        "unlabeled": examples - labeled,
        "classes": list(classes),
        "class_counts": {name: int(n) for name, n in zip(classes, counts, strict=True)},
        "layout": layout.to_dict(),
        "notes": list(notes),
    }
