"""ssgan on images: the augmentation policy, pretrained-backbone handling (frozen batch norm, discriminative
learning rates, head warm-up), the verdict, and bit-identical resume with augmentation and pseudo-labels on."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from ganft_core import ssgan
from ganft_core.augment import augment_policy
from ganft_core.config import SsganHyperparameters, TrainSpec
from ganft_core.errors import Aborted
from ganft_core.models import registry
from ganft_core.models.io import meta_for, save_model
from ganft_core.ssgan_nets import optimizer_groups, running_stats_frozen, set_train_mode
from ganft_core.train import train
from ganft_core.verdict import verdict
from tests.core.test_ssgan import TINY, band_images

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def reset_determinism() -> Iterator[None]:
    yield
    torch.use_deterministic_algorithms(False)  # deterministic runs switch it on process-wide


def image_spec(**hp: Any) -> TrainSpec:
    net = {"architecture_arguments": {"widths": [8, 8]}}
    return TrainSpec.model_validate({"method": "ssgan", "seed": 5, "hyperparameters": {**TINY, **net, **hp}})


# ---------------------------------------------------------------- augmentation policy


def ramp(n: int = 4, c: int = 1, side: int = 8) -> torch.Tensor:
    """Distinct pixel values, so any moved pixel is visible: N×C×side×side in (0, 1]."""
    return (torch.arange(n * c * side * side, dtype=torch.float32).reshape(n, c, side, side) + 1) / (n * c * side**2)


def test_translate_keeps_shape_and_is_a_zero_filled_shift_within_bounds() -> None:
    x = ramp()
    out = augment_policy(x, translate=0.25, hflip=False, color=0.0, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    for i in range(len(x)):  # each image equals the input shifted by some (dy, dx) with |d| <= 2, zero fill
        matches = []
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                shifted = torch.zeros_like(x[i])
                src = x[i][:, max(0, -dy) : 8 - max(0, dy), max(0, -dx) : 8 - max(0, dx)]
                shifted[:, max(0, dy) : 8 - max(0, -dy), max(0, dx) : 8 - max(0, -dx)] = src
                matches.append(torch.equal(shifted, out[i]))
        assert sum(matches) == 1, f"image {i} is not one shift of its input"


def test_augmentation_is_deterministic_under_a_seeded_generator_and_varies_without() -> None:
    x = ramp(16)
    kwargs: dict[str, Any] = {"translate": 0.25, "hflip": True, "color": 0.0}
    a = augment_policy(x, **kwargs, generator=torch.Generator().manual_seed(7))
    b = augment_policy(x, **kwargs, generator=torch.Generator().manual_seed(7))
    c = augment_policy(x, **kwargs, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_no_flip_when_off_and_flips_happen_when_on() -> None:
    x = ramp(64)
    off = augment_policy(x, translate=0.0, hflip=False, color=0.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(off, x)  # translate 0, no flip, no colour: the identity
    on = augment_policy(x, translate=0.0, hflip=True, color=0.0, generator=torch.Generator().manual_seed(1))
    flipped = [torch.equal(on[i], x[i].flip(2)) for i in range(len(x))]
    kept = [torch.equal(on[i], x[i]) for i in range(len(x))]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 10 < sum(flipped) < 54  # about half of 64


def test_colour_jitter_only_touches_rgb_and_stays_in_range() -> None:
    grey = ramp(8, c=1)
    assert torch.equal(augment_policy(grey, translate=0.0, hflip=False, color=0.5), grey)
    rgb = ramp(8, c=3)
    out = augment_policy(rgb, translate=0.0, hflip=False, color=0.5, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(out, rgb)
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_augment_policy_is_bounded_in_the_spec() -> None:
    with pytest.raises(ValueError, match="translate"):
        SsganHyperparameters.model_validate({"augment": {"translate": 0.9}})
    with pytest.raises(ValueError, match="flip"):
        SsganHyperparameters.model_validate({"augment": {"flip": True}})  # unknown key: a typo is an error
    hp = SsganHyperparameters()
    assert (hp.augment.translate, hp.augment.hflip, hp.augment.color) == (0.125, False, 0.0)


# ---------------------------------------------------------------- pretrained backbones


def base_convnet(folder: Path, classes: list[str], seed: int = 0) -> Path:
    """A registry convnet with batch norms whose running statistics are not the defaults, saved as a base model."""
    torch.manual_seed(seed)
    args = {"in_channels": 1, "num_classes": len(classes), "widths": [8, 8], "norm": "batch"}
    net = registry.build("convnet", args)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(16, 1, 8, 8) * 0.5 + 0.25)  # moves the running mean/var away from 0/1
    layout = {"kind": "image", "channels": 1, "height": 8, "width": 8}
    save_model(net.eval(), meta_for(net, class_names=classes, input_layout=layout), folder)
    return folder


def running_stats(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items() if "running_" in k}


def test_set_train_mode_with_frozen_batch_norm_uses_and_keeps_running_statistics(tmp_path: Path) -> None:
    from ganft_core.models.io import load_model

    net, _ = load_model(base_convnet(tmp_path / "base", ["a", "b", "c"]))
    before = running_stats(net)
    set_train_mode(net, [], bn_frozen=True)
    assert net.training and not any(m.training for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    x = torch.rand(8, 1, 8, 8)
    out = net(x)
    assert all(torch.equal(before[k], v) for k, v in running_stats(net).items())
    net.eval()
    assert torch.allclose(out, net(x))  # the same as eval-mode BN: running statistics, not the batch's
    set_train_mode(net, [], bn_frozen=False)
    net(x)
    assert not all(torch.equal(before[k], v) for k, v in running_stats(net).items())  # plain training moves them


def test_fake_batches_normalise_by_their_own_statistics_but_leave_the_running_ones(tmp_path: Path) -> None:
    from ganft_core.models.io import load_model

    net, _ = load_model(base_convnet(tmp_path / "base", ["a", "b", "c"]))
    set_train_mode(net, [])
    before = running_stats(net)
    fakes = torch.rand(8, 1, 8, 8) * 4.0  # far from the real data's range
    with running_stats_frozen(net):
        out = net(fakes)
    assert all(torch.equal(before[k], v) for k, v in running_stats(net).items())
    net.eval()
    assert not torch.allclose(out, net(fakes))  # batch statistics were used, not the running ones
    momenta = {m.momentum for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert momenta == {0.1}  # restored after the block
    set_train_mode(net, [])
    net(fakes)
    assert not all(torch.equal(before[k], v) for k, v in running_stats(net).items())  # outside the block they move


def test_pretrained_run_keeps_batch_norm_statistics_and_reports_its_choices(tmp_path: Path) -> None:
    base = base_convnet(tmp_path / "base", ["a", "b", "c"])
    data = band_images(12, 4)
    result = train(image_spec(batch_norm="frozen"), data, tmp_path / "run", base_model=base)
    before = load_file(str(base / "model.safetensors"))
    after = load_file(str(tmp_path / "run" / "model.safetensors"))
    control = load_file(str(tmp_path / "run" / "control.safetensors"))
    stats = [k for k in before if "running_" in k]
    assert stats
    for key in stats:  # frozen statistics in both runs: real and fake batches did not move them
        assert torch.equal(before[key], after[key]), key
        assert torch.equal(before[key], control[key]), key
    assert any(not torch.equal(before[k], after[k]) for k in before if "weight" in k)  # but the weights trained
    spec_json = json.loads((tmp_path / "run" / "spec.json").read_text())
    resolved = spec_json["resolved"]
    assert resolved["batch_norm_frozen"] is True and resolved["backbone_lr_scale"] == 0.1
    assert resolved["head_warmup_steps"] == 0  # same classes: the head is kept, no warm-up
    assert result.metrics["verdict"]["outcome"] in {"helped", "no_difference", "hurt"}


def test_batch_norm_train_is_the_default_and_lets_statistics_move(tmp_path: Path) -> None:
    assert SsganHyperparameters().batch_norm == "train"
    base = base_convnet(tmp_path / "base", ["a", "b", "c"])
    train(image_spec(), band_images(12, 4), tmp_path / "run", base_model=base)
    before = load_file(str(base / "model.safetensors"))
    after = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before if "running_mean" in k)


def test_optimizer_groups_split_head_from_backbone() -> None:
    net = registry.build("convnet", {"in_channels": 1, "num_classes": 3, "widths": [8, 8]})
    groups = optimizer_groups(net, 0.1)
    head, body = groups
    assert {id(p) for p in head["params"]} == {id(p) for p in cast(nn.Module, net.head).parameters()}
    assert head["scale"] == 1.0 and not head["backbone"]
    assert body["scale"] == 0.1 and body["backbone"]
    every = {id(p) for p in net.parameters()}
    assert {id(p) for g in groups for p in g["params"]} == every


def test_replaced_head_warms_up_alone_then_the_backbone_trains_at_its_scale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records the lr of each Adam group at every step: backbone 0 during the warm-up, lr × scale after."""
    seen: list[tuple[float, float]] = []
    real_step = torch.optim.Adam.step

    def recording_step(self: torch.optim.Adam, *args: Any, **kwargs: Any) -> Any:
        if len(self.param_groups) == 2 and self.param_groups[1].get("backbone"):
            seen.append((self.param_groups[0]["lr"], self.param_groups[1]["lr"]))
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    base = base_convnet(tmp_path / "base", ["x", "y"])  # other classes: the head is replaced
    spec = image_spec(head_warmup_steps=5, backbone_lr_scale=0.25, lr_d=1e-3, lr_decay_start=1.0, run_control=False)
    train(spec, band_images(12, 4), tmp_path / "run", base_model=base)
    assert len(seen) == TINY["steps"]
    assert all(head == 1e-3 and body == 0.0 for head, body in seen[:5])
    assert all(head == 1e-3 and body == pytest.approx(2.5e-4) for head, body in seen[5:])
    notes = json.loads((tmp_path / "run" / "metrics.json").read_text())["notes"]
    assert any("head warm-up 5 steps" in n for n in notes)


