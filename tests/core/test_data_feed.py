"""ganft_core.data.feed: batches from RAM or a memory-mapped array, on-device and streamed paths alike."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ganft_core.data.feed import DEFAULT_MAX_DEVICE_BYTES, ENV_MAX_DEVICE_BYTES, Feed, default_max_device_bytes

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


def _images(n: int = 37, seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, size=(n, 3, 5, 4)).astype(np.uint8)


def _mapped(tmp_path: Path, x: np.ndarray) -> np.ndarray:
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    assert isinstance(mapped, np.memmap)
    return mapped


def _expected(x: np.ndarray) -> torch.Tensor:
    """What the in-memory loader held: numpy's float32 value/255."""
    out = x.astype(np.float32)
    np.divide(out, 255.0, out=out)
    return torch.from_numpy(out)


@pytest.mark.parametrize("limit", [None, 0], ids=["on device", "streamed"])
@pytest.mark.parametrize("mapped", [False, True], ids=["ram", "memmap"])
def test_gather_gives_the_loaders_float_values_bit_for_bit(tmp_path: Path, limit: int | None, mapped: bool) -> None:
    x = _images()
    source = _mapped(tmp_path, x) if mapped else x
    feed = Feed(source, CPU, max_device_bytes=limit)
    assert feed.on_device is (limit is None) and len(feed) == 37
    idx = torch.tensor([5, 0, 36, 5, 17])  # unsorted, with a repeat
    batch = feed.gather(idx)
    assert batch.dtype == torch.float32 and batch.shape == (5, 3, 5, 4)
    assert torch.equal(batch, _expected(x)[idx])


def test_features_are_returned_as_given(tmp_path: Path) -> None:
    x = np.random.RandomState(1).normal(size=(20, 6)).astype(np.float32) * 100
    for feed in (Feed(x, CPU), Feed(_mapped(tmp_path, x), CPU, max_device_bytes=0)):
        assert torch.equal(feed.gather(torch.tensor([3, 19, 0])), torch.from_numpy(x[[3, 19, 0]]))


def test_prefetched_batch_is_the_one_gathered(tmp_path: Path) -> None:
    x = _images(50)
    feed = Feed(_mapped(tmp_path, x), CPU, max_device_bytes=0)
    first, second = torch.tensor([1, 2, 40]), torch.tensor([7, 7, 0, 49])
    feed.prefetch(first)
    assert torch.equal(feed.gather(first), _expected(x)[first])
    feed.prefetch(first)  # a prefetch that the trainer did not use: the next gather still gives what it asks
    assert torch.equal(feed.gather(second), _expected(x)[second])
    feed.prefetch(second)
    feed.prefetch(first)  # a newer prefetch replaces the older one
    assert torch.equal(feed.gather(first), _expected(x)[first])
    feed.close()


@pytest.mark.parametrize("limit", [None, 0], ids=["on device", "streamed"])
def test_iter_batches_covers_every_example_in_order(tmp_path: Path, limit: int | None) -> None:
    x = _images(23)
    feed = Feed(_mapped(tmp_path, x), CPU, max_device_bytes=limit)
    batches = list(feed.iter_batches(5))
    assert [len(b) for b in batches] == [5, 5, 5, 5, 3]
    assert torch.equal(torch.cat(batches), _expected(x))
    with pytest.raises(ValueError, match="batch"):
        next(feed.iter_batches(0))


@pytest.mark.parametrize("limit", [None, 0], ids=["on device", "streamed"])
def test_rows_select_a_subset_without_copying_the_source(tmp_path: Path, limit: int | None) -> None:
    x = _images(30)
    rows = np.array([29, 3, 4, 10])
    feed = Feed(_mapped(tmp_path, x), CPU, max_device_bytes=limit, rows=rows)
    assert len(feed) == 4 and feed.nbytes == 4 * 3 * 5 * 4
    assert torch.equal(feed.gather(torch.tensor([0, 3])), _expected(x)[[29, 10]])
    assert torch.equal(torch.cat(list(feed.iter_batches(3))), _expected(x)[rows])
    with pytest.raises(IndexError):
        Feed(x, CPU, max_device_bytes=0, rows=rows).gather(torch.tensor([4]))


def test_threshold_picks_the_path() -> None:
    x = _images(10)  # 600 bytes stored
    assert Feed(x, CPU, max_device_bytes=600).on_device
    assert not Feed(x, CPU, max_device_bytes=599).on_device


def test_default_threshold_and_its_environment_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_MAX_DEVICE_BYTES, raising=False)
    assert default_max_device_bytes(CPU) == DEFAULT_MAX_DEVICE_BYTES
    monkeypatch.setenv(ENV_MAX_DEVICE_BYTES, "0")
    assert not Feed(_images(2), CPU).on_device
    monkeypatch.setenv(ENV_MAX_DEVICE_BYTES, "-1")
    with pytest.raises(ValueError, match=ENV_MAX_DEVICE_BYTES):
        default_max_device_bytes(CPU)
    monkeypatch.setenv(ENV_MAX_DEVICE_BYTES, "lots")
    with pytest.raises(ValueError, match=ENV_MAX_DEVICE_BYTES):
        default_max_device_bytes(CPU)


def test_channels_last_and_refused_dtypes() -> None:
    batch = Feed(_images(4), CPU, channels_last=True, max_device_bytes=0).gather(torch.tensor([0, 1]))
    assert batch.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="float64"):
        Feed(np.zeros((3, 2)), CPU)
    with pytest.raises(ValueError, match="one example per row"):
        Feed(np.zeros(3, dtype=np.float32), CPU)


def _rss_file_kib() -> int:
    """The process's resident file-backed pages (mapped files), from /proc."""
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("RssFile:")).split()[1])


@pytest.mark.parametrize("rows", [False, True], ids=["all", "subset"])
def test_streamed_reads_of_a_shard_do_not_stay_in_the_process_rss(tmp_path: Path, rows: bool) -> None:
    """Rows are read with file reads, not through the map: a pass over a 48 MiB shard leaves RssFile where it was
    (through the map, every page read would stay resident for the map's lifetime: +48 MiB)."""
    x = np.random.RandomState(3).randint(0, 256, size=(4096, 3, 64, 64)).astype(np.uint8)  # 48 MiB
    source = _mapped(tmp_path, x)
    subset = np.random.RandomState(4).permutation(4096)[:3000] if rows else None
    feed = Feed(source, CPU, max_device_bytes=0, rows=subset)
    before = _rss_file_kib()
    seen = 0
    for batch in feed.iter_batches(500):
        seen += len(batch)
    idx = torch.tensor([4000 if not rows else 2999, 3, 3, 2, 1, 0, 7, 6])  # out of order, repeats, runs
    got = feed.gather(idx)
    assert _rss_file_kib() - before < 8 * 1024
    expected = _expected(x if subset is None else x[subset])
    assert seen == len(feed) and torch.equal(got, expected[idx])
    on_device = Feed(source, CPU, rows=subset)  # the whole (subset) read into RAM with file reads too
    assert on_device.on_device and torch.equal(on_device.gather(idx), expected[idx])
    assert _rss_file_kib() - before < 8 * 1024
