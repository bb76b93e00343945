"""ssgan: semi-supervised GAN fine-tuning of a classifier, trained next to its supervised-only control.

Salimans et al. 2016, "Improved Techniques for Training GANs", section 5 and their code
(`train_mnist_feature_matching.py`): the K-class classifier is the discriminator, with the
fake class implicit (its logit fixed at 0), so D(x) = Z/(Z+1) with Z = sum_k exp(l_k(x)).
D learns from cross-entropy on labeled data plus the real/fake terms on unlabeled and
generated data; G learns by feature matching on D's penultimate features. With
`generator_space="feature"` G makes backbone features that only the head sees (GAN-BERT,
Croce et al. 2020). The control sees the same initial weights, labeled batches, seed and
steps, with the same augmentation of those batches, and cross-entropy only, so metrics.json's
`verdict` says whether the GAN helped (ganft_core/verdict.py).

Images add what the semi-supervised GAN literature found necessary on top of the K+1 terms:
the labeled batches of both runs are augmented (random shifts), every D input of the GAN terms,
real and fake, goes through the same differentiable augmentation (DiffAugment, Zhao et al. 2020),
and unlabeled reals also carry a FixMatch pseudo-label term (Sohn et al. 2020): the class D
predicts on a weakly augmented view, when confident, is the target on the strongly augmented
view that the real/fake term sees. The generator and the real/fake term stay: the ablation in
bench/RESULTS.md ("ssgan on images") records what each ingredient adds. Pretrained backbones get
a lower learning rate than the head (`backbone_lr_scale`), a warm-up of a replaced head, and batch
norm with each batch's own statistics (`batch_norm="train"`; "frozen" keeps the pretrained ones).
"""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from ganft_core import run
from ganft_core.augment import augment_policy, diff_augment, strong_ops
from ganft_core.classify_metrics import classification_metrics
from ganft_core.config import SsganHyperparameters
from ganft_core.data import align_validation, dataset_stats, split_validation
from ganft_core.data.feed import Feed
from ganft_core.data.types import Dataset, require_labeled_classes
from ganft_core.early_stop import EarlyStopper, copy_state
from ganft_core.errors import Aborted, DatasetError
from ganft_core.images import save_curves, save_grid
from ganft_core.ssgan_nets import (
    build_classifier,
    build_generator,
    freeze_lowest_blocks,
    optimizer_groups,
    resolved_lr,
    running_stats_frozen,
    save_classifier,
    save_generator,
    set_train_mode,
)
from ganft_core.ssgan_report import curve_panels, deltas, headline, history_row
from ganft_core.train import AbortFn, ProgressFn, ProgressUpdate, RunResult
from ganft_core.verdict import verdict

log = logging.getLogger(__name__)

EVAL_BATCH = 1024  # examples per forward pass when evaluating, at most
# ... and at most this many bytes of float32 input per pass: the activations grow with the input, and 1024
# images of 64×64×3 cost ~0.5 GB of them (bench/RESULTS.md "core: datasets at scale": 256 took the 10^5-image
# run's peak from 1311 to 808 MiB). 12 MiB gives 256 at 64×64×3, 1024 at 28×28 and below.
EVAL_INPUT_BYTES = 12 * 2**20
GRID_SAMPLES = 64  # generated images in samples.png (8×8)


