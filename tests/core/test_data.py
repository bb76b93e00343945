"""ganft_core.data: the three upload formats, hostile archives, validation splits and summaries."""

from __future__ import annotations

import io
import json
import stat
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ganft_core.data import (
    ArchiveLimits,
    Dataset,
    Layout,
    align_validation,
    dataset_stats,
    detect_format,
    inspect_dataset,
    load_dataset,
    split_validation,
)
from ganft_core.errors import DatasetError
from tests.core.conftest import band_images, image_bytes, labels

Factory = Callable[..., Path]
Reader = Callable[..., object]
# Every check must refuse a dataset the same way when the API inspects it (streamed) as when a job loads it.
READERS = pytest.mark.parametrize("read", [load_dataset, inspect_dataset], ids=["load", "inspect"])


# ------------------------------------------------------------------------------------- npz


def test_npz_uint8_nchw_images_are_scaled(tiny_images_npz: Path) -> None:
    """uint8 N×C×H×W images load as float32 in [0, 1] (value/255) with the named classes and unlabeled rows."""
    raw = np.load(tiny_images_npz)
    ds = load_dataset(tiny_images_npz)
    assert ds.x.dtype == np.float32 and ds.x.shape == (36, 1, 8, 8)
    np.testing.assert_allclose(ds.x, raw["x"] / 255.0, atol=1e-7)
    assert ds.layout == Layout("image", channels=1, height=8, width=8)
    assert ds.classes == ["a", "b", "c"]
    assert ds.y.dtype == np.int64 and (ds.y == -1).sum() == 6
    assert ds.notes == []


def test_npz_nhwc_images_become_nchw(make_npz: Factory) -> None:
    """N×H×W×3 RGB images (uncompressed npz) are transposed to N×3×H×W with the same pixels."""
    x = band_images(2, 2, size=6, channels=3)
    ds = load_dataset(make_npz(x=x, y=labels(2, 2), compressed=False))
    assert ds.layout.shape() == (3, 6, 6)
    np.testing.assert_allclose(ds.x, x.transpose(0, 3, 1, 2) / 255.0, atol=1e-7)


def test_npz_nhw_images_get_one_channel(make_npz: Factory) -> None:
    """N×H×W greyscale images get a channel axis: N×1×H×W."""
    x = band_images(3, 2, size=5)[..., 0]
    ds = load_dataset(make_npz(x=x, y=labels(3, 2)))
    assert ds.x.shape == (6, 1, 5, 5)


def test_npz_ambiguous_layout_reads_nchw_and_says_so(make_npz: Factory) -> None:
    """x of shape N×3×4×3 could be either layout: it is read as N×C×H×W and a note says so."""
    x = np.zeros((2, 3, 4, 3), dtype=np.uint8)
    ds = load_dataset(make_npz(x=x, y=np.array([0, 0])))
    assert ds.layout.shape() == (3, 4, 3)
    assert any("N×C×H×W" in note for note in ds.notes)


def test_npz_float_images_are_kept_as_given(make_npz: Factory) -> None:
    """float64 images already in [0, 1] are kept as given (only cast to float32)."""
    x = np.linspace(0.0, 1.0, 2 * 16).reshape(2, 1, 4, 4)
    ds = load_dataset(make_npz(x=x, y=np.array([0, 1])))
    np.testing.assert_allclose(ds.x, x.astype(np.float32))


def test_npz_feature_vectors(tiny_features_npz: Path) -> None:
    """A 2-D float x is feature vectors, kept raw; classes without names become '0'..'K-1'."""
    raw = np.load(tiny_features_npz)
    ds = load_dataset(tiny_features_npz)
    assert ds.layout == Layout("features", features=4)
    np.testing.assert_array_equal(ds.x, raw["x"])
    assert ds.classes == ["0", "1", "2"]
    assert int(ds.labeled.sum()) == 60


def test_npz_without_y_is_all_unlabeled(make_npz: Factory) -> None:
    """An npz with only x loads as an unlabeled dataset (no classes), with a note."""
    ds = load_dataset(make_npz(x=np.zeros((3, 4, 4), dtype=np.uint8)))
    assert ds.classes == [] and (ds.y == -1).all()
    assert ds.notes == ["no y array: every example is unlabeled"]


@READERS
def test_npz_object_array_is_refused_without_unpickling(make_npz: Factory, read: Reader) -> None:
    """A y stored as a pickled object array is refused (allow_pickle is never used)."""
    path = make_npz(x=np.zeros((3, 2)), y=np.array([0, "a", None], dtype=object))
    with pytest.raises(DatasetError, match="object array"):
        read(path)


