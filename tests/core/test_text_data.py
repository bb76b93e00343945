"""The `text` dataset format: CSV and JSONL reading, detection, validation errors and stats (no torch here)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ganft_core.data import detect_format, inspect_dataset, load_dataset
from ganft_core.data.text import (
    MAX_TEXT_CHARS,
    TextDataset,
    align_text,
    load_text,
    split_text,
    text_stats,
    token_lengths,
)
from ganft_core.errors import DatasetError


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def jsonl(path: Path, rows: list[dict]) -> Path:
    return write(path, "\n".join(json.dumps(r) for r in rows) + "\n")


def test_csv_with_text_and_label_columns(tmp_path: Path) -> None:
    path = write(
        tmp_path / "r.csv",
        'id,text,label\n1,"a fine, funny film",pos\n2,dull and slow,neg\n'
        '3,"no label here",\n4,"quoted ""word"" inside",pos\n',
    )
    assert detect_format(path) == "text"
    ds = load_dataset(path)
    assert isinstance(ds, TextDataset)
    assert ds.texts == ["a fine, funny film", "dull and slow", "no label here", 'quoted "word" inside']
    assert ds.classes == ["neg", "pos"]
    assert ds.y.tolist() == [1, 0, -1, 1]


def test_jsonl_with_missing_null_and_integer_labels(tmp_path: Path) -> None:
    path = jsonl(
        tmp_path / "r.jsonl",
        [
            {"text": "good", "label": 1},
            {"text": "bad", "label": 0},
            {"text": "unknown"},
            {"text": "also unknown", "label": None},
            {"text": "empty label", "label": ""},
        ],
    )
    assert detect_format(path) == "text"
    ds = load_text(path)
    assert ds.classes == ["0", "1"]
    assert ds.y.tolist() == [1, 0, -1, -1, -1]


def test_a_numeric_csv_is_still_csv(tmp_path: Path) -> None:
    assert detect_format(write(tmp_path / "f.csv", "a,b,label\n1,2,x\n")) == "csv"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"text,label\n\xff\xfe bad bytes,pos\nok,neg\n", "not UTF-8"),
        ("words,label\nhello,pos\n", None),  # no text column: not detected as text; loading it as text fails
        ('text,label\n"  ",pos\nfine,neg\n', r"line 2: the text is empty"),
        ("text,label\ngood,pos\nbad,pos\n", "too few labels.*only 'pos'"),
        ("text,label\ngood,\nbad,\n", r"too few labels.*\(none\)"),
        ('{"text": "a", "label": "x"}\n{"text": 3, "label": "y"}\n', "line 2: the text must be a string"),
        ('{"text": "a", "label": "x"}\nnot json\n', "line 2 is not valid JSON"),
        ('{"text": "a", "label": "x"}\n{"label": "y"}\n', "line 2 must be a JSON object with a 'text' field"),
        ('{"text": "a", "label": ["x"]}\n', "line 1: 'label' must be a string"),
        ("text,label\ngood,pos,extra\n", "line 2 has 3 cells"),
        ("", "holds no examples"),
    ],
)
def test_format_errors_name_the_problem(tmp_path: Path, content: str | bytes, message: str | None) -> None:
    path = write(tmp_path / "bad.csv", content)
    with pytest.raises(DatasetError, match=message or "no 'text' column") as e:
        load_text(path)
    assert e.value.code == "invalid_dataset"


def test_over_long_texts_are_counted_and_cut(tmp_path: Path) -> None:
    long = "word " * (MAX_TEXT_CHARS // 5 + 10)
    path = jsonl(
        tmp_path / "r.jsonl",
        [{"text": long, "label": "a"}, {"text": "short", "label": "b"}, {"text": "word " * 100, "label": "a"}],
    )
    ds = load_text(path)
    assert len(ds.texts[0]) == MAX_TEXT_CHARS
    assert ds.notes == [f"1 texts over {MAX_TEXT_CHARS} characters were cut there"]
    stats = inspect_dataset(path)
    assert stats["over_max_length"]["64"] == 2 and stats["over_max_length"]["512"] == 1
    assert any("truncated at the default text.max_length" in n for n in stats["notes"])


def test_stats_report_token_length_percentiles(tmp_path: Path) -> None:
    rows = [{"text": " ".join(["good"] * n), "label": "pos" if n % 2 else "neg"} for n in range(1, 101)]
    rows.append({"text": "an unlabeled one"})
    path = jsonl(tmp_path / "r.jsonl", rows)
    stats = inspect_dataset(path, "text")
    assert stats["examples"] == 101 and stats["labeled"] == 100 and stats["unlabeled"] == 1
    assert stats["classes"] == ["neg", "pos"] and stats["class_counts"] == {"neg": 50, "pos": 50}
    assert stats["layout"] == {"kind": "text"}
    tokens = stats["tokens"]
    # "good" is one WordPiece token; [CLS] and [SEP] make two more
    assert tokens["max"] == 102 and tokens["p50"] == 52 and tokens["p90"] == 92  # of 3..102
    assert token_lengths(["good good"]).tolist() == [4]
    assert text_stats(load_text(path)) == stats


def test_split_and_align_keep_texts_with_their_labels(tmp_path: Path) -> None:
    texts = [f"text {i}" for i in range(40)]
    y = np.array([i % 2 for i in range(20)] + [-1] * 20)
    ds = TextDataset(texts, y, ["a", "b"])
    train, val = split_text(ds, 0.25, seed=3)
    assert len(val) == 4 and len(train) == 36  # round(10 × 0.25) = 2 of each class
    for part in (train, val):
        for text, label in zip(part.texts, part.y, strict=True):
            i = int(text.split()[1])
            assert label == (i % 2 if i < 20 else -1)
    other = TextDataset(["x", "y"], np.array([0, 1]), ["b", "a"])
    assert align_text(ds, other).y.tolist() == [1, 0]
    with pytest.raises(DatasetError, match="the validation set has class 'c'"):
        align_text(ds, TextDataset(["x", "y"], np.array([0, 1]), ["a", "c"]))
