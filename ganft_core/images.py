"""PNG pictures of a run, drawn with Pillow only: sample grids and training curves."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

_PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def save_grid(images: torch.Tensor, path: Path, nrow: int = 8, *, padding: int = 2, min_cell: int = 32) -> Path:
    """Write a grid of images (N×C×H×W floats in [0, 1], C = 1 or 3) as a PNG, atomically.

    `nrow` images per row, like torchvision's `make_grid`; images smaller than `min_cell`
    pixels are scaled up by a whole factor (nearest neighbour) so that 8×8 digits stay visible.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"save_grid wants N×C×H×W with C in (1, 3), got {tuple(images.shape)}")
    x = images.detach().float().clamp(0, 1).cpu()
    scale = max(1, math.ceil(min_cell / max(x.shape[2], x.shape[3])))
    if scale > 1:
        x = x.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    n, c, h, w = x.shape
    cols = max(1, min(nrow, n))
    rows = math.ceil(n / cols)
    grid = torch.ones(c, rows * (h + padding) + padding, cols * (w + padding) + padding)
    for i in range(n):
        r, col = divmod(i, cols)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, top : top + h, left : left + w] = x[i]
    pixels = (grid * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    img = Image.fromarray(pixels[:, :, 0], "L") if c == 1 else Image.fromarray(pixels, "RGB")
    return _save_png(img, Path(path))


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def _draw_panel(
    draw: ImageDraw.ImageDraw,
    box: tuple[int, int, int, int],
    title: str,
    lines: Mapping[str, Sequence[tuple[float, float]]],
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
) -> None:
    """One titled chart: axes with min/max labels, one polyline per series, a legend."""
    x0, y0, x1, y1 = box
    draw.text((x0 + 4, y0 + 2), title, fill="black", font=font)
    left, top, right, bottom = x0 + 48, y0 + 18, x1 - 8, y1 - 30
    draw.rectangle((left, top, right, bottom), outline=(160, 160, 160))
    points = [(s, v) for pts in lines.values() for s, v in pts if math.isfinite(v)]
    if not points:
        draw.text((left + 6, top + 6), "no data", fill="gray", font=font)
        return
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    xmin, xmax, ymin, ymax = min(xs), max(xs), min(ys), max(ys)
    xspan, yspan = (xmax - xmin) or 1.0, (ymax - ymin) or 1.0
    draw.text((x0 + 2, top), _fmt(ymax), fill="black", font=font)
    draw.text((x0 + 2, bottom - 10), _fmt(ymin), fill="black", font=font)
    draw.text((left, bottom + 2), _fmt(xmin), fill="black", font=font)
    draw.text((right - 36, bottom + 2), _fmt(xmax), fill="black", font=font)

    def to_px(s: float, v: float) -> tuple[float, float]:
        return left + (s - xmin) / xspan * (right - left), bottom - (v - ymin) / yspan * (bottom - top)

    legend_x = left
    for i, (name, pts) in enumerate(lines.items()):
        colour = _PALETTE[i % len(_PALETTE)]
        px = [to_px(s, v) for s, v in pts if math.isfinite(v)]
        if len(px) == 1:
            draw.ellipse((px[0][0] - 2, px[0][1] - 2, px[0][0] + 2, px[0][1] + 2), fill=colour)
        elif px:
            draw.line(px, fill=colour, width=2)
        draw.rectangle((legend_x, y1 - 14, legend_x + 10, y1 - 4), fill=colour)
        draw.text((legend_x + 14, y1 - 16), name, fill="black", font=font)
        legend_x += 24 + 7 * len(name)


def save_curves(
    panels: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]],
    path: Path,
    *,
    width: int = 640,
    panel_height: int = 220,
) -> Path:
    """Write training curves as a PNG: one panel per entry of `panels` (title -> {series -> [(step, value)]}).

    Non-finite values are skipped; the file is replaced atomically. Returns the path.
    """
    count = max(1, len(panels))
    img = Image.new("RGB", (width, panel_height * count), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    for i, (title, lines) in enumerate(panels.items()):
        _draw_panel(draw, (0, i * panel_height, width, (i + 1) * panel_height), title, lines, font)
    return _save_png(img, Path(path))


def _save_png(img: Image.Image, path: Path) -> Path:
    """Write `img` as a PNG to a temp file beside `path`, then rename it into place: pictures are
    rewritten at every evaluation while a worker may be reading them, and a reader must see the old
    file or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    img.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path