@READERS
def test_npz_header_claiming_more_data_than_stored_is_refused(make_zip: Factory, read: Reader) -> None:
    """An x.npy whose header claims 10^9 rows but holds 40 bytes is refused before anything is allocated."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**9, 10)})
    path = make_zip({"x.npy": header.getvalue() + bytes(40)}, name="lie.npz")
    with pytest.raises(DatasetError, match="other data"):
        read(path)


NPZ_ERRORS = {
    "y shorter than x": (dict(x=np.zeros((4, 3)), y=np.array([0, 1, 0])), "shape"),
    "fractional labels": (dict(x=np.zeros((2, 3)), y=np.array([0.5, 1.0])), "integer labels"),
    "label beyond classes": (dict(x=np.zeros((2, 3)), y=np.array([0, 2]), classes=np.array(["a", "b"])), "label 2"),
    "label below -1": (dict(x=np.zeros((2, 3)), y=np.array([0, -2])), "-1"),
    "nan in features": (dict(x=np.array([[0.0, np.nan], [1.0, 2.0]]), y=np.array([0, 0])), "NaN"),
    "inf in images": (dict(x=np.array([[[0.0, np.inf]]] * 2), y=np.array([0, 0])), "NaN or infinite"),
    "image values above 1": (dict(x=np.full((2, 3, 3), 2.0), y=np.array([0, 0])), r"\[0, 1\]"),
    "int16 images": (dict(x=np.zeros((2, 3, 3), dtype=np.int16), y=np.array([0, 0])), "uint8"),
    "no examples": (dict(x=np.zeros((0, 3)), y=np.zeros(0, dtype=int)), "no examples"),
    "1-D x": (dict(x=np.zeros(5), y=np.zeros(5, dtype=int)), "expected"),
    "5-D x": (dict(x=np.zeros((2, 1, 1, 1, 1)), y=np.array([0, 0])), "expected"),
    "no channel axis": (dict(x=np.zeros((2, 5, 5, 5), dtype=np.uint8), y=np.array([0, 0])), "channels"),
    "missing x": (dict(features=np.zeros((2, 3)), y=np.array([0, 0])), "no array 'x'"),
    "class without labels": (dict(x=np.zeros((2, 3)), y=np.array([0, 0]), classes=np.array(["a", "b"])), "'b'"),
    "gap in integer labels": (dict(x=np.zeros((2, 3)), y=np.array([0, 2])), "'1'"),
    "duplicate class names": (dict(x=np.zeros((2, 3)), y=np.array([0, 1]), classes=np.array(["a", "a"])), "twice"),
    "complex features": (dict(x=np.zeros((2, 3), dtype=complex), y=np.array([0, 0])), "dtype"),
}


@READERS
@pytest.mark.parametrize("case", list(NPZ_ERRORS))
def test_npz_problems_are_named(make_npz: Factory, case: str, read: Reader) -> None:
    """Each broken npz (see NPZ_ERRORS: wrong shapes, bad labels, NaN/inf, range, dtype) is a DatasetError naming it."""
    arrays, message = NPZ_ERRORS[case]
    with pytest.raises(DatasetError, match=message):
        read(make_npz(**arrays))


# ------------------------------------------------------------------------------------- csv


def test_csv_with_string_labels(tiny_csv: Path) -> None:
    """String labels become classes sorted by name; empty label cells are unlabeled; features match the file."""
    ds = load_dataset(tiny_csv)
    assert ds.classes == ["blue", "green", "red"]
    assert ds.layout == Layout("features", features=4)
    assert dataset_stats(ds)["class_counts"] == {"blue": 20, "green": 20, "red": 20}
    assert int((ds.y == -1).sum()) == 15
    assert ds.y[0] == 2  # the first row is 'red'


def test_csv_with_integer_labels_bom_and_blank_lines(make_csv: Factory) -> None:
    """Integer labels are class indices ('-1' and '' unlabeled); a UTF-8 BOM and blank lines are fine."""
    path = make_csv(["a", "label", "b"], [[1, 0, 2.5], [3, 1, -4], [], [5, -1, 6], [7, "", 8], [9, 1, 1e3]])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    ds = load_dataset(path, "csv")
    assert ds.classes == ["0", "1"]
    np.testing.assert_array_equal(ds.y, [0, 1, -1, -1, 1])
    np.testing.assert_array_equal(ds.x[:, 1], [2.5, -4, 6, 8, 1000])


CSV_ERRORS = {
    "word in a feature cell": (["f", "label"], [[1, "a"], ["abc", "b"]], "line 3, column 'f': 'abc' is not a number"),
    "empty feature cell": (["f", "label"], [["", "a"]], "line 2, column 'f'"),
    "nan cell": (["f", "label"], [["nan", "a"]], "not a finite number"),
    "too large for float32": (["f", "label"], [["1e39", "a"]], "not a finite number"),
    "no label column": (["f", "g"], [[1, 2]], "no 'label' column"),
    "semicolons": (["f;label"], [["1;a"]], "comma-separated"),
    "ragged row": (["f", "label"], [[1, "a"], [1, 2, "a"]], "line 3 of the csv has 3 cells"),
    "header only": (["f", "label"], [], "no rows"),
    "only a label column": (["label"], [["a"]], "no feature columns"),
    "duplicate column": (["f", "f", "label"], [[1, 2, "a"]], "twice"),
    "label below -1": (["f", "label"], [[1, 0], [2, -3]], "-3"),
}


@READERS
@pytest.mark.parametrize("case", list(CSV_ERRORS))
def test_csv_problems_are_named(make_csv: Factory, case: str, read: Reader) -> None:
    """Each broken csv (see CSV_ERRORS) is a DatasetError whose message names the line, column or problem."""
    header, rows, message = CSV_ERRORS[case]
    with pytest.raises(DatasetError, match=message):
        read(make_csv(header, rows), "csv")


@READERS
def test_csv_that_is_not_utf8_is_refused(tmp_path: Path, read: Reader) -> None:
    """A Latin-1 csv (byte 0xe9) is refused as not UTF-8."""
    path = tmp_path / "latin.csv"
    path.write_bytes(b"f,label\n1,caf\xe9\n")
    with pytest.raises(DatasetError, match="UTF-8"):
        read(path, "csv")


# ----------------------------------------------------------------------------- imagefolder


def test_imagefolder_classes_and_unlabeled(tiny_imagefolder: Path) -> None:
    """cat/, dog/ and _unlabeled/ of RGB PNGs: classes sorted, pixels exact (value/255), unlabeled kept."""
    ds = load_dataset(tiny_imagefolder)
    assert ds.classes == ["cat", "dog"]
    assert ds.layout == Layout("image", channels=3, height=8, width=8)
    assert dataset_stats(ds)["class_counts"] == {"cat": 6, "dog": 6} and int((ds.y == -1).sum()) == 4
    # entries are read sorted by name: _unlabeled/ first, then cat/0000.png
    first_cat = band_images(8, 2, channels=3)[0]
    np.testing.assert_allclose(ds.x[4], first_cat.transpose(2, 0, 1) / 255.0, atol=1e-7)
    assert ds.notes == []


def test_imagefolder_wrapper_folder_and_os_litter(make_zip: Factory) -> None:
    """One top-level folder wrapping the classes is stripped; __MACOSX/, ._x, .DS_Store and Thumbs.db are skipped."""
    png = image_bytes(np.zeros((4, 4), dtype=np.uint8))
    path = make_zip(
        {
            "upload/": b"",
            "upload/a/1.png": png,
            "upload/b/1.png": png,
            "upload/b/.DS_Store": b"\x00\x01",
            "upload/b/._1.png": b"junk",
            "upload/Thumbs.db": b"junk",
            "__MACOSX/upload/a/._1.png": b"junk",
        }
    )
    ds = load_dataset(path)
    assert ds.classes == ["a", "b"] and len(ds) == 2 and ds.layout.channels == 1


def test_imagefolder_mixed_sizes_and_modes(make_zip: Factory) -> None:
    """Grey, RGBA and JPEG images of two sizes: all become RGB at the most common size, each change noted."""
    grey = image_bytes(np.full((6, 6), 200, dtype=np.uint8))
    rgba = image_bytes(np.full((6, 6, 4), 100, dtype=np.uint8))
    jpeg = image_bytes(np.full((12, 9, 3), 50, dtype=np.uint8), "JPEG")
    ds = load_dataset(make_zip({"a/1.png": grey, "a/2.png": grey, "b/1.png": rgba, "b/2.jpg": jpeg}))
    assert ds.layout == Layout("image", channels=3, height=6, width=6)
    assert ds.notes == [
        "dropped the alpha channel of 1 image(s)",
        "converted 2 greyscale image(s) to RGB (the dataset has colour images)",
        "resized 1 image(s) to 6×6 (the most common size)",
    ]
    np.testing.assert_allclose(ds.x[0], 200 / 255.0, atol=1e-6)  # grey copied into all three channels


def test_imagefolder_16bit_greyscale_is_scaled_not_clipped(make_zip: Factory) -> None:
    """A 16-bit greyscale PNG (65535 = white) loads as 1.0, not clipped garbage, with a note."""
    wide = np.array([[0, 65535], [32896, 65535]], dtype=np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(wide).save(buffer, format="PNG")
    ds = load_dataset(make_zip({"a/1.png": buffer.getvalue()}))
    np.testing.assert_allclose(ds.x[0, 0], np.array([[0.0, 1.0], [128 / 255, 1.0]]), atol=1e-6)
    assert ds.notes == ["reduced 1 16-bit greyscale image(s) to 8 bits"]


def _png_with_size(width: int, height: int) -> bytes:
    """A valid 1×1 PNG whose IHDR then claims width×height (CRC fixed up)."""
    png = bytearray(image_bytes(np.zeros((1, 1), dtype=np.uint8)))
    ihdr = bytearray(png[12:29])  # b"IHDR" + 13 bytes of header data
    ihdr[4:12] = struct.pack(">II", width, height)
    png[12:29] = ihdr
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(png)


PNG = image_bytes(np.zeros((4, 4), dtype=np.uint8))
NOISE = image_bytes(np.random.RandomState(0).randint(0, 256, size=(16, 16, 3)).astype(np.uint8))
IMAGEFOLDER_ERRORS = {
    "path traversal": ({"a/1.png": PNG, "../../etc/passwd": b"x"}, "outside the archive"),
    "backslash traversal": ({"a/1.png": PNG, "a\\..\\..\\evil.png": PNG}, "outside the archive"),
    "absolute path": ({"/etc/cron.d/x.png": PNG}, "absolute path"),
    "drive letter": ({"C:/Windows/x.png": PNG}, "absolute path"),
    "non-image file": ({"a/1.png": PNG, "a/notes.txt": b"hello"}, "'a/notes.txt' is not a PNG or JPEG"),
    "gif image": ({"a/1.gif": image_bytes(np.zeros((2, 2), dtype=np.uint8), "GIF")}, "not a PNG or JPEG"),
    "truncated png": ({"a/1.png": NOISE[: len(NOISE) // 2]}, "'a/1.png' is truncated or corrupt"),
    "file outside class folders": ({"a/1.png": PNG, "loose.png": PNG}, "not inside a class folder"),
    "nested folders": ({"a/1.png": PNG, "b/deep/1.png": PNG}, "nested too deep"),
    "empty class folder": ({"a/1.png": PNG, "b/": b""}, "class folder 'b' has no images"),
    "only os litter": ({"__MACOSX/a/._1.png": b"x", ".DS_Store": b"x"}, "no images"),
    "decompression bomb header": ({"a/1.png": _png_with_size(100_000, 100_000)}, "pixels"),
    "duplicate entry": ({"a/1.png": PNG, "a\\1.png": PNG}, "twice"),
}


@READERS
@pytest.mark.parametrize("case", list(IMAGEFOLDER_ERRORS))
def test_imagefolder_hostile_or_broken_archives_are_refused(make_zip: Factory, case: str, read: Reader) -> None:
    """Each zip in IMAGEFOLDER_ERRORS (traversal, absolute paths, non-images, bad layout, bombs) is refused by name."""
    entries, message = IMAGEFOLDER_ERRORS[case]
    with pytest.raises(DatasetError, match=message):
        read(make_zip(entries), "imagefolder")


@READERS
def test_symlink_entry_is_refused(tmp_path: Path, read: Reader) -> None:
    """A zip entry whose unix mode marks it a symbolic link (to /etc/passwd) is refused."""
    link = zipfile.ZipInfo("a/passwd.png")
    link.create_system = 3  # unix
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    path = tmp_path / "link.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a/1.png", PNG)
        archive.writestr(link, "/etc/passwd")
    with pytest.raises(DatasetError, match="symbolic link"):
        read(path)


@READERS
def test_zip_bomb_by_compression_ratio(make_zip: Factory, read: Reader) -> None:
    """A 4 MB member of zeros (deflates ~1000:1) is refused from its declared sizes, before it is inflated."""
    path = make_zip({"a/1.png": PNG, "a/bomb.png": bytes(4 << 20)})
    with pytest.raises(DatasetError, match="compression ratio"):
        read(path)


@READERS
def test_member_whose_header_understates_its_size_is_refused(make_zip: Factory, read: Reader) -> None:
    """A member whose headers claim 1000 bytes but whose data inflates to 4 MB is refused while reading."""
    path = make_zip({"a/bomb.png": bytes(4 << 20)})
    data = bytearray(path.read_bytes())
    local, central = data.find(b"PK\x03\x04"), data.find(b"PK\x01\x02")
    data[local + 22 : local + 26] = struct.pack("<I", 1000)  # uncompressed size, local header
    data[central + 24 : central + 28] = struct.pack("<I", 1000)  # uncompressed size, central directory
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="'a/bomb.png'"):
        read(path, "imagefolder")


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        (ArchiveLimits(max_entries=3), "4 entries"),
        (ArchiveLimits(max_member_bytes=50), "inflates to"),
        (ArchiveLimits(max_total_bytes=len(PNG) * 3), "inflates to more than"),
        (ArchiveLimits(max_image_pixels=15), "at most 15 pixels"),
        (ArchiveLimits(max_dataset_values=40), "more than 40 values"),
    ],
    ids=["entries", "member size", "total size", "pixels per image", "decoded values"],
)
@READERS
def test_archive_limits_are_enforced(make_zip: Factory, limits: ArchiveLimits, message: str, read: Reader) -> None:
    """Four 4×4 PNGs against each ArchiveLimits field set just too low: entries, sizes, pixels, decoded values."""
    path = make_zip({f"a/{i}.png": PNG for i in range(4)})
    with pytest.raises(DatasetError, match=message):
        read(path, limits=limits)


@READERS
def test_encrypted_entry_is_refused(make_zip: Factory, read: Reader) -> None:
    """An entry flagged as encrypted (general purpose bit 0) is refused instead of failing mid-read."""
    path = make_zip({"a/1.png": PNG}, compression=zipfile.ZIP_STORED)
    data = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.find(signature) + offset
        data[at] |= 0x1
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="encrypted"):
        read(path)


@READERS
def test_corrupt_and_empty_archives(tmp_path: Path, read: Reader) -> None:
    """A file starting with the zip signature but holding garbage, and a zip with no entries, are refused."""
    corrupt = tmp_path / "corrupt.zip"
    corrupt.write_bytes(b"PK\x03\x04" + bytes(range(200)))
    with pytest.raises(DatasetError, match="not a readable zip"):
        read(corrupt)
    empty = tmp_path / "empty.zip"
    zipfile.ZipFile(empty, "w").close()
    with pytest.raises(DatasetError, match="empty"):
        read(empty)
    with pytest.raises(DatasetError, match="no images"):
        read(empty, "imagefolder")


# ---------------------------------------------------------------------------- detection


def test_format_detection(tiny_images_npz: Path, tiny_csv: Path, tiny_imagefolder: Path) -> None:
    """An npz (a zip of .npy members) is told apart from an imagefolder zip, and csv from both."""
    limits = ArchiveLimits()
    assert detect_format(tiny_images_npz, limits) == "npz"
    assert detect_format(tiny_imagefolder, limits) == "imagefolder"
    assert detect_format(tiny_csv, limits) == "csv"


def test_unrecognised_files_and_formats(tmp_path: Path, tiny_csv: Path) -> None:
    """Binary garbage, a bare .npy, an empty file, an unknown format name, a csv read as npz: all DatasetErrors."""
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(bytes(range(256)))
    with pytest.raises(DatasetError, match="unrecognised") as caught:
        load_dataset(garbage)
    assert caught.value.field == "format"
    npy = tmp_path / "x.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(DatasetError, match="savez"):
        load_dataset(npy)
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(DatasetError, match="empty"):
        load_dataset(empty)
    with pytest.raises(DatasetError, match="unknown dataset format 'parquet'"):
        load_dataset(tiny_csv, "parquet")
    with pytest.raises(DatasetError, match="not a readable zip"):
        load_dataset(tiny_csv, "npz")
    with pytest.raises(DatasetError, match="no dataset file"):
        load_dataset(tmp_path / "missing.npz")


def test_digits_fixture_loads(digits_npz: Path) -> None:
    """scikit-learn's bundled digits, saved as npz by the shared fixture, load as 1797 grey 8×8 images in 10 classes."""
    ds = load_dataset(digits_npz)
    assert len(ds) == 1797 and ds.layout.shape() == (1, 8, 8) and len(ds.classes) == 10
    assert 0.0 <= ds.x.min() and ds.x.max() == 1.0


