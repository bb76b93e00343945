"""The `imagefolder` format: a zip of `<class_name>/<image>` (PNG or JPEG), unlabeled images under `_unlabeled/`.

One top-level folder wrapping everything (`data/cats/1.png`) is accepted. Images are read
in memory one at a time through SafeZip (`inspect_imagefolder` keeps only their modes and
sizes, `load_imagefolder` their pixels); each image's size is checked from its header
before it is decoded (decompression bombs). Mixed sizes are resized to the most common size
and mixed modes converted (RGB if any image has colour, else greyscale); `notes` says so.
"""

from __future__ import annotations

import io
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ganft_core.data.archive import ArchiveLimits, Member, SafeZip
from ganft_core.data.types import (
    UNLABELED,
    Dataset,
    Layout,
    require_class_examples,
    require_labeled_classes,
    summary,
)
from ganft_core.errors import DatasetError

UNLABELED_FOLDER = "_unlabeled"
_JUNK_FILES = {".DS_Store", "Thumbs.db", "desktop.ini"}  # OS litter, skipped quietly
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N"}
_SIXTEEN_BIT = {"I", "I;16", "I;16B", "I;16L", "I;16N"}


def _parts(name: str) -> list[str]:
    return [p for p in name.split("/") if p not in ("", ".")]


def _is_junk(parts: list[str]) -> bool:
    # __MACOSX/ and ._name files are macOS resource forks, not images.
    return "__MACOSX" in parts or parts[-1] in _JUNK_FILES or parts[-1].startswith("._")


def _layout_paths(members: list[Member], folders: list[str]) -> tuple[list[tuple[Member, str]], set[str]]:
    """(member, class folder) for each image, and the class folders that exist as folder entries."""
    files = [(m, _parts(m.name)) for m in members]
    files = [(m, p) for m, p in files if not _is_junk(p)]
    if not files:
        raise DatasetError("the archive holds no images")
    dirs = [p for p in (_parts(f) for f in folders) if p and "__MACOSX" not in p]
    tops = {p[0] for _, p in files}
    if len(tops) == 1 and all(len(p) == 3 for _, p in files):
        # One folder wrapping everything: strip it.
        files = [(m, p[1:]) for m, p in files]
        dirs = [p[1:] for p in dirs if len(p) > 1]
    out: list[tuple[Member, str]] = []
    for member, parts in files:
        if len(parts) == 1:
            raise DatasetError(f"{member.name!r} is not inside a class folder (expected <class>/<image>)")
        if len(parts) > 2:
            raise DatasetError(f"{member.name!r} is nested too deep (expected <class>/<image>)")
        out.append((member, parts[0]))
    return out, {p[0] for p in dirs if len(p) == 1}


@dataclass
class _Tally:
    """Conversions worth telling the user about, counted over all images."""

    alpha_dropped: int = 0
    sixteen_bit: int = 0


def _decode(member: Member, data: bytearray, limits: ArchiveLimits, tally: _Tally) -> Image.Image:
    """One image in mode L or RGB, refusing it before decoding when its header claims too many pixels."""
    name = member.name
    with warnings.catch_warnings():
        # Pillow only warns below 2× its own limit; a bomb must be an error, never a warning.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=["PNG", "JPEG"])
        except UnidentifiedImageError:
            raise DatasetError(f"{name!r} is not a PNG or JPEG image") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise DatasetError(f"{name!r} claims more pixels than any image may have") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise DatasetError(f"{name!r} cannot be read as an image: {exc}") from exc
        width, height = image.size
        if width * height > limits.max_image_pixels:
            raise DatasetError(
                f"{name!r} is {width}×{height} pixels; at most {limits.max_image_pixels} pixels per image are allowed"
            )
        if width * height == 0:
            raise DatasetError(f"{name!r} has no pixels")
        try:
            image.load()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise DatasetError(f"{name!r} is truncated or corrupt: {exc}") from exc
    mode = image.mode
    if mode in _SIXTEEN_BIT:
        # 16-bit greyscale PNG: Pillow's convert("L") would clip at 255; scale to 8 bits instead.
        wide = np.asarray(image, dtype=np.float64)
        tally.sixteen_bit += 1
        return Image.fromarray(np.clip(np.round(wide / 257.0), 0, 255).astype(np.uint8), mode="L")
    if mode in ("LA", "RGBA", "PA") or (mode == "P" and "transparency" in image.info):
        tally.alpha_dropped += 1
    if mode in _GREY_MODES:
        return image.convert("L")
    return image.convert("RGB")


@dataclass
class _Folder:
    """What reading the archive found: each image's class folder, mode and size (and pixels, when kept)."""

    folders: list[str]  # class folder of each image, in entry order
    modes: list[str]  # "L" or "RGB"
    sizes: list[tuple[int, int]]  # (width, height)
    folder_entries: set[str]  # class folders present as folder entries
    tally: _Tally
    images: list[Image.Image]  # when kept


