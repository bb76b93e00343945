"""ganft_core.data, streamed: npz members read in chunks, inspection that keeps nothing, its memory."""

from __future__ import annotations

import io
import json
import re
import struct
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ganft_core.data import (
    dataset_stats,
    inspect_dataset,
    load_dataset,
    npz,
)
from ganft_core.errors import DatasetError
from tests.core.conftest import image_bytes

Factory = Callable[..., Path]
Reader = Callable[..., object]
# Every check must refuse a dataset the same way when the API inspects it (streamed) as when a job loads it.
READERS = pytest.mark.parametrize("read", [load_dataset, inspect_dataset], ids=["load", "inspect"])


# ------------------------------------------------------------------- streamed npz, inspection


@pytest.fixture
def tiny_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """npz arrays are streamed 40 bytes at a time: every test array spans many chunks, some inside one example."""
    monkeypatch.setattr(npz, "_CHUNK_BYTES", 40)


def test_inspect_gives_the_stats_of_the_loaded_dataset(
    tiny_images_npz: Path, tiny_features_npz: Path, tiny_csv: Path, tiny_imagefolder: Path, make_npz: Factory,
    make_zip: Factory, digits_npz: Path,
) -> None:  # fmt: skip
    """inspect_dataset (streamed, nothing kept) equals dataset_stats(load_dataset(...)) for every format, notes too."""
    noted_npz = make_npz(name="noted.npz", x=np.zeros((2, 3, 4, 3), dtype=np.uint8), extra=np.zeros(1))  # 2 notes
    grey, rgba = image_bytes(np.zeros((4, 4), dtype=np.uint8)), image_bytes(np.zeros((6, 6, 4), dtype=np.uint8))
    noted_zip = make_zip({"a/1.png": grey, "a/2.png": grey, "b/1.png": rgba, "_unlabeled/1.png": grey})  # 3 notes
    for path in (tiny_images_npz, tiny_features_npz, tiny_csv, tiny_imagefolder, noted_npz, noted_zip, digits_npz):
        assert inspect_dataset(path) == dataset_stats(load_dataset(path)), path.name
    assert len(inspect_dataset(noted_npz)["notes"]) == 3 and len(inspect_dataset(noted_zip)["notes"]) == 3


@pytest.mark.parametrize("compressed", [False, True], ids=["stored", "deflated"])
@pytest.mark.parametrize("fortran", [False, True], ids=["C order", "Fortran order"])
def test_npz_streamed_in_small_chunks_loads_exact_values(
    make_npz: Factory, tiny_chunks: None, fortran: bool, compressed: bool
) -> None:
    """40-byte chunks, either memory order: N×F, N×H×W, N×C×H×W and N×H×W×C arrays load as numpy holds them
    (N×C×H×W, uint8 as value/255 in float32), and inspect counts the same classes."""
    rng = np.random.default_rng(0)
    scale = np.float32(255.0)
    nhwc = rng.integers(0, 256, size=(7, 5, 2, 3), dtype=np.uint8)
    cases = {
        "int features": (rng.integers(-9, 9, size=(7, 5), dtype=np.int16), lambda x: x.astype(np.float32)),
        "float features": (rng.normal(size=(7, 5)), lambda x: x.astype(np.float32)),
        "grey uint8": (rng.integers(0, 256, size=(7, 5, 3), dtype=np.uint8), lambda x: x[:, None] / scale),
        "nchw float": (rng.random(size=(7, 3, 4, 2)), lambda x: x.astype(np.float32)),
        "nhwc uint8": (nhwc, lambda x: x.transpose(0, 3, 1, 2) / scale),
    }  # fmt: skip
    y = np.array([0, 1, 1, -1, 2, 2, 2])
    for i, (name, (x, expected)) in enumerate(cases.items()):
        stored = np.asfortranarray(x) if fortran else x
        path = make_npz(name=f"{i}.npz", compressed=compressed, x=stored, y=np.asfortranarray(y))
        ds = load_dataset(path)
        assert ds.x.dtype == np.float32 and ds.x.flags.c_contiguous, name
        np.testing.assert_array_equal(ds.x, expected(x).astype(np.float32), err_msg=name)
        np.testing.assert_array_equal(ds.y, y)
        assert inspect_dataset(path) == dataset_stats(ds)
        assert inspect_dataset(path)["class_counts"] == {"0": 1, "1": 2, "2": 3}