# ------------------------------------------------------------------- splits, alignment, stats


def _features(y: list[int], classes: list[str]) -> Dataset:
    x = np.arange(len(y) * 2, dtype=np.float32).reshape(len(y), 2)
    return Dataset(x=x, y=np.array(y), classes=classes, layout=Layout("features", features=2))


def test_split_validation_is_stratified_and_seeded() -> None:
    """20/10/2/1 labeled + 5 unlabeled, fraction 0.2: 4/2/1/0 per class split off, unlabeled stay in train, seeded."""
    ds = _features([0] * 20 + [1] * 10 + [2] * 2 + [3] + [-1] * 5, ["a", "b", "c", "d"])
    train, val = split_validation(ds, 0.2, seed=7)
    assert dataset_stats(val)["class_counts"] == {"a": 4, "b": 2, "c": 1, "d": 0}
    assert dataset_stats(train)["class_counts"] == {"a": 16, "b": 8, "c": 1, "d": 1}
    assert dataset_stats(train)["unlabeled"] == 5 and dataset_stats(val)["unlabeled"] == 0
    ids = lambda d: set(d.x[:, 0].tolist())  # noqa: E731 -- x[:, 0] is a unique id per example
    assert ids(train) | ids(val) == ids(ds) and not ids(train) & ids(val)
    again, _ = split_validation(ds, 0.2, seed=7)
    other, _ = split_validation(ds, 0.2, seed=8)
    np.testing.assert_array_equal(again.x, train.x)
    assert ids(other) != ids(train)
    assert val.classes == ds.classes and "seed 7" in val.notes[-1]


