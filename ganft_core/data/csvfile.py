"""The `csv` format: a header row, numeric feature columns and one `label` column.

An empty label means unlabeled. Labels are class names (classes sorted by name) unless every
label is an integer, in which case they are class indices 0..K-1 and `-1` also means
unlabeled (as in npz). The file is read as a stream; rows are gathered in float32 blocks.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from ganft_core.data.archive import ArchiveLimits
from ganft_core.data.types import UNLABELED, Dataset, Layout, require_labeled_classes
from ganft_core.errors import DatasetError

_BLOCK = 4096  # rows per float32 block
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _header(row: list[str]) -> tuple[int, list[str]]:
    """(index of the label column, names of the feature columns)."""
    names = [cell.strip() for cell in row]
    labels = [i for i, name in enumerate(names) if name.lower() == "label"]
    if not labels:
        hint = " (the file must be comma-separated)" if len(names) == 1 and any(s in names[0] for s in ";\t") else ""
        raise DatasetError(f"the csv header has no 'label' column{hint}")
    if len(labels) > 1:
        raise DatasetError("the csv header has more than one 'label' column")
    for i, name in enumerate(names):
        if not name:
            raise DatasetError(f"column {i + 1} of the csv header has no name")
        if names.index(name) != i:
            raise DatasetError(f"the csv header names column {name!r} twice")
    features = [name for i, name in enumerate(names) if i != labels[0]]
    if not features:
        raise DatasetError("the csv has a 'label' column but no feature columns")
    return labels[0], features


def _labels(raw: list[str]) -> tuple[np.ndarray, list[str]]:
    """Class indices (-1 = unlabeled) and class names from the raw label cells."""
    given = [s for s in raw if s]
    try:
        as_ints = [int(s) for s in given]
    except ValueError:
        classes = sorted(set(given))
        index = {name: i for i, name in enumerate(classes)}
        return np.array([index[s] if s else UNLABELED for s in raw], dtype=np.int64), classes
    if as_ints and min(as_ints) < UNLABELED:
        raise DatasetError(f"integer labels must be class indices or -1 (unlabeled); found {min(as_ints)}")
    labels = np.array([int(s) if s else UNLABELED for s in raw], dtype=np.int64)
    top = max(as_ints, default=UNLABELED)
    return labels, [str(i) for i in range(top + 1)]


def load_csv(path: str | Path, limits: ArchiveLimits) -> Dataset:
    """Load a comma-separated file (UTF-8, optional BOM); see the module docstring."""
    blocks: list[np.ndarray] = []
    rows: list[list[float]] = []
    raw_labels: list[str] = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise DatasetError("the csv file is empty")
            label_col, features = _header(header)
            width = len(header)
            for cells in reader:
                if not cells or all(not c.strip() for c in cells):
                    continue  # blank line
                line = reader.line_num
                if len(cells) != width:
                    raise DatasetError(f"line {line} of the csv has {len(cells)} cells; the header has {width}")
                row: list[float] = []
                for i, cell in enumerate(cells):
                    if i == label_col:
                        raw_labels.append(cell.strip())
                        continue
                    try:
                        value = float(cell)
                    except ValueError:
                        raise DatasetError(
                            f"line {line}, column {header[i].strip()!r}: {cell!r} is not a number"
                        ) from None
                    if not math.isfinite(value) or abs(value) > _FLOAT32_MAX:
                        raise DatasetError(
                            f"line {line}, column {header[i].strip()!r}: {cell!r} is not a finite number"
                        )
                    row.append(value)
                rows.append(row)
                if len(rows) == _BLOCK:
                    blocks.append(np.array(rows, dtype=np.float32))
                    rows = []
                    if len(raw_labels) * len(features) > limits.max_dataset_values:
                        raise DatasetError(f"the csv holds more than {limits.max_dataset_values} values")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"the csv file is not UTF-8 text: {exc}") from exc
    except csv.Error as exc:
        raise DatasetError(f"the csv file cannot be parsed: {exc}") from exc
    if rows:
        blocks.append(np.array(rows, dtype=np.float32))
    if not blocks:
        raise DatasetError("the csv file has a header but no rows")
    x = np.concatenate(blocks)
    labels, classes = _labels(raw_labels)
    ds = Dataset(x=x, y=labels, classes=classes, layout=Layout("features", features=len(features)))
    require_labeled_classes(ds)
    return ds
