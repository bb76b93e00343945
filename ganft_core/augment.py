"""Differentiable augmentation for GAN discriminators, and the ADA probability controller.

DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training")
applies the same random colour / translation / cutout transforms to every image D sees, real
and fake, in both the D and the G step; the ops are differentiable so G's gradient flows
through them. ADA (Karras et al. 2020, "Training Generative Adversarial Networks with Limited
Data", sec. 2-3) applies each transform to each image with probability p and tunes p with a
controller that watches how confidently D calls the reals real. Here the two are combined:
the DiffAugment ops, each applied per sample with probability p (p = 1 is plain DiffAugment,
p = 0 is exactly the identity).

Images are N×C×H×W in [0, 1]. The original DiffAugment code works on [-1, 1] images; its
brightness shift of U(-0.5, 0.5) there is U(-0.25, 0.25) here, saturation and contrast are
affine around a mean and so identical in either range. Translation and cutout fill with 0
(black in [0, 1]), the background of most small-image sets (the original fills with 0 in
[-1, 1], i.e. mid-grey).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

OPS = ("color", "translation", "cutout")
TRANSLATION_RATIO = 0.125  # max shift = ratio × side, as in DiffAugment
CUTOUT_RATIO = 0.5  # cutout square side = ratio × side, as in DiffAugment


def _apply_mask(n: int, p: torch.Tensor | float, device: torch.device) -> torch.Tensor:
    """(N,) bool: which samples get this op. p may be a 0-d tensor (no host sync)."""
    return torch.rand(n, device=device) < p


def _select(mask: torch.Tensor, augmented: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per sample: augmented where mask (N,) is set, else x untouched (bit-exact, so p = 0 is the identity)."""
    return torch.where(mask.view(-1, *([1] * (x.dim() - 1))), augmented, x)


