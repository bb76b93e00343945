"""PNG pictures of a run: sample grids (Pillow) and training curves (matplotlib, Agg).

Both are rewritten at every evaluation while a worker may be publishing them, so each is
written to a temp file beside its path and renamed into place.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from PIL import Image

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Points = Sequence[tuple[float, float]]  # (step, value)
Panel = Mapping[str, Any]  # series name -> Points; optional "yscale": "log" | "linear"
YScale = Literal["log", "linear"]

PANEL_INCHES = (5.0, 3.2)  # width, height of one panel
DPI = 100  # so one panel is 500×320 px
MAX_COLUMNS = 2
LOG_SPAN = 10.0  # a loss panel whose largest value is this many times its smallest gets a log axis
# The control is drawn grey and dashed in every panel, so "GAN against control" reads at a glance, and
# below the other lines (matplotlib's default zorder is 2), so the GAN's stays visible where they meet.
CONTROL_STYLE = {"color": "0.45", "linestyle": "--", "zorder": 1.9}


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
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    img.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


def _series(panel: Panel) -> dict[str, list[tuple[float, float]]]:
    """The panel's series with their finite points (option keys such as "yscale" left out)."""
    return {
        name: [(float(s), float(v)) for s, v in points if math.isfinite(s) and math.isfinite(v)]
        for name, points in panel.items()
        if not isinstance(points, str)
    }


def y_scale(title: str, panel: Panel) -> YScale:
    """The panel's "yscale" when given; else log for a loss panel whose values are all positive and
    span at least `LOG_SPAN` (losses fall over decades: on a linear axis everything after the first
    steps is flat on zero), linear otherwise (a log axis inside one decade has almost no tick labels)."""
    given = panel.get("yscale")
    if given is not None:
        if given not in ("log", "linear"):
            raise ValueError(f"panel {title!r}: yscale must be 'log' or 'linear', got {given!r}")
        return "log" if given == "log" else "linear"
    values = [v for points in _series(panel).values() for _, v in points]
    if "loss" not in title.lower() or not values or min(values) <= 0:
        return "linear"
    return "log" if max(values) / min(values) >= LOG_SPAN else "linear"


def curve_figure(panels: Mapping[str, Panel]) -> Figure:
    """The curves as a matplotlib Figure: one axes per panel (title -> {series -> [(step, value)]}),
    up to two panels a row, each with ticks, gridlines, a legend and its y scale (see `y_scale`)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    count = max(1, len(panels))
    cols = min(MAX_COLUMNS, count)
    rows = math.ceil(count / cols)
    width, height = PANEL_INCHES[0] * cols, PANEL_INCHES[1] * rows
    fig = Figure(figsize=(width, height), dpi=DPI)
    # Fixed margins (inches) rather than a layout engine: constrained layout triples the drawing time,
    # and the pictures are redrawn at every evaluation.
    left, right, top, bottom, gap_x, gap_y = 0.75, 0.15, 0.35, 0.5, 0.85, 0.85
    axes_w = (width - left - right - gap_x * (cols - 1)) / cols
    axes_h = (height - top - bottom - gap_y * (rows - 1)) / rows
    fig.subplots_adjust(
        left=left / width,
        right=1 - right / width,
        top=1 - top / height,
        bottom=bottom / height,
        wspace=gap_x / axes_w,
        hspace=gap_y / axes_h,
    )
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    if not panels:
        axes[0].text(0.5, 0.5, "no curves yet", ha="center", va="center", transform=axes[0].transAxes)
    for ax, (title, panel) in zip(axes, panels.items(), strict=False):
        series = _series(panel)
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("step")
        ax.grid(True, which="major", alpha=0.35)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 5, 10], integer=True))  # 50, 100, ... not 60, 90
        drawn = 0
        for name, points in series.items():
            if not points:
                continue  # e.g. the control's accuracy of a run without a control (all NaN)
            style = CONTROL_STYLE if name == "control" else {}
            marker = "o" if len(points) <= 20 else None  # sparse series (evaluations): show each point
            ax.plot(
                [s for s, _ in points],
                [v for _, v in points],
                label=name,
                marker=marker,
                markersize=3,
                linewidth=1.4,
                **style,
            )
            drawn += 1
        if not drawn:
            ax.text(0.5, 0.5, "no data yet", ha="center", va="center", color="0.5", transform=ax.transAxes)
            continue
        scale = y_scale(title, panel)
        ax.set_yscale(scale)
        if scale == "log":
            ax.grid(True, which="minor", alpha=0.12)
        else:
            ax.ticklabel_format(axis="y", useOffset=False)
        ax.legend(fontsize=8, loc="best", framealpha=0.8)
    return fig


def save_curves(panels: Mapping[str, Panel], path: Path) -> Path:
    """Write training curves as a PNG: one panel per entry of `panels` (title -> {series -> [(step, value)]},
    optionally "yscale": "log" | "linear"), 500×320 px a panel, two a row.

    Non-finite values are skipped; the file is replaced atomically. Returns the path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = curve_figure(panels)
    FigureCanvasAgg(fig)  # draw with Agg: no display, no pyplot state shared between threads
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=DPI)
    os.replace(tmp, path)
    return path