def test_split_validation_needs_two_examples_of_some_class() -> None:
    """With one labeled example per class nothing can be split off: DatasetError asking for a validation set."""
    with pytest.raises(DatasetError, match="validation dataset"):
        split_validation(_features([0, 1, -1], ["a", "b"]), 0.5, seed=0)


def test_align_validation_remaps_labels_by_class_name() -> None:
    """A validation set with classes [c, a] gets the training set's indices (c -> 2, a -> 0); -1 stays -1."""
    train = _features([0, 1, 2], ["a", "b", "c"])
    val = align_validation(train, _features([0, 1, -1, 0], ["c", "a"]))
    assert val.classes == ["a", "b", "c"]
    np.testing.assert_array_equal(val.y, [2, 0, -1, 2])


def test_align_validation_refuses_unknown_class_and_other_layout() -> None:
    """A validation class the training set lacks ('zebra'), or another feature width, is a DatasetError."""
    train = _features([0, 1], ["a", "b"])
    with pytest.raises(DatasetError, match="'zebra'"):
        align_validation(train, _features([0, 1], ["a", "zebra"]))
    wide = Dataset(x=np.zeros((1, 3)), y=np.array([0]), classes=["a"], layout=Layout("features", features=3))
    with pytest.raises(DatasetError, match="3 features"):
        align_validation(train, wide)


def test_dataset_checks_its_own_shapes() -> None:
    """A Dataset whose x does not match its layout, or whose labels exceed its classes, cannot be built."""
    with pytest.raises(DatasetError, match="layout"):
        Dataset(x=np.zeros((2, 3)), y=np.array([0, 0]), classes=["a"], layout=Layout("features", features=4))
    with pytest.raises(DatasetError, match="labels"):
        Dataset(x=np.zeros((2, 3)), y=np.array([0, 1]), classes=["a"], layout=Layout("features", features=3))


def test_dataset_stats_is_json_ready(tiny_imagefolder: Path) -> None:
    """dataset_stats gives the contract's keys with plain Python values that survive a JSON round trip."""
    stats = dataset_stats(load_dataset(tiny_imagefolder))
    assert json.loads(json.dumps(stats)) == {
        "examples": 16,
        "labeled": 12,
        "unlabeled": 4,
        "classes": ["cat", "dog"],
        "class_counts": {"cat": 6, "dog": 6},
        "layout": {"kind": "image", "channels": 3, "height": 8, "width": 8},
        "notes": [],
    }
    assert Layout.from_dict(stats["layout"]) == Layout("image", channels=3, height=8, width=8)
