"""Validation sets: a seeded stratified split of the training data, or an uploaded set aligned to it."""

from __future__ import annotations

import numpy as np

from ganft_core.data.types import UNLABELED, Dataset
from ganft_core.errors import DatasetError


def split_validation(ds: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """(train, validation): `fraction` of each class's labeled examples go to validation.

    Stratified per class and seeded with `np.random.RandomState(seed)`, so the same data and
    seed always give the same split. A class with at least two labeled examples keeps at
    least one on each side; a class with one keeps it for training. Unlabeled examples all
    stay in train. Both parts keep the original order of examples.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must lie in (0, 1), not {fraction}")
    rng = np.random.RandomState(seed)
    val_parts: list[np.ndarray] = []
    for label in range(len(ds.classes)):
        members = np.flatnonzero(ds.y == label)
        n = len(members)
        if n < 2:
            continue
        take = min(max(int(round(n * fraction)), 1), n - 1)
        val_parts.append(rng.permutation(members)[:take])
    if not val_parts:
        raise DatasetError(
            "too few labeled examples to split off a validation set (a class needs at least two); "
            "upload a validation dataset instead"
        )
    val_index = np.sort(np.concatenate(val_parts))
    in_val = np.zeros(len(ds), dtype=bool)
    in_val[val_index] = True
    labeled = int(ds.labeled.sum())
    note = f"validation: {len(val_index)} of {labeled} labeled examples split off (fraction {fraction:g}, seed {seed})"
    train = ds.subset(np.flatnonzero(~in_val), notes=[*ds.notes, note])
    val = ds.subset(val_index, notes=[*ds.notes, note])
    return train, val


def align_validation(train: Dataset, val: Dataset) -> Dataset:
    """`val` with its labels renumbered to `train`'s class indices.

    The layouts must match, and every class of `val` must be a class of `train` (matched by
    name); otherwise DatasetError naming the difference.
    """
    if val.layout != train.layout:
        raise DatasetError(
            f"the validation set holds {val.layout.describe()} but the training set {train.layout.describe()}"
        )
    index = {name: i for i, name in enumerate(train.classes)}
    unknown = [name for name in val.classes if name not in index]
    if unknown:
        raise DatasetError(
            f"the validation set has class {unknown[0]!r}, which the training set does not "
            f"(training classes: {', '.join(train.classes)})"
        )
    mapping = np.array([index[name] for name in val.classes] + [UNLABELED], dtype=np.int64)
    # mapping[-1] is UNLABELED, so label -1 maps to itself.
    return val.relabeled(mapping[val.y], list(train.classes), train.layout)
