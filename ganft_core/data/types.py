"""The in-memory dataset every loader returns, and the checks and summary shared by all formats."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import numpy as np

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


@dataclass
class Dataset:
    """A loaded dataset. `x` and `y` are coerced to float32 / int64 on construction.

    x: images N×C×H×W scaled to [0, 1] (uint8/255, float data as given); features N×F raw.
    y: class index per example, -1 = unlabeled.
    """

    x: np.ndarray
    y: np.ndarray
    classes: list[str]  # index = label
    layout: Layout
    notes: list[str] = field(default_factory=list)  # what the loader changed (resized, converted, ...)

    def __post_init__(self) -> None:
        self.x = np.ascontiguousarray(self.x, dtype=np.float32)
        self.y = np.ascontiguousarray(self.y, dtype=np.int64)
        if self.y.ndim != 1 or len(self.y) != len(self.x):
            raise DatasetError(f"x holds {len(self.x)} examples but y has shape {self.y.shape}")
        if self.x.shape[1:] != self.layout.shape():
            raise DatasetError(f"x has shape {self.x.shape} but the layout says {self.layout.describe()}")
        if len(self.y) and (self.y.min() < UNLABELED or self.y.max() >= len(self.classes)):
            raise DatasetError(
                f"labels must lie in -1..{len(self.classes) - 1} for {len(self.classes)} classes, "
                f"found {int(self.y.min())}..{int(self.y.max())}"
            )

    def __len__(self) -> int:
        return len(self.y)

    @property
    def labeled(self) -> np.ndarray:
        """Boolean mask (N,) of the labeled examples."""
        return self.y != UNLABELED

    def subset(self, indices: np.ndarray, *, notes: list[str] | None = None) -> Dataset:
        """The examples at `indices` (in that order), with the same classes and layout."""
        return Dataset(
            x=self.x[indices],
            y=self.y[indices],
            classes=list(self.classes),
            layout=self.layout,
            notes=list(self.notes if notes is None else notes),
        )


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