# ---------------------------------------------------------------- the verdict


def test_verdict_counts_only_discordant_examples() -> None:
    y = np.zeros(400, dtype=int)
    same = np.zeros(400, dtype=int)
    v = verdict(y, same, same)  # identical predictions: no difference, the smallest margin
    assert v["outcome"] == "no_difference" and v["delta"] == 0 and v["margin"] == pytest.approx(1 / 400)
    gan = same.copy()
    gan[:40] = 1  # GAN wrong on 40 the control gets right: delta -10 points, margin 2·sqrt(40)/400 = 3.2
    v = verdict(y, gan, same)
    assert v["outcome"] == "hurt" and v["use"] == "control" and v["delta"] == pytest.approx(-0.1)
    assert v["margin"] == pytest.approx(2 * np.sqrt(40) / 400)
    v = verdict(y, same, gan)
    assert v["outcome"] == "helped" and v["use"] == "model" and "helped" in v["message"]
    control = same.copy()
    control[:3] = 1
    v = verdict(y, same, control)  # +0.75 points, margin 2·sqrt(3)/400 = 0.87: within noise
    assert v["outcome"] == "no_difference" and v["use"] == "model"


def test_metrics_json_carries_the_verdict_of_the_final_evaluation(tmp_path: Path) -> None:
    result = train(image_spec(), band_images(12, 4), tmp_path / "run")
    m = result.metrics
    v = m["verdict"]
    assert set(v) == {"outcome", "metric", "ssgan", "control", "delta", "margin", "use", "message"}
    assert v["ssgan"] == pytest.approx(m["ssgan"]["accuracy"])
    assert v["control"] == pytest.approx(m["control"]["accuracy"])
    assert (tmp_path / "run" / "control.pt2").is_file()  # the verdict may say to use it
    no_control = train(image_spec(run_control=False), band_images(12, 4), tmp_path / "alone")
    assert no_control.metrics["verdict"] is None


