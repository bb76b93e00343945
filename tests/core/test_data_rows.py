"""ganft_core.data.rows: rows of a memory-mapped shard by file reads, the values the map holds, RSS unchanged."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ganft_core.data.rows import RowReader
from ganft_core.data.types import Dataset, Layout


def _rss_file_kib() -> int:
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("RssFile:")).split()[1])


def test_reads_give_the_maps_rows_in_any_order(tmp_path: Path) -> None:
    x = np.random.RandomState(0).randint(0, 256, size=(50, 3, 4, 4)).astype(np.uint8)
    np.save(tmp_path / "x.npy", x)
    reader = RowReader(np.load(tmp_path / "x.npy", mmap_mode="r"))
    assert reader.file_backed
    rows = np.array([49, 3, 3, 4, 5, 0, 17], dtype=np.int64)
    assert np.array_equal(reader.read(rows), x[rows])
    assert np.array_equal(reader.read(np.arange(10, 20)), x[10:20])
    assert not RowReader(x).file_backed and np.array_equal(RowReader(x).read(rows), x[rows])


def test_a_replaced_file_is_not_read_in_place_of_the_mapped_one(tmp_path: Path) -> None:
    """A stored form remade under the same path (a changed source): the map keeps the old file, and so must reads."""
    old = np.full((8, 5), 1.0, dtype=np.float32)
    np.save(tmp_path / "x.npy", old)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    np.save(tmp_path / "new.npy", np.full((8, 5), 2.0, dtype=np.float32))
    os.replace(tmp_path / "new.npy", tmp_path / "x.npy")
    reader = RowReader(mapped)
    assert not reader.file_backed
    assert np.array_equal(reader.read(np.arange(8)), old)


def test_a_pass_over_a_stored_dataset_leaves_the_rss_where_it_was(tmp_path: Path) -> None:
    """`Dataset.batches` (what the normalisation sample and value ranges read) goes through RowReader: through the
    map, every page read would stay resident for the map's lifetime (+48 MiB here; +0.6 GB of ssgan's 10^6-image
    run in bench/RESULTS.md)."""
    x = np.random.RandomState(1).randint(0, 256, size=(4096, 3, 64, 64)).astype(np.uint8)  # 48 MiB
    np.save(tmp_path / "x.npy", x)
    source = np.load(tmp_path / "x.npy", mmap_mode="r")
    layout = Layout("image", channels=3, height=64, width=64)
    rows = np.sort(np.random.RandomState(2).permutation(4096)[:3000])
    for ds in (Dataset.mapped(source, np.zeros(4096, dtype=np.int64), ["a"], layout),
               Dataset.mapped(source, np.zeros(3000, dtype=np.int64), ["a"], layout, rows=rows)):  # fmt: skip
        before = _rss_file_kib()
        total = 0.0
        for part in ds.batches(500):
            total += float(part[:, 0, 0, 0].sum())
        assert _rss_file_kib() - before < 8 * 1024
        want = x[:, 0, 0, 0] if ds.rows is None else x[rows, 0, 0, 0]
        assert np.isclose(total, float((want.astype(np.float32) / 255).sum()), rtol=1e-5)