@READERS
@pytest.mark.parametrize("fortran", [False, True], ids=["C order", "Fortran order"])
def test_first_nan_is_named_in_the_datasets_order_across_chunks(
    make_npz: Factory, tiny_chunks: None, fortran: bool, read: Reader
) -> None:
    """NaN/inf in an N×H×W×C float x read 40 bytes at a time: the message names the first in N×C×H×W order
    (as one check over the whole array did), not the first in the file."""
    x = np.zeros((4, 5, 2, 3))  # N×H×W×C
    x[2, 1, 0, 2] = np.nan  # N×C×H×W (2, 2, 1, 0): first in the file in C order
    x[2, 4, 1, 0] = np.inf  # N×C×H×W (2, 0, 4, 1): first in the dataset
    x[0, 0, 0, 0] = 0.5
    x[3, 0, 0, 0] = np.nan
    path = make_npz(x=np.asfortranarray(x) if fortran else x, y=np.zeros(4, dtype=int))
    with pytest.raises(DatasetError, match=re.escape("first at index (2, 0, 4, 1)")):
        read(path)


@READERS
def test_value_range_and_labels_are_checked_over_every_chunk(
    make_npz: Factory, tiny_chunks: None, read: Reader
) -> None:
    """Extremes in the first and last chunks give the whole array's range; a fractional label in the last chunk
    wins over a label below -1 in the first (the order of the whole-array checks)."""
    x = np.full((9, 4, 4), 0.5)
    x[0, 0, 0], x[8, 3, 3] = -0.25, 1.5
    with pytest.raises(DatasetError, match=re.escape("values from -0.25 to 1.5")):
        read(make_npz(name="range.npz", x=x, y=np.zeros(9, dtype=int)))
    y = np.array([-2.0, 0, 0, 0, 0, 0, 0, 0, 0.5])
    with pytest.raises(DatasetError, match="integer labels"):
        read(make_npz(name="labels.npz", x=np.zeros((9, 2)), y=y))


@READERS
def test_labels_far_past_the_examples_are_refused_without_counting_to_them(
    make_npz: Factory, make_csv: Factory, read: Reader
) -> None:
    """A label of 10^15 (no class names) in npz or csv: refused naming the first empty classes, without ever
    building 10^15 class names or counts."""
    expected = re.escape("none for class '1', '2', '3', '4', '5' ...")
    with pytest.raises(DatasetError, match=expected):
        read(make_npz(x=np.zeros((3, 2)), y=np.array([0, 0, 10**15])))
    with pytest.raises(DatasetError, match=expected):
        read(make_csv(["f", "label"], [[1, 0], [2, 0], [3, 10**15]]), "csv")


def _npy_member(header: bytes, data: bytes) -> bytes:
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + data


@READERS
def test_hostile_npy_headers_are_refused_before_reading_data(make_zip: Factory, read: Reader) -> None:
    """A version-2 header claiming to be 4 GiB long, and a shape with negative sides whose product fits the
    member, are refused as invalid arrays."""
    huge = b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**32 - 1) + b"{"
    with pytest.raises(DatasetError, match="x.npy is not a valid .npy array"):
        read(make_zip({"x.npy": huge}, name="huge.npz"))
    negative = _npy_member(b"{'descr': '<f4', 'fortran_order': False, 'shape': (-2, -5), }\n", bytes(40))
    with pytest.raises(DatasetError, match="negative"):
        read(make_zip({"x.npy": negative}, name="negative.npz"))