# ---------------------------------------------------------------- resume equality


def test_image_run_with_augmentation_and_pseudo_labels_resumes_bit_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"pl": 0}
    real_pl = ssgan.pseudo_label_loss

    def counting(*args: Any) -> torch.Tensor:
        calls["pl"] += 1
        return real_pl(*args)

    monkeypatch.setattr(ssgan, "pseudo_label_loss", counting)
    spec = image_spec(
        steps=24,
        deterministic=True,
        checkpoint_every=8,
        eval_every=12,
        ema_decay=0.9,
        pseudo_label_threshold=0.4,
        augment={"translate": 0.25, "hflip": True},
    )
    data = band_images(12, 4)
    train(spec, data, tmp_path / "straight")
    assert calls["pl"] == 24  # the pseudo-label term ran at every step

    polls = {"n": 0}

    def abort_at_11() -> bool:
        polls["n"] += 1
        return polls["n"] == 12

    with pytest.raises(Aborted):
        train(spec, data, tmp_path / "resumed", should_abort=abort_at_11)
    train(spec, data, tmp_path / "resumed")
    for stem in ("model", "control", "generator"):
        a = load_file(str(tmp_path / "straight" / f"{stem}.safetensors"))
        b = load_file(str(tmp_path / "resumed" / f"{stem}.safetensors"))
        for key in a:
            assert torch.equal(a[key], b[key]), f"{stem}.{key}"


