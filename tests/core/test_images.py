"""curves.png (matplotlib) for both methods' panels, and the sample grid's nearest-neighbour upscaling."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.axes import Axes
from PIL import Image

from ganft_core.adapt import _curve_panels as adapt_panels
from ganft_core.images import DPI, PANEL_INCHES, curve_figure, save_curves, save_grid, y_scale
from ganft_core.ssgan_report import curve_panels as ssgan_panels

PANEL_PX = (int(PANEL_INCHES[0] * DPI), int(PANEL_INCHES[1] * DPI))


def ssgan_history(with_control: bool = True) -> dict[str, list[list[float]]]:
    """What ssgan keeps for its curves: log rows (step, D, G, control loss) and eval rows (step, acc, control acc);
    losses fall over four decades, as a fine-tuning run's do."""
    nan = math.nan
    log = [[s, 2.2 * math.exp(-s / 150) + 6e-4, 0.5 * math.exp(-s / 400) + 1e-3,
            1.9 * math.exp(-s / 100) + 1e-3 if with_control else nan] for s in range(50, 2001, 50)]  # fmt: skip
    evals = [[s, 0.5 + 0.4 * (1 - math.exp(-s / 500)), 0.45 + 0.3 * (1 - math.exp(-s / 500)) if with_control else nan]
             for s in range(250, 2001, 250)]  # fmt: skip
    return {"log": log, "eval": evals}


def adapt_run(tmp_path: Path) -> Path:
    """A run folder whose metrics.jsonl holds what adapt logs (losses near 1, FID/KID, augmentation p)."""
    rows = [{"step": s, "kind": "log", "loss_d": 1.3 + 0.1 * math.sin(s), "loss_g": 0.8 + 0.3 * math.cos(s / 90),
             "augment_p": min(0.6, s / 3000)} for s in range(50, 2001, 50)]  # fmt: skip
    rows += [{"step": s, "kind": "evaluation", "fid": 200 * math.exp(-s / 900) + 30, "kid": 0.2 * math.exp(-s / 900)}
             for s in range(250, 2001, 250)]  # fmt: skip
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def _legend(ax: Axes) -> list[str]:
    """The labels of the panel's legend, which it must have."""
    legend = ax.get_legend()
    assert legend is not None, f"no legend on {ax.get_title()!r}"
    return [t.get_text() for t in legend.get_texts()]


def _png_size(path: Path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as img:
        img.verify()  # a whole, valid PNG
    with Image.open(path) as img:
        return img.size


def test_ssgan_curves(tmp_path: Path) -> None:
    """ssgan: two panels side by side (1000×320 px); losses on a log axis; the control's accuracy beside the GAN's,
    drawn dashed; real ticks (more than the min and max) on both axes, gridlines and a legend per panel."""
    panels = ssgan_panels(ssgan_history())
    path = save_curves(panels, tmp_path / "curves.png")
    assert _png_size(path) == (2 * PANEL_PX[0], PANEL_PX[1])
    assert not (tmp_path / "curves.png.tmp").exists()
    losses, accuracy = curve_figure(panels).axes
    assert losses.get_title() == "losses" and losses.get_yscale() == "log"
    assert accuracy.get_yscale() == "linear"
    assert _legend(accuracy) == ["ssgan", "control"]
    assert _legend(losses) == ["D", "G", "control"]
    (control_line,) = [line for line in accuracy.get_lines() if line.get_label() == "control"]
    (gan_line,) = [line for line in accuracy.get_lines() if line.get_label() == "ssgan"]
    assert control_line.get_linestyle() == "--" and control_line.get_zorder() < gan_line.get_zorder()
    ticks = [t for t in losses.get_xticks() if 50 <= t <= 2000]
    assert all(t % 50 == 0 for t in ticks), ticks  # round steps (250, 500, ...), not 240, 480
    for ax in (losses, accuracy):
        assert len([t for t in ax.get_xticks() if 50 <= t <= 2000]) >= 4
        assert all(line.get_visible() for line in ax.get_xgridlines())
    low, high = losses.get_ylim()
    assert low < 1e-3 and high > 1  # every decade of the losses is on the axis


def test_ssgan_curves_without_a_control(tmp_path: Path) -> None:
    """A run without a control: its all-NaN series are left out, not drawn as an empty legend entry."""
    panels = ssgan_panels(ssgan_history(with_control=False))
    losses, accuracy = curve_figure(panels).axes
    assert _legend(accuracy) == ["ssgan"]
    assert _legend(losses) == ["D", "G"]
    assert _png_size(save_curves(panels, tmp_path / "c.png")) == (2 * PANEL_PX[0], PANEL_PX[1])


def test_adapt_curves(tmp_path: Path) -> None:
    """adapt: four panels two a row (1000×640 px); losses that stay within a decade keep a linear axis."""
    panels = adapt_panels(adapt_run(tmp_path))
    assert list(panels) == ["GAN losses", "FID", "KID", "augmentation p"]
    assert _png_size(save_curves(panels, tmp_path / "curves.png")) == (2 * PANEL_PX[0], 2 * PANEL_PX[1])
    axes = curve_figure(panels).axes
    assert [ax.get_title() for ax in axes] == list(panels)
    assert all(ax.get_yscale() == "linear" for ax in axes) and all(ax.get_legend() is not None for ax in axes)


def test_y_scale_rules() -> None:
    """Log for a loss panel spanning a decade or more with only positive values; a panel may say its scale."""
    falling = [(1, 2.0), (2, 0.01)]
    assert y_scale("losses", {"D": falling}) == "log"
    assert y_scale("losses", {"D": [(1, 2.0), (2, 0.5)]}) == "linear"  # within a decade
    assert y_scale("losses", {"D": falling, "W": [(1, -0.5)]}) == "linear"  # a negative value
    assert y_scale("accuracy", {"acc": falling}) == "linear"  # not a loss
    assert y_scale("FID", {"fid": falling, "yscale": "log"}) == "log"
    assert y_scale("losses", {"D": falling, "yscale": "linear"}) == "linear"
    with pytest.raises(ValueError, match="yscale"):
        y_scale("losses", {"yscale": "symlog"})
    (ax,) = curve_figure({"FID": {"fid": falling, "yscale": "log"}}).axes
    assert ax.get_yscale() == "log" and _legend(ax) == ["fid"]


def test_empty_panels_still_draw(tmp_path: Path) -> None:
    """Before the first log line: a panel with no points says so instead of failing."""
    path = save_curves({"losses": {"D": []}}, tmp_path / "c.png")
    assert _png_size(path) == PANEL_PX
    assert _png_size(save_curves({}, tmp_path / "none.png")) == PANEL_PX


def test_grid_upscales_small_images_with_nearest_neighbour(tmp_path: Path) -> None:
    """8×8 digits become 32×32 px cells, each source pixel a solid 4×4 block (no smoothing between them)."""
    images = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    path = save_grid(images, tmp_path / "samples.png", nrow=8, padding=2)
    with Image.open(path) as img:
        assert img.size == (8 * 34 + 2, 2 * 34 + 2) and img.mode == "L"
        pixels = np.asarray(img)
    first = pixels[2:34, 2:34].astype(int)  # the first cell
    expected = (images[0, 0].numpy() * 255).round().astype(int)
    assert np.array_equal(first, np.kron(expected, np.ones((4, 4), dtype=int)))
    big = save_grid(torch.rand(2, 3, 40, 40), tmp_path / "big.png", nrow=2, padding=2)
    with Image.open(big) as img:
        assert img.size == (2 * 42 + 2, 42 + 2) and img.mode == "RGB"  # already large enough: not scaled