def unsupervised_d_loss(logits_unl: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """-E log D(x) - E log(1 - D(G(z))) with D = Z/(Z+1), from N×K logits (fp32).

    log D(x) = lse(l) - softplus(lse(l)) and log(1 - D) = -softplus(lse(l)); this is the
    official code's `-mean(lse_u) + mean(softplus(lse_u)) + mean(softplus(lse_f))`.
    """
    lse_unl = torch.logsumexp(logits_unl, dim=1)  # N
    lse_fake = torch.logsumexp(logits_fake, dim=1)  # N
    return -lse_unl.mean() + F.softplus(lse_unl).mean() + F.softplus(lse_fake).mean()


def pseudo_label_loss(
    logits_weak: torch.Tensor, logits_strong: torch.Tensor, threshold: float, temperature: float = 0.0
) -> torch.Tensor:
    """FixMatch's unlabeled term: cross-entropy on the strong view towards the weak view's confident argmax.

    Averaged over the whole batch (unconfident examples count as 0), as in Sohn et al. 2020, eq. 4. With a
    temperature > 0 the target is the weak view's sharpened distribution softmax(l / T) instead of its argmax
    (UDA's soft consistency, Xie et al. 2020, sec. 3.2; they use T = 0.4 and a threshold of 0.8).
    """
    weak = logits_weak.detach().float()
    confidence, target = weak.softmax(dim=1).max(dim=1)
    mask = (confidence >= threshold).float()
    if temperature > 0:
        soft = (weak / temperature).softmax(dim=1)
        per_example = -(soft * logits_strong.log_softmax(dim=1)).sum(dim=1)
    else:
        per_example = F.cross_entropy(logits_strong, target, reduction="none")
    return (per_example * mask).mean()


def conditional_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean entropy of the K-class prediction, H(p(y|x)) (Bad GAN's term on unlabeled data)."""
    return -(logits.softmax(dim=1) * logits.log_softmax(dim=1)).sum(dim=1).mean()


def feature_matching_loss(f_real: torch.Tensor, f_fake: torch.Tensor) -> torch.Tensor:
    """||E f(x) - E f(G(z))||² averaged over the D feature dimensions (Salimans et al. 2016, §3.1)."""
    return (f_real.mean(dim=0) - f_fake.mean(dim=0)).pow(2).mean()


def rampup_factor(step: int, total: int, rampup: float) -> float:
    """Sigmoid ramp-up exp(-5 (1 - t)²) over the first `rampup`·total steps, then 1 (Laine & Aila 2017, sec. 3.1;
    Tarvainen & Valpola 2017): the unsupervised term starts near 0 while the classifier is still random."""
    length = total * rampup
    if step >= length:
        return 1.0
    t = max(0.0, step / length)
    return math.exp(-5.0 * (1.0 - t) ** 2)


def lr_factor(step: int, total: int, decay_start: float) -> float:
    """1 until `decay_start`·total steps, then linearly down to 0 at `total` (Improved-GAN schedule)."""
    start = int(total * decay_start)
    return 1.0 if step < start else max(0.0, (total - step) / max(1, total - start))


@torch.inference_mode()
def predict(net: nn.Module, feed: Feed, device: torch.device) -> torch.Tensor:
    """Argmax class per example (N,), in eval mode and batches; the caller restores training mode."""
    net.eval()
    with run.autocast(device):
        return torch.cat([net(x).argmax(dim=1) for x in feed.iter_batches(eval_batch(feed.example_shape))])


def eval_batch(example_shape: tuple[int, ...]) -> int:
    """Examples per evaluation pass: EVAL_BATCH, fewer for large inputs (EVAL_INPUT_BYTES of float32)."""
    return max(1, min(EVAL_BATCH, EVAL_INPUT_BYTES // (4 * math.prod(example_shape))))


def _prepare_data(
    hp: SsganHyperparameters, data: Dataset, validation: Dataset | None, seed: int
) -> tuple[Dataset, Dataset]:
    if validation is None:
        train, val = split_validation(data, hp.validation_fraction, seed)
    else:
        train, val = data, align_validation(data, validation)
    require_labeled_classes(train)
    if not val.labeled.any():
        raise DatasetError("the validation set has no labeled examples", field="validation_dataset_id")
    return train, val


def train_ssgan(
    hp: SsganHyperparameters,
    data: Dataset,
    out_dir: Path,
    *,
    seed: int,
    validation: Dataset | None,
    base_model: Path | None,
    progress: ProgressFn,
    should_abort: AbortFn,
    device: torch.device,
) -> RunResult:
    """Run (or resume) an ssgan job in `out_dir`; see the module docstring and docs/CONTRACTS.md."""
    total = hp.steps
    run.seed_everything(seed, deterministic=hp.deterministic)

    # ---- data: labeled set, unlabeled pool (all training examples), validation. Each is a Feed: on the
    # device whole when it fits (the fast path), else batches gathered from RAM or the memory-mapped
    # stored form (GANFT_FEED_MAX_DEVICE_BYTES).
    train, val = _prepare_data(hp, data, validation, seed)
    image = train.layout.kind == "image"
    clf = build_classifier(hp, train, base_model)
    # channels_last: on CUDA (tensor cores), and on CPU for the registry's conv nets, where oneDNN's NHWC
    # kernels took 0.77x the CPU time of a convnet step at batch 200 (bench/channels_last_cpu.py, RESULTS.md).
    # A user's exported program keeps the layout it was traced with on CPU.
    conv = image and not clf.is_program and getattr(clf.net, "architecture", "") != "mlp"
    fmt = torch.channels_last if image and (device.type == "cuda" or conv) else torch.contiguous_format
    lab_set, val_set = train.subset(train.labeled), val.subset(val.labeled)
    feed_lab, feed_unl, feed_val = (
        d.feed(device, channels_last=fmt == torch.channels_last) for d in (lab_set, train, val_set)
    )
    y_lab, y_val = torch.as_tensor(lab_set.y).to(device), val_set.y
    if not feed_unl.on_device:
        log.info(
            "ssgan: %d training examples (%d MiB as stored) are streamed from %s, not held on the device",
            len(feed_unl),
            feed_unl.nbytes >> 20,
            "the stored form" if train.is_mapped else "RAM",
        )

    # ---- nets: classifier (= D), generator, control with the same initial weights
    net = clf.net.to(device, memory_format=fmt)  # type: ignore[call-overload]  # (torch's stub lacks it)
    frozen = freeze_lowest_blocks(net, hp.freeze_blocks)
    # Batch norm of a pretrained net (`batch_norm`): batch statistics by default, each of the labeled, unlabeled
    # and fake batches normalised by its own; "frozen" keeps the running statistics (measured worse, 88% vs 97%).
    bn_frozen = not clf.from_scratch and hp.batch_norm == "frozen"
    feature_space = hp.generator_space == "feature"
    gen = build_generator(hp, train, net.head.in_features).to(device)
    z_dim: int = cast(Any, gen).z_dim
    control = copy.deepcopy(net) if hp.run_control else None
    frozen_control = list(control.blocks())[: hp.freeze_blocks] if control is not None else []
    lr_d, lr_g = resolved_lr(hp, clf, train)
    w_unsup = hp.resolved_unsupervised_weight(image=image and not feature_space)
    # Discriminative learning rates: a pretrained backbone moves slower than its head; a replaced head
    # first trains alone for `head_warmup_steps` (backbone lr 0), so random head gradients do not wreck it.
    backbone_scale = 1.0 if clf.from_scratch else hp.backbone_lr_scale
    warmup = hp.head_warmup_steps if clf.head_replaced else 0
    betas = (hp.beta1, hp.beta2)
    # fused: one kernel for all parameters instead of ~5 per tensor (CPU and CUDA, torch >= 2.4)
    opt_d = torch.optim.Adam(optimizer_groups(net, backbone_scale), lr=lr_d, betas=betas, fused=True)
    opt_g = torch.optim.Adam(gen.parameters(), lr=lr_g, betas=betas, fused=True)
    opt_c = (
        torch.optim.Adam(optimizer_groups(control, backbone_scale), lr=lr_d, betas=betas, fused=True)
        if control is not None
        else None
    )
    ema = run.Ema(net, hp.ema_decay) if hp.ema_decay > 0 else None
    ema_c = run.Ema(control, hp.ema_decay) if hp.ema_decay > 0 and control is not None else None
    sampler = torch.Generator(device=device).manual_seed(seed)  # labeled/unlabeled indices, z, augmentation
    stopper = (
        EarlyStopper(hp.early_stopping, metric="accuracy", higher_is_better=True)
        if hp.early_stopping is not None
        else None
    )
    notes = list(clf.notes)
    if image and not clf.from_scratch:
        notes.append(
            f"pretrained backbone: lr × {backbone_scale:g}, batch norm {hp.batch_norm}"
            + (f", head warm-up {warmup} steps" if warmup else "")
        )

    # Augmentation (images only): the weak, label-preserving policy on labeled batches (both runs) and on
    # the pseudo-label view; DiffAugment on every D input of the GAN terms and the pseudo-label target view.
    a = hp.augment
    weak_on = image and (a.translate > 0 or a.hflip or a.color > 0)
    ops = strong_ops(train.layout.channels) if image and hp.diffaugment else ()

    def weak(x: torch.Tensor) -> torch.Tensor:
        return (
            augment_policy(x, translate=a.translate, hflip=a.hflip, color=a.color, generator=sampler) if weak_on else x
        )

    def strong(x: torch.Tensor) -> torch.Tensor:  # differentiable: G's gradient flows through it
        return diff_augment(x, ops) if ops else x

    # The same latents at every evaluation (and a generator of their own, so the training RNG
    # streams, and with them resume equality, are untouched): grids differ only by G's weights.
    grid_z: torch.Tensor | None = None  # (no grid of feature vectors)
    if image and not feature_space:
        grid_rng = torch.Generator(device=device).manual_seed(seed)
        grid_z = torch.randn(GRID_SAMPLES, z_dim, device=device, generator=grid_rng)

    # ---- resume from the newest checkpoint, or start the run folder
    step = 0
    history: dict[str, list[list[float]]] = {"log": [], "eval": []}
    ckpt_path = run.latest_checkpoint(out_dir)
    if ckpt_path is not None:
        ckpt = run.load_checkpoint(ckpt_path)  # on the CPU: RNG states must be CPU tensors; weights get copied
        net.load_state_dict(ckpt["classifier"])
        gen.load_state_dict(ckpt["generator"])
        opt_d.load_state_dict(ckpt["opt_d"])
        opt_g.load_state_dict(ckpt["opt_g"])
        if control is not None and opt_c is not None:
            control.load_state_dict(ckpt["control"])
            opt_c.load_state_dict(ckpt["opt_c"])
        if ema is not None:
            ema.load_state_dict(ckpt["ema"])
        if ema_c is not None:
            ema_c.load_state_dict(ckpt["ema_control"])
        run.restore_rng_state(ckpt["rng"], sampler)
        step, history = int(ckpt["step"]), ckpt["history"]
        if stopper is not None:
            stopper.load_state_dict(ckpt.get("early_stopping"))
        progress(ProgressUpdate("log", step, total, {}, message=f"resumed from checkpoint at step {step}"))
    else:
        resolved = {
            "method": "ssgan",
            "seed": seed,
            "hyperparameters": hp.model_dump(),
            "resolved": {
                "lr_d": lr_d,
                "lr_g": lr_g,
                "unsupervised_weight": w_unsup,
                "device": str(device),
                "classifier": getattr(net, "architecture", "program"),
                "generator": getattr(gen, "architecture", None),
                "backbone_lr_scale": backbone_scale,
                "head_warmup_steps": warmup,
                "batch_norm_frozen": bn_frozen,
                "weak_augment": weak_on,
                "diffaugment_ops": list(ops),
            },
            "data_path": {
                "on_device": feed_unl.on_device,
                "stored_bytes": feed_unl.nbytes,
                "storage": getattr(train, "storage", None),
            },
            "base_model": str(base_model) if base_model else None,
            "notes": notes,
            "data": dataset_stats(train),
            "validation": dataset_stats(val),
        }
        run.write_spec(out_dir, resolved)
        for note in notes:
            run.append_metrics(out_dir, {"step": 0, "event": "log", "message": note})
    for note in notes:
        log.info("ssgan: %s", note)
        progress(ProgressUpdate("log", step, total, {}, message=note))

    def checkpoint(losses: dict[str, torch.Tensor]) -> None:
        # Never checkpoint a NaN state: the last good checkpoint stays the newest.
        run.ensure_finite(losses, step)
        run.ensure_finite_weights({"classifier": net, "generator": gen, "control": control}, step)
        state = {
            "step": step,
            "classifier": net.state_dict(),
            "generator": gen.state_dict(),
            "opt_d": opt_d.state_dict(),
            "opt_g": opt_g.state_dict(),
            "control": control.state_dict() if control is not None else None,
            "opt_c": opt_c.state_dict() if opt_c is not None else None,
            "ema": ema.state_dict() if ema is not None else None,
            "ema_control": ema_c.state_dict() if ema_c is not None else None,
            "rng": run.capture_rng_state(sampler),
            "history": history,
            "early_stopping": stopper.state_dict() if stopper is not None else None,
        }
        path = run.save_checkpoint(out_dir, step, state, keep_last=hp.keep_checkpoints)
        progress(ProgressUpdate("checkpoint", step, total, {}, path=str(path.relative_to(out_dir))))

    predictions: dict[str, torch.Tensor] = {}  # the last evaluation's predicted classes, for the verdict

    def evaluate() -> dict[str, Any]:
        """Full classification figures on the validation set for ssgan and (if run) the control."""
        predictions["ssgan"] = predict(ema.module if ema else net, feed_val, device).cpu()
        out: dict[str, Any] = {"ssgan": classification_metrics(y_val, predictions["ssgan"], train.classes)}
        if control is not None:
            predictions["control"] = predict(ema_c.module if ema_c else control, feed_val, device).cpu()
            out["control"] = classification_metrics(y_val, predictions["control"], train.classes)
            set_train_mode(control, frozen_control, bn_frozen=bn_frozen)
        set_train_mode(net, frozen, bn_frozen=bn_frozen)
        return out

    def pictures() -> list[str]:
        """Rewrite samples.png (input-space G on images only) and curves.png with what the run has so far;
        each rewritten file is reported as an `artifact` update, so a watcher can publish it at once."""
        names = []
        if grid_z is not None:
            gen.eval()  # (batch-norm statistics, not the batch's, and no update of them)
            with torch.inference_mode():
                save_grid(gen(grid_z).float(), out_dir / "samples.png", nrow=8)
            gen.train()
            names.append("samples.png")
        save_curves(curve_panels(history), out_dir / "curves.png")
        names.append("curves.png")
        for name in names:
            progress(ProgressUpdate("artifact", step, total, {}, path=name))
        return names

    def outputs_now() -> dict[str, Any]:
        """What early stopping keeps of the best evaluation: the evaluated weights, figures and predictions."""
        return {
            "classifier": copy_state(ema.module if ema else net),
            "generator": copy_state(gen),
            "control": copy_state(ema_c.module if ema_c else control) if control is not None else None,
            "figures": figures,
            "predictions": dict(predictions),
        }

    set_train_mode(net, frozen, bn_frozen=bn_frozen)
    gen.train()
    if control is not None:
        set_train_mode(control, frozen_control, bn_frozen=bn_frozen)
    losses: dict[str, torch.Tensor] = {}
    figures: dict[str, Any] | None = None
    picture_names: list[str] = []
    g_params = list(gen.parameters())
    n_lab, n_unl, b_lab, b_unl = len(feed_lab), len(feed_unl), hp.batch_size, hp.unlabeled_batch_size
    # pseudo-labels need a weak and a strong view: images only (on feature vectors both views are the input)
    pl_on, ent_on = image and hp.pseudo_label_weight > 0, hp.entropy_weight > 0

    def d_logits(x: torch.Tensor) -> torch.Tensor:  # K logits of real inputs (through the backbone)
        return net(x) if not feature_space else net.head(net.features(x))

    while step < total and not (stopper is not None and stopper.stopped):
        if should_abort():
            checkpoint(losses)
            raise Aborted(f"stopped at step {step} of {total} on request; a checkpoint was written")
        lr_scale = lr_factor(step, total, hp.lr_decay_start)
        for opt, base in ((opt_d, lr_d), (opt_g, lr_g), (opt_c, lr_d)):
            if opt is not None:
                for group in opt.param_groups:
                    warm = 0.0 if step < warmup and group.get("backbone") else 1.0
                    group["lr"] = base * group.get("scale", 1.0) * lr_scale * warm
        i_lab = torch.randint(n_lab, (b_lab,), device=device, generator=sampler)  # with replacement
        i_unl = torch.randint(n_unl, (b_unl,), device=device, generator=sampler)
        i_unl_g = torch.randint(n_unl, (b_unl,), device=device, generator=sampler)
        z = torch.randn(b_unl, z_dim, device=device, generator=sampler)
        z_g = torch.randn(b_unl, z_dim, device=device, generator=sampler)
        xl, yl = weak(feed_lab.gather(i_lab)), y_lab[i_lab]  # the same augmented labeled batch for both runs
        xu = feed_unl.gather(i_unl)

        # ---- step D: cross-entropy on labeled + real/fake terms on (augmented) unlabeled and detached
        # fakes + pseudo-labels. parametrize.cached: weight norm computed once per step, not per forward.
        with run.autocast(device), parametrize.cached():
            with torch.no_grad():
                fake = gen(z)
                logits_weak = d_logits(weak(xu)) if pl_on else None
            if feature_space:  # GAN-BERT: the head classifies backbone features and generated ones
                real = net.head(net.features(torch.cat([xl, strong(xu)])))
                logits_fake = net.head(fake)
            else:
                real = net(torch.cat([xl, strong(xu)]))
                with running_stats_frozen(net):  # fakes: normalised by their own batch, not in the running stats
                    logits_fake = net(strong(fake))
        logits_lab, logits_unl = real.float().split([b_lab, b_unl])
        loss_sup = F.cross_entropy(logits_lab, yl)
        loss_unsup = unsupervised_d_loss(logits_unl, logits_fake.float())
        w_now = w_unsup * rampup_factor(step, total, hp.unsupervised_rampup)
        loss_d = loss_sup + w_now * loss_unsup
        losses = {}
        if logits_weak is not None:
            loss_pl = pseudo_label_loss(logits_weak, logits_unl, hp.pseudo_label_threshold, hp.pseudo_label_temperature)
            loss_d = loss_d + hp.pseudo_label_weight * loss_pl
            losses["loss_d_pseudo_label"] = loss_pl.detach()
        if ent_on:
            loss_d = loss_d + hp.entropy_weight * conditional_entropy(logits_unl)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()

        # ---- step G: feature matching on D's penultimate features (D's weights get no gradient)
        with run.autocast(device), parametrize.cached(), running_stats_frozen(net):
            with torch.no_grad():
                f_real = net.features(strong(feed_unl.gather(i_unl_g)))
            fake = gen(z_g)
            f_fake = fake if feature_space else net.features(strong(fake))
        loss_g = feature_matching_loss(f_real.float(), f_fake.float())
        grads = torch.autograd.grad(loss_g, g_params)
        for p, g in zip(g_params, grads, strict=True):
            p.grad = g
        opt_g.step()

        # ---- step the control: the same labeled batch, cross-entropy only
        losses |= {
            "loss_d": loss_d.detach(),
            "loss_d_supervised": loss_sup.detach(),
            "loss_d_unsupervised": loss_unsup.detach(),
            "loss_g": loss_g.detach(),
        }
        if control is not None and opt_c is not None:
            with run.autocast(device):
                loss_c = F.cross_entropy(control(xl).float(), yl)
            opt_c.zero_grad(set_to_none=True)
            loss_c.backward()
            opt_c.step()
            losses["loss_control"] = loss_c.detach()
        if ema is not None:
            ema.update(net)
        if ema_c is not None and control is not None:
            ema_c.update(control)
        step += 1

        # ---- report, evaluate, checkpoint (the only host syncs)
        if step % hp.log_every == 0 or step == total:
            scalars = {**run.ensure_finite(losses, step), "lr_d": lr_d * lr_scale, "unsupervised_weight": w_now}
            history["log"].append([step, scalars["loss_d"], scalars["loss_g"], scalars.get("loss_control", math.nan)])
            run.append_metrics(out_dir, {"step": step, "event": "step", **scalars})
            progress(ProgressUpdate("step", step, total, scalars))
        if step % hp.eval_every == 0 or step == total:
            figures = evaluate()
            scalars = headline(figures)
            history["eval"].append(history_row(step, scalars))
            run.append_metrics(out_dir, {"step": step, "event": "evaluation", **scalars})
            progress(ProgressUpdate("evaluation", step, total, scalars))
            picture_names = pictures()
            if stopper is not None:  # the best evaluation's weights, figures and predictions are the outputs
                stopper.observe(step, scalars["accuracy"], outputs_now)
        if step % hp.checkpoint_every == 0 or step == total or (stopper is not None and stopper.stopped):
            checkpoint(losses)

    # ---- final artifacts: classifier (EMA weights when on), control, generator, metrics; the pictures
    # of the last evaluation (step == total) are the final ones
    if figures is None:  # resumed from the final checkpoint (e.g. a crash while writing artifacts)
        figures = evaluate()
        picture_names = pictures()
    best = ema.module if ema is not None else net
    if stopper is not None and stopper.best_state is not None:  # early stopping: the best evaluated step's
        kept = stopper.best_state
        best.load_state_dict(kept["classifier"])
        gen.load_state_dict(kept["generator"])
        if control is not None and kept["control"] is not None:
            (ema_c.module if ema_c is not None else control).load_state_dict(kept["control"])
        figures, predictions = kept["figures"], dict(kept["predictions"])
    artifacts = save_classifier(best, clf, train, out_dir, "model", notes, export=True)
    if control is not None:
        c_best = ema_c.module if ema_c is not None else control
        # exported too: the verdict may say to use it
        artifacts += save_classifier(
            c_best, clf, train, out_dir, "control", [*notes, "supervised-only control"], export=True
        )
    g_layout = {"kind": "features", "features": net.head.in_features} if feature_space else train.layout.to_dict()
    artifacts += save_generator(gen.eval(), out_dir, g_layout, [f"ssgan generator ({hp.generator_space} space)"])
    artifacts += picture_names
    result = (
        verdict(y_val, predictions["ssgan"].numpy(), predictions["control"].numpy()) if control is not None else None
    )
    metrics = {
        "method": "ssgan",
        "steps": total,
        "seed": seed,
        "class_names": list(train.classes),
        "labeled_examples": len(feed_lab),
        "unlabeled_examples": len(feed_unl),
        "validation_examples": len(feed_val),
        "evaluated_with_ema": ema is not None,
        "ssgan": figures["ssgan"],
        "control": figures.get("control"),
        **deltas(figures),
        "verdict": result,
        "notes": notes,
        **(stopper.summary(step, total) if stopper is not None else {}),
    }
    run.write_json(out_dir / "metrics.json", metrics)
    artifacts.append("metrics.json")
    if result is not None:
        log.info("ssgan verdict: %s", result["message"])
        progress(ProgressUpdate("log", step, total, {}, message=result["message"]))
    for name in artifacts:
        progress(ProgressUpdate("artifact", step, total, headline(figures), path=name))
    return RunResult(metrics=metrics, artifacts=artifacts)