def _read_folder(path: str | Path, limits: ArchiveLimits, *, keep: bool) -> _Folder:
    """Decode every image (one at a time), checking each; with `keep`, also keep them."""
    out = _Folder([], [], [], set(), _Tally(), [])
    budget = 0  # decoded bytes so far (uint8, one per channel)
    with SafeZip(path, limits) as archive:
        entries, out.folder_entries = _layout_paths(archive.members, archive.folders)
        for member, folder in entries:
            image = _decode(member, archive.read(member), limits, out.tally)
            budget += image.width * image.height * len(image.getbands())
            if budget > limits.max_dataset_values:
                raise DatasetError(f"the images decode to more than {limits.max_dataset_values} values")
            out.folders.append(folder)
            out.modes.append(image.mode)
            out.sizes.append(image.size)
            if keep:
                out.images.append(image)
    return out


@dataclass
class _Summary:
    classes: list[str]
    labels: np.ndarray  # int64 (N,), -1 = unlabeled
    layout: Layout
    notes: list[str]
    colour: bool  # images are converted to RGB (else to greyscale)


def _summarise(found: _Folder, limits: ArchiveLimits) -> _Summary:
    """Classes, labels, the common size and mode, and notes on every conversion."""
    present = set(found.folders)
    empty = sorted(found.folder_entries - present - {UNLABELED_FOLDER})
    if empty:
        raise DatasetError(f"class folder {empty[0]!r} has no images")
    classes = sorted(present - {UNLABELED_FOLDER})
    index = {name: i for i, name in enumerate(classes)}
    labels = np.array([index.get(f, UNLABELED) for f in found.folders], dtype=np.int64)

    notes: list[str] = []
    tally = found.tally
    if tally.sixteen_bit:
        notes.append(f"reduced {tally.sixteen_bit} 16-bit greyscale image(s) to 8 bits")
    if tally.alpha_dropped:
        notes.append(f"dropped the alpha channel of {tally.alpha_dropped} image(s)")
    colour = "RGB" in found.modes
    grey = found.modes.count("L")
    if colour and grey:
        notes.append(f"converted {grey} greyscale image(s) to RGB (the dataset has colour images)")
    sizes = Counter(found.sizes)
    (width, height), _ = sizes.most_common(1)[0]  # ties go to the first size seen (entries sorted by name)
    if len(sizes) > 1:
        others = len(found.sizes) - sizes[(width, height)]
        notes.append(f"resized {others} image(s) to {width}×{height} (the most common size)")
    channels = 3 if colour else 1
    if len(found.sizes) * channels * height * width > limits.max_dataset_values:
        raise DatasetError(f"the images decode to more than {limits.max_dataset_values} values")
    layout = Layout("image", channels=channels, height=height, width=width)
    return _Summary(classes, labels, layout, notes, colour)


def load_imagefolder(path: str | Path, limits: ArchiveLimits) -> Dataset:
    """Load a zip of class folders of PNG/JPEG images; see the module docstring."""
    found = _read_folder(path, limits, keep=True)
    done = _summarise(found, limits)
    x = np.empty((len(found.images), *done.layout.shape()), dtype=np.float32)
    for i, image in enumerate(found.images):
        x[i] = _pixels(image, done)
    np.divide(x, 255.0, out=x)
    ds = Dataset(x=x, y=done.labels, classes=done.classes, layout=done.layout, notes=done.notes)
    require_labeled_classes(ds)
    return ds


def _pixels(image: Image.Image, done: _Summary) -> np.ndarray:
    """One decoded image as the dataset's uint8 C×H×W example (mode and size made common)."""
    _, height, width = done.layout.shape()
    image = image.convert("RGB" if done.colour else "L")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels.transpose(2, 0, 1) if done.colour else pixels[None]


def stream_imagefolder(
    path: str | Path, limits: ArchiveLimits
) -> tuple[np.ndarray, list[str], Layout, list[str], Iterator[np.ndarray]]:
    """(labels, classes, layout, notes, examples): the checks of `load_imagefolder`, then its examples one at a
    time as uint8 C×H×W (a second decoding pass), so that nothing but one image is ever held."""
    found = _read_folder(path, limits, keep=False)
    done = _summarise(found, limits)
    counts = np.bincount(done.labels[done.labels != UNLABELED], minlength=len(done.classes))
    require_class_examples(done.classes, counts)

    def examples() -> Iterator[np.ndarray]:
        with SafeZip(path, limits) as archive:
            entries, _ = _layout_paths(archive.members, archive.folders)
            for member, _folder in entries:
                yield _pixels(_decode(member, archive.read(member), limits, _Tally()), done)

    return done.labels, done.classes, done.layout, done.notes, examples()


def inspect_imagefolder(path: str | Path, limits: ArchiveLimits) -> dict[str, Any]:
    """`dataset_stats(load_imagefolder(path))` with the same checks, keeping no pixels (each image is
    decoded, checked and dropped)."""
    done = _summarise(_read_folder(path, limits, keep=False), limits)
    counts = np.bincount(done.labels[done.labels != UNLABELED], minlength=len(done.classes))
    require_class_examples(done.classes, counts)
    return summary(examples=len(done.labels), classes=done.classes, counts=counts, layout=done.layout, notes=done.notes)
