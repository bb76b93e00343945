"""The `csv` format: a header row, numeric feature columns and one `label` column.

An empty label means unlabeled. Labels are class names (classes sorted by name) unless every
label is an integer, in which case they are class indices 0..K-1 and `-1` also means
unlabeled (as in npz). The file is read as a stream; `load_csv` gathers rows in float32
blocks, `inspect_csv` keeps none (it counts the label cells).
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ganft_core.data.archive import ArchiveLimits
from ganft_core.data.types import UNLABELED, Dataset, Layout, NumberedClasses, require_class_examples, summary
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


def _classes(tally: Counter[str], rows: int) -> tuple[list[str] | NumberedClasses, dict[str, int]]:
    """The class names and each distinct label cell's class index (-1 = unlabeled)."""
    given = [s for s in tally if s]
    try:
        as_ints = {s: int(s) for s in given}
    except ValueError:
        classes = sorted(given)
        index = {name: i for i, name in enumerate(classes)}
        return classes, {s: index[s] if s else UNLABELED for s in tally}
    low = min(as_ints.values(), default=UNLABELED)
    if low < UNLABELED:
        raise DatasetError(f"integer labels must be class indices or -1 (unlabeled); found {low}")
    top = max(as_ints.values(), default=UNLABELED)
    # More classes than rows + 5 leave more than five classes empty, the first five below that
    # (require_class_examples): no need to name them all.
    return NumberedClasses(min(top, rows + 5) + 1), {s: as_ints.get(s, UNLABELED) for s in tally}


def _counts(tally: Counter[str], index: dict[str, int], classes: int) -> np.ndarray:
    """Labeled rows per class, for the first `classes` classes."""
    counts = np.zeros(classes, dtype=np.int64)
    for cell, rows in tally.items():
        if 0 <= index[cell] < classes:
            counts[index[cell]] += rows
    return counts


@dataclass
class _Csv:
    features: int  # feature columns
    rows: int
    tally: Counter[str]  # label cell -> rows
    blocks: list[np.ndarray]  # float32 rows, when kept
    labels: list[str]  # the label cell of each row, when kept


def _read_csv(path: str | Path, limits: ArchiveLimits, *, keep: bool) -> _Csv:
    """Parse and check every cell; with `keep`, also gather the rows (float32 blocks) and label cells."""
    out = _Csv(features=0, rows=0, tally=Counter(), blocks=[], labels=[])
    rows: list[list[float]] = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise DatasetError("the csv file is empty")
            label_col, features = _header(header)
            out.features = len(features)
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
                        label = cell.strip()
                        out.tally[label] += 1
                        if keep:
                            out.labels.append(label)
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
                out.rows += 1
                if keep:
                    rows.append(row)
                if out.rows % _BLOCK == 0:
                    if keep:
                        out.blocks.append(np.array(rows, dtype=np.float32))
                        rows = []
                    if out.rows * len(features) > limits.max_dataset_values:
                        raise DatasetError(f"the csv holds more than {limits.max_dataset_values} values")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"the csv file is not UTF-8 text: {exc}") from exc
    except csv.Error as exc:
        raise DatasetError(f"the csv file cannot be parsed: {exc}") from exc
    if rows:
        out.blocks.append(np.array(rows, dtype=np.float32))
    if not out.rows:
        raise DatasetError("the csv file has a header but no rows")
    return out


def load_csv(path: str | Path, limits: ArchiveLimits) -> Dataset:
    """Load a comma-separated file (UTF-8, optional BOM); see the module docstring."""
    parsed = _read_csv(path, limits, keep=True)
    classes, index = _classes(parsed.tally, parsed.rows)
    require_class_examples(classes, _counts(parsed.tally, index, len(classes)))
    labels = np.array([index[s] for s in parsed.labels], dtype=np.int64)
    x = np.concatenate(parsed.blocks)
    return Dataset(x=x, y=labels, classes=list(classes), layout=Layout("features", features=parsed.features))


def inspect_csv(path: str | Path, limits: ArchiveLimits) -> dict[str, Any]:
    """`dataset_stats(load_csv(path))` with the same checks, keeping no rows: labels are only counted."""
    parsed = _read_csv(path, limits, keep=False)
    classes, index = _classes(parsed.tally, parsed.rows)
    counts = _counts(parsed.tally, index, len(classes))
    require_class_examples(classes, counts)
    layout = Layout("features", features=parsed.features)
    return summary(examples=parsed.rows, classes=classes, counts=counts, layout=layout, notes=[])
