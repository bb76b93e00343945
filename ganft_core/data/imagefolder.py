"""The `imagefolder` format: a zip of `<class_name>/<image>` (PNG or JPEG), unlabeled images under `_unlabeled/`.

One top-level folder wrapping everything (`data/cats/1.png`) is accepted. Images are read
in memory one at a time through SafeZip; each image's size is checked from its header
before it is decoded (decompression bombs). Mixed sizes are resized to the most common size
and mixed modes converted (RGB if any image has colour, else greyscale); `notes` says so.
"""

from __future__ import annotations

import io
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ganft_core.data.archive import ArchiveLimits, Member, SafeZip
from ganft_core.data.types import UNLABELED, Dataset, Layout, require_labeled_classes
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


def load_imagefolder(path: str | Path, limits: ArchiveLimits) -> Dataset:
    """Load a zip of class folders of PNG/JPEG images; see the module docstring."""
    tally = _Tally()
    images: list[Image.Image] = []
    folders: list[str] = []
    budget = 0  # decoded bytes so far (uint8, one per channel)
    with SafeZip(path, limits) as archive:
        entries, folder_entries = _layout_paths(archive.members, archive.folders)
        for member, folder in entries:
            image = _decode(member, archive.read(member), limits, tally)
            budget += image.width * image.height * len(image.getbands())
            if budget > limits.max_dataset_values:
                raise DatasetError(f"the images decode to more than {limits.max_dataset_values} values")
            images.append(image)
            folders.append(folder)

    present = set(folders)
    empty = sorted(folder_entries - present - {UNLABELED_FOLDER})
    if empty:
        raise DatasetError(f"class folder {empty[0]!r} has no images")
    classes = sorted(present - {UNLABELED_FOLDER})
    index = {name: i for i, name in enumerate(classes)}
    labels = np.array([index.get(f, UNLABELED) for f in folders], dtype=np.int64)

    notes: list[str] = []
    if tally.sixteen_bit:
        notes.append(f"reduced {tally.sixteen_bit} 16-bit greyscale image(s) to 8 bits")
    if tally.alpha_dropped:
        notes.append(f"dropped the alpha channel of {tally.alpha_dropped} image(s)")
    colour = any(im.mode == "RGB" for im in images)
    grey = sum(im.mode == "L" for im in images)
    if colour and grey:
        notes.append(f"converted {grey} greyscale image(s) to RGB (the dataset has colour images)")
    sizes = Counter(im.size for im in images)
    (width, height), _ = sizes.most_common(1)[0]  # ties go to the first size seen (entries sorted by name)
    if len(sizes) > 1:
        others = len(images) - sizes[(width, height)]
        notes.append(f"resized {others} image(s) to {width}×{height} (the most common size)")
    channels = 3 if colour else 1
    if len(images) * channels * height * width > limits.max_dataset_values:
        raise DatasetError(f"the images decode to more than {limits.max_dataset_values} values")

    x = np.empty((len(images), channels, height, width), dtype=np.float32)
    for i, image in enumerate(images):
        image = image.convert("RGB" if colour else "L")
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.BILINEAR)
        pixels = np.asarray(image, dtype=np.uint8)
        x[i] = pixels.transpose(2, 0, 1) if colour else pixels[None]
    np.divide(x, 255.0, out=x)
    ds = Dataset(
        x=x,
        y=labels,
        classes=classes,
        layout=Layout("image", channels=channels, height=height, width=width),
        notes=notes,
    )
    require_labeled_classes(ds)
    return ds