def test_npz_member_shorter_than_declared_is_refused(make_zip: Factory) -> None:
    """A stored x.npy whose zip headers and npy header agree on 400 bytes of data but whose file ends
    early is refused while streaming (inspect) as while loading."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10, 10)})
    path = make_zip({"x.npy": header.getvalue() + bytes(400)}, name="cut.npz", compression=zipfile.ZIP_STORED)
    data = path.read_bytes()
    central = data.find(b"PK\x01\x02")
    cut = data[: central - 200] + data[central:]  # the member loses its last 200 bytes; the directory moves up
    offset = cut.find(b"PK\x05\x06") + 16  # the end record's offset of the central directory
    path.write_bytes(cut[:offset] + struct.pack("<I", central - 200) + cut[offset + 4 :])
    for read in (load_dataset, inspect_dataset):
        with pytest.raises(DatasetError, match="x.npy"):
            read(path)


# The inspector's peak RSS (ru_maxrss) read by a small launcher: at exec, Linux folds the spawning process's RSS
# high-water into the child's, and the pytest process is large.
_LAUNCH = (
    "import os, sys\n"
    "pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ)\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "sys.stderr.write(f'\\n{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}\\n')\n"
)
ROOT = Path(__file__).resolve().parents[2]


def _inspect_peak_rss_mib(path: Path) -> tuple[float, dict[str, object]]:
    """(peak RSS in MiB, printed summary) of `python -m ganft_core inspect PATH` in a fresh interpreter."""
    command = [sys.executable, "-c", _LAUNCH, sys.executable, "-m", "ganft_core", "inspect", str(path)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, timeout=300, check=True)
    exit_code, kib = (int(v) for v in done.stderr.decode().rstrip("\n").rsplit("\n", 1)[-1].split())
    assert exit_code == 0, done.stderr.decode()[-2000:]
    return kib / 1024, json.loads(done.stdout)


def _write_npz(path: Path, block: np.ndarray, n: int, compression: int) -> None:
    """An npz of x (`block` repeated to `n` rows, written a block at a time) and y (every other row labeled)."""
    header = {"descr": block.dtype.str, "fortran_order": False, "shape": (n, *block.shape[1:])}
    with zipfile.ZipFile(path, "w", compression=compression, compresslevel=1) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, header)
            for start in range(0, n, len(block)):
                member.write(block[: n - start].tobytes())
        with archive.open("y.npy", "w") as member:
            np.lib.format.write_array(member, np.where(np.arange(n) % 2 == 0, np.arange(n) % 3, -1))


@pytest.mark.parametrize(
    ("block", "mib", "compression"),
    [
        (np.random.default_rng(0).integers(0, 256, size=(256, 32, 32, 3), dtype=np.uint8), 96, zipfile.ZIP_STORED),
        (np.random.default_rng(0).normal(size=(4096, 256)).astype(np.float32), 64, zipfile.ZIP_DEFLATED),
    ],
    ids=["uint8 N×H×W×C images, stored, 96 MiB", "float32 features, deflated, 64 MiB"],
)
def test_inspecting_a_big_npz_holds_neither_x_nor_a_float32_copy(
    tmp_path: Path, block: np.ndarray, mib: int, compression: int
) -> None:
    """`python -m ganft_core inspect` on a big npz peaks less than 48 MiB above the same command on a one-example
    file: less than x itself, where loading x as float32 (as inspect did) grew ~5× (uint8) or ~2× (float32) x."""
    big, tiny = tmp_path / "big.npz", tmp_path / "tiny.npz"
    n = mib * 1024**2 // (block.nbytes // len(block))
    _write_npz(big, block, n, compression)
    _write_npz(tiny, block, 1, compression)
    baseline, _ = _inspect_peak_rss_mib(tiny)
    peak, stats = _inspect_peak_rss_mib(big)
    assert stats["examples"] == n and stats["labeled"] == (n + 1) // 2  # it did read the whole file
    assert peak - baseline < 48, f"peak {peak:.0f} MiB, baseline {baseline:.0f} MiB"
