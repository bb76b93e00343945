"""ssgan on text = GAN-BERT (Croce et al., ACL 2020), trained next to its supervised-only control.

The discriminator is a sentence encoder (the registry's `minilm`: all-MiniLM-L6-v2 by default, mean pooling)
with GAN-BERT's head; a feature-space generator makes sentence vectors from noise. As in ssgan.py the fake
class is implicit (logit 0): D(x) = Z/(Z+1), D's loss is cross-entropy on labeled texts plus the real/fake
terms on unlabeled texts and detached fakes, G's loss is feature matching on D's hidden layer.

Unlike the PyTorch port of GAN-BERT, which sums both losses and calls one `backward` (so G's loss also moves
the encoder and the head), D and G step separately: the D step sees detached fakes, and G's gradient is taken
with `torch.autograd.grad` for G's parameters only, from real features that are detached. The encoder is
fine-tuned (a frozen encoder gave no gain in the issue's check); its lowest `freeze_blocks` may be frozen,
and then they run in eval mode (no dropout) and their outputs are computed once for every text and cached,
which is what makes CPU runs affordable (bench/RESULTS.md, "ssgan on text").

AdamW with a linear warm-up then linear decay, separate learning rates for the encoder, the head and G, and
gradient clipping per net (hyperparameters.text). Batches are padded to their longest text (dynamic padding);
bf16 autocast on CUDA. The control is the same encoder and head with the same initial weights, labeled
batches, seed and steps, trained with cross-entropy only, so metrics.json's `verdict` says whether the GAN
helped (ganft_core/verdict.py).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ganft_core import run
from ganft_core.classify_metrics import classification_metrics
from ganft_core.config import SsganHyperparameters
from ganft_core.data.text import TextDataset, align_text, split_text
from ganft_core.data.types import require_labeled_classes
from ganft_core.errors import Aborted, DatasetError, SpecError
from ganft_core.images import save_curves
from ganft_core.models.minilm import MiniLMClassifier
from ganft_core.ssgan import feature_matching_loss, unsupervised_d_loss
from ganft_core.ssgan_nets import freeze_lowest_blocks
from ganft_core.ssgan_report import curve_panels, deltas, headline, history_row
from ganft_core.text_nets import (
    Tokens,
    build_feature_generator,
    build_text_classifier,
    copy_tokenizer,
    save_text_classifier,
)
from ganft_core.text_report import nearest_texts
from ganft_core.text_trunk import Trunk, adamw_groups, lr_factor, predict, train_mode
from ganft_core.train import AbortFn, ProgressFn, ProgressUpdate, RunResult
from ganft_core.verdict import verdict

log = logging.getLogger(__name__)


def _prepare_data(
    hp: SsganHyperparameters, data: TextDataset, validation: TextDataset | None, seed: int
) -> tuple[TextDataset, TextDataset]:
    train, val = (
        split_text(data, hp.validation_fraction, seed) if validation is None else (data, align_text(data, validation))
    )
    require_labeled_classes(train)  # type: ignore[arg-type]  # (uses y and classes only)
    if not val.labeled.any():
        raise DatasetError("the validation set has no labeled examples", field="validation_dataset_id")
    return train, val


def train_ssgan_text(
    hp: SsganHyperparameters,
    data: TextDataset,
    out_dir: Path,
    *,
    seed: int,
    validation: TextDataset | None,
    base_model: Path | None,
    progress: ProgressFn,
    should_abort: AbortFn,
    device: torch.device,
) -> RunResult:
    """Run (or resume) GAN-BERT in `out_dir`; see the module docstring."""
    if getattr(hp, "early_stopping", None) is not None:
        raise SpecError("early_stopping is not supported for text datasets yet", field="hyperparameters.early_stopping")
    total, t = hp.steps, hp.text
    run.seed_everything(seed, deterministic=hp.deterministic)

    # ---- data: labeled set, unlabeled pool (every training text), validation; tokenised once
    train, val = _prepare_data(hp, data, validation, seed)
    clf = build_text_classifier(hp, train, base_model)
    started = time.perf_counter()
    tok_train = Tokens.of(train.texts, clf.tokenizer_dir, t.max_length)
    tok_val = Tokens.of(val.texts, clf.tokenizer_dir, t.max_length)
    tokenize_s = time.perf_counter() - started
    lab_index = torch.from_numpy(np.flatnonzero(train.labeled))
    y_train = torch.from_numpy(train.y)
    y_val = torch.from_numpy(val.y[val.labeled])
    val_keep = torch.from_numpy(np.flatnonzero(val.labeled))
    tok_val = Tokens(tok_val.ids[val_keep], tok_val.lengths[val_keep], tok_val.truncated)
    notes = [
        *clf.notes,
        f"tokenised {len(train) + len(val)} texts in {tokenize_s:.2f} s; "
        f"{tok_train.truncated + tok_val.truncated} over {t.max_length} tokens were truncated",
    ]

    # ---- nets: classifier (= D), feature-space generator, control with the same initial weights
    net = clf.net.to(device)
    frozen = freeze_lowest_blocks(net, hp.freeze_blocks)
    gen = build_feature_generator(hp.z_dim, net.head.in_features).to(device)
    control = copy.deepcopy(net) if hp.run_control else None
    frozen_c = list(control.blocks())[: hp.freeze_blocks] if control is not None else []
    trunk_train = Trunk(net, tok_train, hp.freeze_blocks, device)
    trunk_val = Trunk(net, tok_val, hp.freeze_blocks, device)
    if hp.freeze_blocks:
        notes.append(
            f"lowest {hp.freeze_blocks} encoder blocks frozen (eval mode)"
            + (", their outputs cached" if trunk_train.cache is not None else "")
        )
    opt_d = torch.optim.AdamW(adamw_groups(net, t.encoder_lr, t.head_lr, t.weight_decay), lr=t.head_lr)
    opt_g = torch.optim.AdamW(
        [{"params": list(gen.parameters()), "base_lr": t.generator_lr}], lr=t.generator_lr, weight_decay=0.0
    )
    opt_c = (
        torch.optim.AdamW(adamw_groups(control, t.encoder_lr, t.head_lr, t.weight_decay), lr=t.head_lr)
        if control is not None
        else None
    )
    ema = run.Ema(net, hp.ema_decay) if hp.ema_decay > 0 else None
    ema_c = run.Ema(control, hp.ema_decay) if hp.ema_decay > 0 and control is not None else None
    # Indices and noise come from one CPU generator: batches are cut to their longest text without a device sync.
    sampler = torch.Generator().manual_seed(seed)

    # ---- resume from the newest checkpoint, or start the run folder
    step = 0
    history: dict[str, list[list[float]]] = {"log": [], "eval": []}
    ckpt_path = run.latest_checkpoint(out_dir)
    if ckpt_path is not None:
        ckpt = run.load_checkpoint(ckpt_path)
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
        progress(ProgressUpdate("log", step, total, {}, message=f"resumed from checkpoint at step {step}"))
    else:
        resolved = {
            "method": "ssgan",
            "seed": seed,
            "hyperparameters": hp.model_dump(),
            "resolved": {
                "data": "text",
                "classifier": "minilm",
                "generator_space": "feature",
                "device": str(device),
                "frozen_blocks_cached": trunk_train.cache is not None,
            },
            "base_model": str(base_model) if base_model else None,
            "notes": notes,
            "data": _summary(train, tok_train),
            "validation": _summary(val, tok_val),
        }
        run.write_spec(out_dir, resolved)
        for note in notes:
            run.append_metrics(out_dir, {"step": 0, "event": "log", "message": note})
    for note in notes:
        log.info("ssgan text: %s", note)
        progress(ProgressUpdate("log", step, total, {}, message=note))

    def checkpoint(losses: dict[str, torch.Tensor]) -> None:
        run.ensure_finite(losses, step)  # never checkpoint a NaN state
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
        }
        path = run.save_checkpoint(out_dir, step, state, keep_last=hp.keep_checkpoints)
        progress(ProgressUpdate("checkpoint", step, total, {}, path=str(path.relative_to(out_dir))))

    predictions: dict[str, torch.Tensor] = {}

    def evaluate() -> dict[str, Any]:
        predictions["ssgan"] = predict(cast(MiniLMClassifier, ema.module) if ema else net, trunk_val, device)
        out: dict[str, Any] = {"ssgan": classification_metrics(y_val, predictions["ssgan"], train.classes)}
        if control is not None:
            c_net = cast(MiniLMClassifier, ema_c.module) if ema_c else control
            predictions["control"] = predict(c_net, trunk_val, device)
            out["control"] = classification_metrics(y_val, predictions["control"], train.classes)
            train_mode(control, frozen_c)
        train_mode(net, frozen)
        return out

    train_mode(net, frozen)
    gen.train()
    if control is not None:
        train_mode(control, frozen_c)
    losses: dict[str, torch.Tensor] = {}
    figures: dict[str, Any] | None = None
    g_params = list(gen.parameters())
    b_lab, b_unl, z_dim = hp.batch_size, hp.unlabeled_batch_size, hp.z_dim
    n_lab, n_unl = len(lab_index), len(train)
    loop_started, loop_first_step = time.perf_counter(), step

    while step < total:
        if should_abort():
            checkpoint(losses)
            raise Aborted(f"stopped at step {step} of {total} on request; a checkpoint was written")
        scale = lr_factor(step, total, t.warmup_fraction)
        for opt in (opt_d, opt_g, opt_c):
            if opt is not None:
                for group in opt.param_groups:
                    group["lr"] = group["base_lr"] * scale
        i_lab = lab_index[torch.randint(n_lab, (b_lab,), generator=sampler)]  # with replacement
        i_unl = torch.randint(n_unl, (b_unl,), generator=sampler)
        z = torch.randn(b_unl, z_dim, generator=sampler).to(device)
        yl = y_train[i_lab].to(device)

        # ---- step D: cross-entropy on labeled texts + real/fake terms on unlabeled texts and detached fakes
        with run.autocast(device):
            with torch.no_grad():
                fake = gen(z)
            sentences = trunk_train.sentence(net, torch.cat([i_lab, i_unl]))  # one encoder pass, N×H
            _, logits_real = net.from_pooled(sentences)
            _, logits_fake = net.from_pooled(fake)
        logits_lab, logits_unl = logits_real[:b_lab].float(), logits_real[b_lab:].float()
        loss_sup = F.cross_entropy(logits_lab, yl)
        loss_unsup = unsupervised_d_loss(logits_unl, logits_fake.float())
        loss_d = loss_sup + hp.resolved_unsupervised_weight(image=False) * loss_unsup
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        if t.grad_clip > 0:
            nn.utils.clip_grad_norm_([p for g in opt_d.param_groups for p in g["params"]], t.grad_clip)
        opt_d.step()

        # ---- step G: feature matching on D's hidden layer; real sentence vectors detached, D gets no gradient
        with run.autocast(device):
            with torch.no_grad():
                f_real = net.from_pooled(sentences[b_lab:].detach())[0]
            f_fake = net.from_pooled(gen(z))[0]
        loss_g = feature_matching_loss(f_real.float(), f_fake.float())
        grads = torch.autograd.grad(loss_g, g_params)
        for p, g in zip(g_params, grads, strict=True):
            p.grad = g
        if t.grad_clip > 0:
            nn.utils.clip_grad_norm_(g_params, t.grad_clip)
        opt_g.step()

        # ---- step the control: the same labeled batch, cross-entropy only
        losses = {
            "loss_d": loss_d.detach(),
            "loss_d_supervised": loss_sup.detach(),
            "loss_d_unsupervised": loss_unsup.detach(),
            "loss_g": loss_g.detach(),
        }
        if control is not None and opt_c is not None:
            with run.autocast(device):
                logits_c = control.from_pooled(trunk_train.sentence(control, i_lab))[1]
            loss_c = F.cross_entropy(logits_c.float(), yl)
            opt_c.zero_grad(set_to_none=True)
            loss_c.backward()
            if t.grad_clip > 0:
                nn.utils.clip_grad_norm_([p for g in opt_c.param_groups for p in g["params"]], t.grad_clip)
            opt_c.step()
            losses["loss_control"] = loss_c.detach()
        if ema is not None:
            ema.update(net)
        if ema_c is not None and control is not None:
            ema_c.update(control)
        step += 1

        # ---- report, evaluate, checkpoint (the only host syncs besides the batch lengths)
        if step % hp.log_every == 0 or step == total:
            scalars = {**run.ensure_finite(losses, step), "lr_encoder": t.encoder_lr * scale}
            history["log"].append([step, scalars["loss_d"], scalars["loss_g"], scalars.get("loss_control", math.nan)])
            run.append_metrics(out_dir, {"step": step, "event": "step", **scalars})
            progress(ProgressUpdate("step", step, total, scalars))
        if step % hp.eval_every == 0 or step == total:
            figures = evaluate()
            scalars = headline(figures)
            history["eval"].append(history_row(step, scalars))
            run.append_metrics(out_dir, {"step": step, "event": "evaluation", **scalars})
            progress(ProgressUpdate("evaluation", step, total, scalars))
            save_curves(curve_panels(history), out_dir / "curves.png")
            progress(ProgressUpdate("artifact", step, total, {}, path="curves.png"))
        if step % hp.checkpoint_every == 0 or step == total:
            checkpoint(losses)
    loop_s = time.perf_counter() - loop_started

    # ---- final artifacts: classifier (EMA weights when on), control, generator, tokenizer, nearest texts, metrics
    if figures is None:  # resumed from the final checkpoint
        figures = evaluate()
        save_curves(curve_panels(history), out_dir / "curves.png")
    best = cast(MiniLMClassifier, ema.module) if ema is not None else net
    example = tok_val.batch(torch.arange(min(2, len(val_keep))))
    artifacts = save_text_classifier(best, list(train.classes), t.max_length, out_dir, "model", notes, example)
    if control is not None:
        c_best = cast(MiniLMClassifier, ema_c.module) if ema_c is not None else control
        artifacts += save_text_classifier(
            c_best, list(train.classes), t.max_length, out_dir, "control", [*notes, "supervised-only control"], example
        )
    artifacts += copy_tokenizer(clf.tokenizer_dir, out_dir)
    from ganft_core.models.io import meta_for, save_model

    gen.eval()
    save_model(
        gen,
        meta_for(
            gen,
            input_layout={"kind": "features", "features": net.head.in_features},
            notes=["GAN-BERT generator: sentence vectors of the encoder (feature space)"],
        ),
        out_dir,
        stem="generator",
    )
    artifacts += ["generator.safetensors", "generator.json"]
    run.write_json(
        out_dir / "nearest_texts.json",
        nearest_texts(best, gen, trunk_train, train, seed=seed, z_dim=z_dim, device=device),
    )
    artifacts += ["nearest_texts.json", "curves.png"]
    result = (
        verdict(y_val.numpy(), predictions["ssgan"].numpy(), predictions["control"].numpy())
        if control is not None
        else None
    )
    steps_run = step - loop_first_step
    metrics = {
        "method": "ssgan",
        "data": "text",
        "steps": total,
        "seed": seed,
        "class_names": list(train.classes),
        "labeled_examples": n_lab,
        "unlabeled_examples": n_unl,
        "validation_examples": len(y_val),
        "evaluated_with_ema": ema is not None,
        "ssgan": figures["ssgan"],
        "control": figures.get("control"),
        **deltas(figures),
        "verdict": result,
        "notes": notes,
        "timing": {
            "tokenize_seconds": tokenize_s,
            "loop_seconds": loop_s,
            "steps_this_attempt": steps_run,
            "steps_per_second": steps_run / loop_s if steps_run and loop_s > 0 else None,
        },
    }
    run.write_json(out_dir / "metrics.json", metrics)
    artifacts.append("metrics.json")
    if result is not None:
        log.info("ssgan text verdict: %s", result["message"])
        progress(ProgressUpdate("log", step, total, {}, message=result["message"]))
    for name in artifacts:
        progress(ProgressUpdate("artifact", step, total, headline(figures), path=name))
    return RunResult(metrics=metrics, artifacts=artifacts)


def _summary(ds: TextDataset, tokens: Tokens) -> dict[str, Any]:
    lengths = tokens.lengths.numpy()
    counts = np.bincount(ds.y[ds.labeled], minlength=len(ds.classes))
    return {
        "examples": len(ds),
        "labeled": int(counts.sum()),
        "classes": list(ds.classes),
        "class_counts": dict(zip(ds.classes, counts.tolist(), strict=True)),
        "tokens_p50": int(np.percentile(lengths, 50)) if len(lengths) else 0,
        "truncated": tokens.truncated,
        "notes": list(ds.notes),
    }
