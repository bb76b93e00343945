"""DiffAugment ops and the ADA p-controller."""

from __future__ import annotations

import pytest
import torch

from ganft_core.augment import (
    AdaController,
    augment_color,
    augment_cutout,
    augment_translation,
    diff_augment,
)

OPS = ["color", "translation", "cutout"]


def _images(n: int = 8, c: int = 3, h: int = 16, w: int = 16) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(n, c, h, w)


@pytest.mark.parametrize("channels", [1, 3])
def test_ops_preserve_shape_and_are_differentiable(channels: int) -> None:
    x = _images(c=channels).requires_grad_(True)
    for op in (augment_color, augment_translation, augment_cutout):
        out = op(x, 1.0)
        assert out.shape == x.shape
        out.square().sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
        x.grad = None
    out = diff_augment(x, OPS, 1.0)
    assert out.shape == x.shape
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_p_zero_is_identity() -> None:
    x = _images()
    assert torch.equal(diff_augment(x, OPS, 0.0), x)
    assert torch.equal(diff_augment(x, OPS, torch.tensor(0.0)), x)


def test_translation_and_cutout_change_images() -> None:
    x = _images(n=16)
    shifted = augment_translation(x, 1.0)
    assert (shifted != x).flatten(1).any(1).sum() >= 8  # most of 16 get a non-zero shift (9×9 choices)
    cut = augment_cutout(x, 1.0)
    # cutout zeroes a square of side 8 (clipped at the border): at least 4×4 pixels per image
    zeroed = ((cut == 0) & (x != 0)).all(1).flatten(1).sum(1)
    assert (zeroed >= 16).all()
    assert ((cut == 0) | (cut == x)).all()


def test_translation_is_an_integer_shift_with_zero_fill() -> None:
    x = torch.arange(64.0).view(1, 1, 8, 8) + 1
    torch.manual_seed(3)
    out = augment_translation(x, 1.0)
    nonzero = out[out != 0]
    # every surviving value is an original pixel, in the same relative order
    assert set(nonzero.tolist()) <= set(x.flatten().tolist())
    assert torch.all(nonzero.diff() > 0)


def test_color_changes_values_but_not_geometry() -> None:
    x = _images(n=4)
    out = augment_color(x, 1.0)
    assert not torch.allclose(out, x)


def test_p_controls_fraction_of_augmented_samples() -> None:
    x = _images(n=400, c=1, h=8, w=8) + 0.5  # no zeros, so cutout always shows
    torch.manual_seed(1)
    changed = (augment_cutout(x, 0.3) != x).flatten(1).any(1).float().mean().item()
    assert 0.2 < changed < 0.4


def test_unknown_op_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown augmentation"):
        diff_augment(_images(), ["rotate"], 1.0)


def _controller(p: float = 0.5) -> AdaController:
    return AdaController(target=0.6, interval=4, speed_images=1000, batch_size=10, p=p, device=torch.device("cpu"))


def test_ada_p_rises_when_d_overfits() -> None:
    ada = _controller(0.0)
    for step in range(1, 41):
        ada.observe(torch.full((10,), 5.0))  # D calls every real confidently real: r_t = 1 > 0.6
        if step % 4 == 0:
            ada.update()
    # 10 updates of +10*4/1000 each
    assert ada.p.item() == pytest.approx(0.4, abs=1e-6)
    assert ada.last_rt.item() == pytest.approx(1.0)


def test_ada_p_falls_when_d_does_not_overfit_and_is_clamped() -> None:
    ada = _controller(0.1)
    for step in range(1, 41):
        ada.observe(torch.tensor([1.0, -1.0, -2.0, 3.0]))  # r_t = 0 < 0.6
        if step % 4 == 0:
            ada.update()
    assert ada.p.item() == 0.0  # fell by 0.04 per update and stopped at 0
    high = _controller(0.99)
    high.observe(torch.ones(10))
    high.update()
    assert high.p.item() == 1.0


def test_ada_state_roundtrip() -> None:
    ada = _controller(0.2)
    ada.observe(torch.ones(10))
    other = _controller(0.0)
    other.load_state_dict(ada.state_dict())
    other.update()
    ada.update()
    assert other.p.item() == ada.p.item()