# ---------------------------------------------------------------- the stored form


@pytest.mark.parametrize("streamed", [False, True], ids=["on device", "streamed"])
def test_ssgan_on_the_stored_form_is_bit_identical_to_the_in_memory_run(
    tiny_images_npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, streamed: bool
) -> None:
    from ganft_core.data import load_dataset
    from ganft_core.data.feed import ENV_MAX_DEVICE_BYTES

    spec = image_spec(deterministic=True, steps=10, eval_every=5, checkpoint_every=5)
    train(spec, load_dataset(tiny_images_npz), tmp_path / "memory", device="cpu")
    if streamed:
        monkeypatch.setenv(ENV_MAX_DEVICE_BYTES, "0")  # every batch gathered from the memory map
    stored = load_dataset(tiny_images_npz, stored=tmp_path / "stored")
    assert stored.is_mapped
    train(spec, stored, tmp_path / "mapped", device="cpu")
    assert stored._x is None  # the float32 copy of the dataset was never built
    for stem in ("model", "control", "generator"):
        a = load_file(str(tmp_path / "memory" / f"{stem}.safetensors"))
        b = load_file(str(tmp_path / "mapped" / f"{stem}.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), stem
    path = json.loads((tmp_path / "mapped" / "spec.json").read_text())["data_path"]
    assert path["on_device"] is (not streamed)


# ---------------------------------------------------------------- default classifier per input size


def _images(side: int) -> Any:
    from ganft_core.data import Dataset, Layout

    x = np.random.RandomState(0).uniform(size=(6, 1, side, side)).astype(np.float32)
    return Dataset(
        x=x,
        y=np.array([0, 1, 2, -1, -1, -1]),
        classes=["a", "b", "c"],
        layout=Layout("image", channels=1, height=side, width=side),
    )


def widths(net: nn.Module) -> list[int]:
    """Output channels of each conv stage's first conv."""
    return [cast(nn.Conv2d, cast(nn.Sequential, stage)[0]).out_channels for stage in cast(nn.ModuleList, net.stages)]


def test_convnet_from_scratch_is_narrow_above_16_px_and_says_so() -> None:
    from ganft_core.ssgan_nets import build_classifier

    big = build_classifier(SsganHyperparameters(), _images(20), None)
    assert widths(big.net) == [16, 32, 64]
    assert any("convnet widths (16, 32, 64)" in n for n in big.notes)
    small = build_classifier(SsganHyperparameters(), _images(8), None)  # 8×8 digits keep the registry widths
    assert widths(small.net) == [32, 64, 128] and not small.notes
    chosen = build_classifier(SsganHyperparameters(architecture_arguments={"widths": [8, 8]}), _images(20), None)
    assert widths(chosen.net) == [8, 8] and not chosen.notes  # the user's choice wins


def test_unsupervised_weight_default_depends_on_the_data() -> None:
    """null picks 0.3 on images and 1.0 on feature vectors/text; an explicit value wins on both."""
    from ganft_core.config import UNSUPERVISED_WEIGHT_IMAGES, SsganHyperparameters

    default = SsganHyperparameters()
    assert default.unsupervised_weight is None
    assert default.resolved_unsupervised_weight(image=True) == UNSUPERVISED_WEIGHT_IMAGES == 0.3
    assert default.resolved_unsupervised_weight(image=False) == 1.0
    explicit = SsganHyperparameters(unsupervised_weight=0.0)
    assert explicit.resolved_unsupervised_weight(image=True) == 0.0
    assert explicit.resolved_unsupervised_weight(image=False) == 0.0


def test_unsupervised_rampup_is_a_bounded_sigmoid_from_near_zero_to_the_full_weight(tmp_path: Path) -> None:
    assert ssgan.rampup_factor(0, 100, 0.0) == 1.0  # off: the full weight from the first step
    ramp_up = [ssgan.rampup_factor(s, 100, 0.4) for s in range(100)]
    assert ramp_up[0] == pytest.approx(np.exp(-5.0)) and ramp_up[20] == pytest.approx(np.exp(-1.25))
    assert all(a < b for a, b in zip(ramp_up[:40], ramp_up[1:41], strict=True)) and set(ramp_up[40:]) == {1.0}
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError):
            SsganHyperparameters(unsupervised_rampup=bad)
    train(
        image_spec(steps=20, log_every=2, unsupervised_weight=0.5, unsupervised_rampup=0.5),
        band_images(12, 4),
        tmp_path,
    )
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    weights = [r["unsupervised_weight"] for r in rows if r.get("event") == "step"]
    assert weights[0] < 0.1 and weights[-1] == 0.5 and weights == sorted(weights)  # reported as it ramps


def test_pseudo_label_temperature_gives_sharpened_soft_targets_under_the_same_mask() -> None:
    weak = torch.tensor([[4.0, 0.0, 0.0], [0.1, 0.0, 0.0]])  # confident, unconfident
    strong = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    hard = ssgan.pseudo_label_loss(weak, strong, 0.9)
    assert hard == pytest.approx(F.cross_entropy(strong[:1], torch.tensor([0])).item() / 2)  # row 2 masked out
    soft = ssgan.pseudo_label_loss(weak, strong, 0.9, temperature=0.5)
    target = (weak[0] / 0.5).softmax(dim=0)
    assert soft == pytest.approx(-(target * strong[0].log_softmax(dim=0)).sum().item() / 2)
    assert ssgan.pseudo_label_loss(weak, strong, 0.9, temperature=1e-3) == pytest.approx(hard.item(), rel=1e-4)
    with pytest.raises(ValueError):
        SsganHyperparameters(pseudo_label_temperature=-1.0)


def test_lr_defaults_depend_on_image_size_for_a_convnet_from_scratch() -> None:
    """1e-3 for D (3e-4 for G) over 16 px, 3e-4 for both on 8×8; explicit values win."""
    from ganft_core.ssgan_nets import build_classifier, resolved_lr

    hp = SsganHyperparameters()
    big, small = _images(20), _images(8)
    assert resolved_lr(hp, build_classifier(hp, big, None), big) == (1e-3, 3e-4)
    assert resolved_lr(hp, build_classifier(hp, small, None), small) == (3e-4, 3e-4)
    explicit = SsganHyperparameters(lr_d=2e-4)
    assert resolved_lr(explicit, build_classifier(explicit, big, None), big) == (2e-4, 2e-4)