def augment_color(x: torch.Tensor, p: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Random brightness, saturation and contrast, each per sample with probability p."""
    n, dev, dt = x.shape[0], x.device, x.dtype
    # brightness: add U(-0.25, 0.25) (DiffAugment's U(-0.5, 0.5) on [-1, 1] images)
    shift = (torch.rand(n, 1, 1, 1, device=dev, dtype=dt) - 0.5) * 0.5
    x = _select(_apply_mask(n, p, dev), x + shift, x)
    # saturation: scale the distance from the per-pixel channel mean by U(0, 2)
    if x.shape[1] > 1:
        factor = torch.rand(n, 1, 1, 1, device=dev, dtype=dt) * 2.0
        mean = x.mean(dim=1, keepdim=True)
        x = _select(_apply_mask(n, p, dev), (x - mean) * factor + mean, x)
    # contrast: scale the distance from the per-image mean by U(0.5, 1.5)
    factor = torch.rand(n, 1, 1, 1, device=dev, dtype=dt) + 0.5
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return _select(_apply_mask(n, p, dev), (x - mean) * factor + mean, x)


def augment_translation(
    x: torch.Tensor, p: torch.Tensor | float = 1.0, ratio: float = TRANSLATION_RATIO
) -> torch.Tensor:
    """Shift each image by up to ratio × side pixels (integer shifts, zero fill), per sample with probability p."""
    n, _, h, w = x.shape
    dev = x.device
    max_dy, max_dx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-max_dy, max_dy + 1, (n, 1, 1), device=dev)
    dx = torch.randint(-max_dx, max_dx + 1, (n, 1, 1), device=dev)
    keep = ~_apply_mask(n, p, dev).view(n, 1, 1)
    dy, dx = dy.masked_fill(keep, 0), dx.masked_fill(keep, 0)
    # Output pixel (i, j) reads input pixel (i - dy, j - dx); out-of-range reads hit the zero pad.
    rows = torch.arange(h, device=dev).view(1, h, 1) - dy  # (N, H, 1)
    cols = torch.arange(w, device=dev).view(1, 1, w) - dx  # (N, 1, W)
    rows = (rows + max_dy).clamp(0, h + 2 * max_dy - 1)
    cols = (cols + max_dx).clamp(0, w + 2 * max_dx - 1)
    padded = torch.nn.functional.pad(x, [max_dx, max_dx, max_dy, max_dy])  # N×C×(H+2dy)×(W+2dx)
    batch = torch.arange(n, device=dev).view(n, 1, 1)
    # advanced indexing on (N, H', W', C) gives (N, H, W, C): a differentiable gather
    out = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # an NHWC-strided N×C×H×W view
    # keep the caller's memory layout (channels_last on CUDA, plain NCHW elsewhere)
    wanted = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    return out.contiguous(memory_format=wanted)


def augment_cutout(x: torch.Tensor, p: torch.Tensor | float = 1.0, ratio: float = CUTOUT_RATIO) -> torch.Tensor:
    """Zero a random square of side ratio × side (may overlap the border), per sample with probability p."""
    n, _, h, w = x.shape
    dev = x.device
    size_y, size_x = int(h * ratio + 0.5), int(w * ratio + 0.5)
    # square centre, as in DiffAugment: anywhere in the image, the square clipped at the border
    cy = torch.randint(0, h + (1 - size_y % 2), (n, 1, 1), device=dev)
    cx = torch.randint(0, w + (1 - size_x % 2), (n, 1, 1), device=dev)
    top, left = cy - size_y // 2, cx - size_x // 2
    rows = torch.arange(h, device=dev).view(1, h, 1)
    cols = torch.arange(w, device=dev).view(1, 1, w)
    inside = (rows >= top) & (rows < top + size_y) & (cols >= left) & (cols < left + size_x)  # (N, H, W)
    inside = inside & _apply_mask(n, p, dev).view(n, 1, 1)
    return x * (~inside).unsqueeze(1).to(x.dtype)


_FUNCTIONS = {"color": augment_color, "translation": augment_translation, "cutout": augment_cutout}


def diff_augment(x: torch.Tensor, ops: Sequence[str], p: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Apply the named ops in DiffAugment's order (colour, translation, cutout), each per sample with probability p.

    Differentiable in x. `p` may be a 0-d tensor on x's device so that an ADA-controlled p needs no host sync.
    """
    unknown = set(ops) - set(OPS)
    if unknown:
        raise ValueError(f"unknown augmentation ops: {sorted(unknown)} (known: {list(OPS)})")
    for name in OPS:
        if name in ops:
            x = _FUNCTIONS[name](x, p)
    return x


class AdaController:
    """ADA's p-controller (Karras et al. 2020, sec. 3).

    The overfitting heuristic r_t = E[sign(D(real))] is accumulated over `interval` steps; then
    p += sign(r_t - target) × (batch × interval) / speed_images, clamped to [0, 1], so that p can
    go from 0 to 1 in `speed_images` real images (ADA uses 500k; few-shot sets need far fewer).
    All state lives in device tensors: `observe` and `step` never synchronise with the host.
    """

    def __init__(
        self, *, target: float, interval: int, speed_images: int, batch_size: int, p: float, device: torch.device
    ) -> None:
        self.target = target
        self.interval = interval
        self.adjust = batch_size * interval / speed_images  # p change per update, before the sign
        self.p = torch.tensor(float(p), device=device)
        self.sign_sum = torch.zeros((), device=device)  # Σ sign(D(real)) since the last update
        self.count = torch.zeros((), device=device)  # number of logits in sign_sum
        self.last_rt = torch.zeros((), device=device)  # r_t at the last update, for reporting

    def observe(self, real_logits: torch.Tensor) -> None:
        """Record D's logits on (augmented) reals from one D step."""
        logits = real_logits.detach().float()
        self.sign_sum += torch.sign(logits).sum()
        self.count += logits.numel()

    def update(self) -> None:
        """Move p once from what was observed (call every `interval` steps)."""
        rt = self.sign_sum / self.count.clamp(min=1.0)
        moved = (self.p + torch.sign(rt - self.target) * self.adjust).clamp(0.0, 1.0)
        # With nothing observed, leave p alone (no host branch: a select keeps it sync-free).
        self.p = torch.where(self.count > 0, moved, self.p)
        self.last_rt = torch.where(self.count > 0, rt, self.last_rt)
        self.sign_sum.zero_()
        self.count.zero_()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "p": self.p.detach().cpu().clone(),
            "sign_sum": self.sign_sum.detach().cpu().clone(),
            "count": self.count.detach().cpu().clone(),
            "last_rt": self.last_rt.detach().cpu().clone(),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        dev = self.p.device
        self.p = state["p"].to(dev, torch.float32, copy=True)
        self.sign_sum = state["sign_sum"].to(dev, torch.float32, copy=True)
        self.count = state["count"].to(dev, torch.float32, copy=True)
        self.last_rt = state["last_rt"].to(dev, torch.float32, copy=True)


# ---------------------------------------------------------------- classifier augmentation (ssgan)


def augment_policy(
    x: torch.Tensor, *, translate: float, hflip: bool, color: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The weak, label-preserving augmentation of ssgan's labeled batches (and its control's), N×C×H×W in [0, 1].

    A random integer shift of up to round(translate × side) pixels with zero fill (the pad-and-crop of
    CIFAR/SVHN training), an optional horizontal flip, and for RGB an optional colour jitter. Random draws
    come from `generator` (the run's sampler, so resume replays them exactly) or torch's global RNG.
    """
    n, c, h, w = x.shape
    dev = x.device

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, device=dev, generator=generator)

    if translate > 0:
        max_dy, max_dx = int(h * translate + 0.5), int(w * translate + 0.5)
        if max_dy or max_dx:
            dy = (rand(n, 1, 1) * (2 * max_dy + 1)).long() - max_dy  # uniform on -max..max
            dx = (rand(n, 1, 1) * (2 * max_dx + 1)).long() - max_dx
            x = _shift(x, dy, dx, max_dy, max_dx)
    if hflip:
        flip = (rand(n) < 0.5).view(n, 1, 1, 1)
        x = torch.where(flip, x.flip(3), x)
    if color > 0 and c == 3:
        b = (rand(n, 1, 1, 1) * 2 - 1) * color * 0.5  # brightness shift, up to ±color/2
        x = x + b
        m = x.mean(dim=1, keepdim=True)  # saturation: distance from the grey value
        x = (x - m) * (1 + (rand(n, 1, 1, 1) * 2 - 1) * color) + m
        m = x.mean(dim=(1, 2, 3), keepdim=True)  # contrast: distance from the image mean
        x = ((x - m) * (1 + (rand(n, 1, 1, 1) * 2 - 1) * color) + m).clamp(0.0, 1.0)
    return x


def _shift(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, max_dy: int, max_dx: int) -> torch.Tensor:
    """Shift image i by (dy[i], dx[i]) pixels, zero fill; dy, dx are (N, 1, 1) integer tensors."""
    n, _, h, w = x.shape
    dev = x.device
    rows = torch.arange(h, device=dev).view(1, h, 1) - dy + max_dy  # (N, H, 1) rows of the padded image
    cols = torch.arange(w, device=dev).view(1, 1, w) - dx + max_dx  # (N, 1, W)
    padded = torch.nn.functional.pad(x, [max_dx, max_dx, max_dy, max_dy])
    batch = torch.arange(n, device=dev).view(n, 1, 1)
    out = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # N×C×H×W (NHWC strides)
    wanted = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    return out.contiguous(memory_format=wanted)


def strong_ops(channels: int) -> tuple[str, ...]:
    """DiffAugment ops of ssgan's D inputs and strong views: translation and cutout, plus colour on RGB."""
    return ("color", "translation", "cutout") if channels == 3 else ("translation", "cutout")
