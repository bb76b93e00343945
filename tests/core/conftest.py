"""Tiny datasets for the core's tests, written into tmp_path in each upload format.

Factories (`make_npz`, `make_csv`, `make_zip`, `make_imagefolder`) write what a test
describes; ready-made sets (`tiny_images_npz`, `tiny_features_npz`, `tiny_csv`,
`tiny_imagefolder`, `digits_npz`) are small, class-separable and seeded, so trainers can
learn them in a few steps.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image


def image_bytes(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    """An encoded image from uint8 pixels (H×W grey, H×W×3 RGB or H×W×4 RGBA)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def write_zip(path: Path, entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    """A zip holding `entries` (name -> bytes; a name ending in '/' is a folder entry)."""
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def band_images(n_per_class: int, classes: int, size: int = 8, channels: int = 1, seed: int = 0) -> np.ndarray:
    """uint8 images N×H×W×C (class-major order): class k is a bright band at a height set by k, plus noise."""
    rng = np.random.RandomState(seed)
    images = rng.randint(0, 60, size=(n_per_class * classes, size, size, channels)).astype(np.uint8)
    for k in range(classes):
        row = (k * size) // classes
        images[k * n_per_class : (k + 1) * n_per_class, row : row + max(1, size // classes)] = 230
    return images


def blob_features(n_per_class: int, classes: int, features: int = 4, seed: int = 0) -> np.ndarray:
    """float32 N×F (class-major order): Gaussian blobs 4 standard deviations apart."""
    rng = np.random.RandomState(seed)
    centres = rng.normal(0.0, 4.0, size=(classes, features))
    return np.concatenate([centres[k] + rng.normal(size=(n_per_class, features)) for k in range(classes)]).astype(
        np.float32
    )


def labels(n_per_class: int, classes: int, unlabeled: int = 0) -> np.ndarray:
    """int64 labels in class-major order, then `unlabeled` times -1."""
    return np.concatenate([np.repeat(np.arange(classes), n_per_class), np.full(unlabeled, -1)]).astype(np.int64)


@pytest.fixture
def make_npz(tmp_path: Path) -> Callable[..., Path]:
    """make_npz(name="data.npz", compressed=True, **arrays) -> path of an npz holding `arrays` (Any: numpy stubs)."""

    def make(name: str = "data.npz", compressed: bool = True, **arrays: Any) -> Path:
        path = tmp_path / name
        if compressed:
            np.savez_compressed(path, **arrays)
        else:
            np.savez(path, **arrays)
        return path

    return make


@pytest.fixture
def make_csv(tmp_path: Path) -> Callable[..., Path]:
    """make_csv(header, rows, name="data.csv") -> path of a comma-separated file."""

    def make(header: Sequence[str], rows: Iterable[Sequence[object]], name: str = "data.csv") -> Path:
        path = tmp_path / name
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
        return path

    return make


@pytest.fixture
def make_zip(tmp_path: Path) -> Callable[..., Path]:
    """make_zip(entries, name="data.zip", compression=ZIP_DEFLATED) -> path of a zip of `entries`."""

    def make(entries: dict[str, bytes], name: str = "data.zip", compression: int = zipfile.ZIP_DEFLATED) -> Path:
        return write_zip(tmp_path / name, entries, compression)

    return make


@pytest.fixture
def make_imagefolder(make_zip: Callable[..., Path]) -> Callable[..., Path]:
    """make_imagefolder({folder: [uint8 H×W(×C) arrays]}, fmt="PNG", name=...) -> zip of <folder>/<i>.png."""

    def make(folders: dict[str, Sequence[np.ndarray]], fmt: str = "PNG", name: str = "images.zip") -> Path:
        suffix = ".png" if fmt == "PNG" else ".jpg"
        entries = {
            f"{folder}/{i:04d}{suffix}": image_bytes(pixels, fmt)
            for folder, images in folders.items()
            for i, pixels in enumerate(images)
        }
        return make_zip(entries, name=name)

    return make


@pytest.fixture
def tiny_images_npz(make_npz: Callable[..., Path]) -> Path:
    """3 classes × 10 labeled + 6 unlabeled grey 8×8 images, uint8 N×C×H×W, classes a/b/c."""
    x = band_images(12, 3).transpose(0, 3, 1, 2)  # N×1×8×8
    y = labels(10, 3)
    keep = np.concatenate([np.arange(k * 12, k * 12 + 10) for k in range(3)])
    spare = np.concatenate([np.arange(k * 12 + 10, k * 12 + 12) for k in range(3)])
    x = np.concatenate([x[keep], x[spare]])
    y = np.concatenate([y, np.full(6, -1)])
    return make_npz("tiny_images.npz", x=x, y=y, classes=np.array(["a", "b", "c"]))


@pytest.fixture
def tiny_features_npz(make_npz: Callable[..., Path]) -> Path:
    """3 classes × 20 labeled + 15 unlabeled 4-feature vectors (float32), classes unnamed (0, 1, 2)."""
    x = blob_features(25, 3)
    y = labels(25, 3)
    y[np.arange(75) % 5 == 4] = -1
    return make_npz("tiny_features.npz", x=x, y=y)


@pytest.fixture
def tiny_csv(make_csv: Callable[..., Path]) -> Path:
    """The tiny_features_npz data as csv: columns f0..f3 and label (names red/green/blue, empty = unlabeled)."""
    x = blob_features(25, 3)
    names = ["red", "green", "blue"]
    rows = [[*map(float, x[i]), "" if i % 5 == 4 else names[i // 25]] for i in range(75)]
    return make_csv(["f0", "f1", "f2", "f3", "label"], rows, name="tiny.csv")


@pytest.fixture
def tiny_imagefolder(make_imagefolder: Callable[..., Path]) -> Path:
    """An imagefolder zip of RGB 8×8 PNGs: cat/ and dog/ with 6 each, _unlabeled/ with 4."""
    images = band_images(8, 2, channels=3)
    return make_imagefolder({"cat": images[:6], "dog": images[8:14], "_unlabeled": [*images[6:8], *images[14:16]]})


@pytest.fixture(scope="session")
def digits_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scikit-learn's bundled digits (no download): 1797 grey 8×8 images as uint8 N×1×8×8, classes '0'..'9'."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    path = tmp_path_factory.mktemp("digits") / "digits.npz"
    np.savez_compressed(path, x=x, y=digits.target.astype(np.int64), classes=np.array([str(i) for i in range(10)]))
    return path


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny nets run faster on one torch thread, and the CPU is shared with the rest of the suite.
    Opt in per module (`pytestmark = pytest.mark.usefixtures("one_thread")`); the data tests never import torch."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
