"""ganft_core.data.stored: the memory-mapped stored form gives the loader's arrays, checks itself, bounds memory."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ganft_core.data import (
    Dataset,
    align_validation,
    ingest,
    load_dataset,
    load_stored,
    npz,
    open_stored,
    split_validation,
    stored_beside,
)
from ganft_core.data.stored import LABELS, MANIFEST, X_SHARD
from ganft_core.errors import DatasetError
from tests.core.conftest import band_images, image_bytes, labels

Factory = Callable[..., Path]


def _same(stored: Dataset, loaded: Dataset) -> None:
    assert stored.is_mapped
    assert np.array_equal(stored.y, loaded.y) and stored.y.dtype == np.int64
    assert stored.classes == loaded.classes and stored.layout == loaded.layout and stored.notes == loaded.notes
    x = stored.x  # built from the memory map
    assert x.dtype == np.float32 and x.shape == loaded.x.shape
    assert np.array_equal(x, loaded.x)  # bit for bit (no NaN in datasets)


def test_stored_form_gives_exactly_the_loaded_arrays_for_every_format(
    tiny_images_npz: Path, tiny_features_npz: Path, tiny_csv: Path, tiny_imagefolder: Path, digits_npz: Path,
    make_npz: Factory, make_zip: Factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr(npz, "_CHUNK_BYTES", 40)  # many chunks, some inside one example
    rng = np.random.RandomState(3)
    hwc = rng.randint(0, 256, size=(7, 5, 6, 3)).astype(np.uint8)
    floats = rng.uniform(0, 1, size=(6, 1, 4, 5)).astype(np.float64)
    floats[0, 0, 0, 0] = 1 + 1e-7  # clipped to 1, as the loader clips it
    sources = [
        tiny_images_npz, tiny_features_npz, tiny_csv, tiny_imagefolder, digits_npz,
        make_npz(name="hwc.npz", x=hwc, y=np.array([0, 1, 0, 1, 0, 1, -1]), classes=np.array(["a", "b"])),
        make_npz(name="fortran.npz", x=np.asfortranarray(hwc), y=np.zeros(7, dtype=np.int16), compressed=False),
        make_npz(name="grey.npz", x=hwc[..., 0], extra=np.zeros(2)),
        make_npz(name="floats.npz", x=floats, y=np.array([0, 1, 0, 1, 1, 0])),
        make_zip({"a/1.png": image_bytes(hwc[0]), "a/2.png": image_bytes(hwc[1][:4, :4]),
                  "b/1.png": image_bytes(hwc[2][..., 0]), "_unlabeled/x.png": image_bytes(hwc[3])}),
    ]  # fmt: skip
    for k, source in enumerate(sources):
        stored = load_dataset(source, stored=tmp_path / f"stored-{k}")
        _same(stored, load_dataset(source))
        image = stored.layout.kind == "image"
        uint8 = source.suffix == ".zip" or (image and source.name not in ("floats.npz",))
        assert stored.source.dtype == (np.uint8 if uint8 else np.float32), source.name
        assert isinstance(stored.source, np.memmap)


def test_manifest_records_hashes_sizes_and_the_ingest(tiny_images_npz: Path, tmp_path: Path) -> None:
    folder = tmp_path / "s"
    manifest = ingest(tiny_images_npz, "npz", folder)
    assert json.loads((folder / MANIFEST).read_text()) == manifest
    files = {f["name"]: f for f in manifest["files"]}
    for name in (X_SHARD, LABELS):
        data = (folder / name).read_bytes()
        assert files[name] == {"name": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert manifest["source"]["sha256"] == hashlib.sha256(tiny_images_npz.read_bytes()).hexdigest()
    assert manifest["stored_bytes"] == sum(f["bytes"] for f in files.values())
    assert manifest["ingest_seconds"] >= 0 and manifest["dtype"] == "uint8"
    assert np.load(folder / X_SHARD, mmap_mode="r").dtype == np.uint8
    ds = open_stored(folder)
    assert ds.storage is not None and ds.storage["stored_bytes"] == manifest["stored_bytes"]
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # no temporary folder left


def test_stored_form_is_reused_and_remade_when_the_source_changes(make_npz: Factory, tmp_path: Path) -> None:
    source = make_npz(x=band_images(3, 2), y=labels(3, 2))
    folder = stored_beside(source)
    assert folder == tmp_path / "data.npz.stored"
    first = load_dataset(source, stored=folder)
    stamp = (folder / MANIFEST).stat().st_mtime_ns
    load_dataset(source, stored=folder)
    assert (folder / MANIFEST).stat().st_mtime_ns == stamp  # reused
    changed = make_npz(x=band_images(4, 2, seed=5), y=labels(4, 2))
    again = load_dataset(changed, stored=folder)
    assert len(again) == 8 and len(first) == 6 and not np.array_equal(again.x[:6], first.x)


@pytest.mark.parametrize("damage", ["truncate", "flip", "remove"])
@pytest.mark.parametrize("name", [X_SHARD, LABELS])
def test_damaged_shard_is_an_invalid_dataset_error_naming_it(
    tiny_images_npz: Path, tmp_path: Path, damage: str, name: str
) -> None:
    folder = tmp_path / "s"
    ingest(tiny_images_npz, "npz", folder)
    path = folder / name
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(data[: len(data) - 7])
    elif damage == "flip":
        data[-3] ^= 0xFF
        path.write_bytes(data)
    else:
        path.unlink()
    with pytest.raises(DatasetError, match=f"shard {name}") as caught:
        open_stored(folder)
    assert caught.value.code == "invalid_dataset"
    # The loader does not trust a damaged stored form: it stores the source again.
    assert np.array_equal(load_stored(tiny_images_npz, "npz", folder).x, load_dataset(tiny_images_npz).x)


def test_damaged_header_is_named(tiny_images_npz: Path, tmp_path: Path) -> None:
    folder = tmp_path / "s"
    ingest(tiny_images_npz, "npz", folder)
    data = bytearray((folder / X_SHARD).read_bytes())
    data[:6] = b"NOTNPY"
    (folder / X_SHARD).write_bytes(data)
    with pytest.raises(DatasetError, match=f"shard {X_SHARD}"):
        open_stored(folder, verify=False)


def test_bad_source_leaves_no_stored_form(make_npz: Factory, tmp_path: Path) -> None:
    bad = make_npz(x=np.full((3, 2), np.nan, dtype=np.float32))
    with pytest.raises(DatasetError, match="NaN"):
        load_dataset(bad, stored=tmp_path / "s")
    assert not any(p.name.startswith("s") for p in tmp_path.iterdir())


def test_split_and_alignment_keep_the_memory_map(make_npz: Factory, tmp_path: Path) -> None:
    x, y = band_images(6, 3), labels(6, 3, unlabeled=4)
    x = np.concatenate([x, band_images(4, 1, seed=9)])
    source = make_npz(x=x, y=y)
    stored, loaded = load_dataset(source, stored=tmp_path / "s"), load_dataset(source)
    s_train, s_val = split_validation(stored, 0.3, seed=1)
    l_train, l_val = split_validation(loaded, 0.3, seed=1)
    for s, m in ((s_train, l_train), (s_val, l_val)):
        assert s.is_mapped and s.rows is not None
        _same(s, m)
        assert np.array_equal(np.concatenate(list(s.batches(4))), m.x)
    aligned = align_validation(s_train, s_val)
    assert aligned.is_mapped and np.array_equal(aligned.x, l_val.x)


def test_ingest_memory_stays_bounded(make_npz: Factory, tmp_path: Path) -> None:
    """Storing a 49 MB npz (uint8 N×H×W×C, deflated) raises the child's peak RSS by far less than the dataset
    (measured at 8,000 images: 32 MiB, against 397 MiB for the in-memory float32 load; 4,000 keep the suite quick
    and the float32 load, ~200 MiB, still three times the bound)."""
    x = np.random.RandomState(0).randint(0, 8, size=(4000, 64, 64, 3)).astype(np.uint8)  # 49 MB, compresses ~3:1
    source = make_npz(name="big.npz", x=x, y=np.zeros(len(x), dtype=np.int64))
    del x
    # VmHWM, not ru_maxrss: a child's ru_maxrss starts at its forking parent's (pytest's) peak.
    script = textwrap.dedent(f"""
        from ganft_core.data import load_dataset
        def peak_kib():
            return int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1])
        before = peak_kib()
        ds = load_dataset({str(source)!r}, stored={str(tmp_path / "s")!r})
        assert len(ds) == 4000 and ds.is_mapped
        print(peak_kib() - before)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300)
    grown_kib = int(done.stdout.strip())
    assert grown_kib < 64 * 1024, f"ingest grew the peak RSS by {grown_kib} KiB"  # float32 in RAM: ~200 MiB
