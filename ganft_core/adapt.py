"""`adapt`: few-shot adaptation of a pretrained GAN to a small image set (or training one from scratch).

One loop, top to bottom (STYLE.md 1): load data, build nets, resume, then per step a D step and
a G step, and at intervals log, evaluate and checkpoint; finally write the artifacts.
- Loss: non-saturating logistic (Goodfellow et al. 2014): D minimises softplus(D(fake)) +
  softplus(-D(real)), G minimises softplus(-D(fake)).
- FreezeD (Mo et al. 2020): D's lowest `freeze_d_blocks` blocks keep their pretrained weights.
- DiffAugment (Zhao et al. 2020) on every D input, real and fake, in the D and the G step, each
  op per image with probability p; ADA (Karras et al. 2020) tunes p from E[sign(D(real))].
- R1 (Mescheder et al. 2018) as in StyleGAN2-ADA: gamma/2 · E||∇_x D(aug(x))||² on reals, the
  gradient taken w.r.t. the real images *before* augmentation, through the differentiable
  augmentation; lazy (every `r1_every` D steps, scaled by `r1_every`; Karras et al. 2020b, sec. 3.1).
- EMA of G's weights: the evaluated and exported generator.
Labels are ignored (an unconditional GAN).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ganft_core import run
from ganft_core.adapt_nets import build_nets, d_blocks, freeze_lowest_blocks, set_train_mode
from ganft_core.augment import AdaController, diff_augment
from ganft_core.config import AdaptHyperparameters
from ganft_core.data.types import Dataset, Layout, dataset_stats
from ganft_core.early_stop import EarlyStopper, copy_state
from ganft_core.errors import Aborted, DatasetError, NanLossError, SpecError
from ganft_core.fid import Evaluator, FeatureStats, frechet_distance, kernel_inception_distance, load_evaluator
from ganft_core.images import save_curves, save_grid
from ganft_core.models.export import export_program
from ganft_core.models.io import meta_for, save_model
from ganft_core.train import AbortFn, ProgressFn, ProgressUpdate, RunResult

log = logging.getLogger(__name__)

GRID_SAMPLES = 64  # images in samples.png (8×8)
GRID_SEED = 20_240_601  # fixed latents for the grids: the same z at every evaluation
EVAL_SEED = 7  # fixed latents for FID/KID, so evaluations differ only by the weights
INDEX_SEED_OFFSET = 1_000_003  # the batch-index generator's seed is the job's seed plus this
PICTURES = ("samples.png", "curves.png")  # rewritten at every evaluation (and the final ones)
NO_EVALUATOR = "none: no evaluator model or Inception weights given, FID/KID not computed"


def train_adapt(
    hp: AdaptHyperparameters,
    data: Dataset,
    out_dir: Path,
    *,
    seed: int,
    validation: Dataset | None,
    base_model: Path | None,
    evaluator: Path | None,
    inception_weights: Path | None,
    progress: ProgressFn,
    should_abort: AbortFn,
    device: torch.device,
) -> RunResult:
    """Run (or resume) an adapt job in `out_dir`; see the module docstring for the method."""
    started = time.monotonic()
    # ---------------------------------------------------------------- data
    if data.layout.kind != "image":
        raise DatasetError("adapt needs an image dataset, this one holds feature vectors")
    if len(data) < 2:
        raise DatasetError(f"adapt needs at least 2 images, the dataset has {len(data)}")
    if validation is not None and len(validation) < 2:
        raise DatasetError(f"the validation set needs at least 2 images for FID/KID, it has {len(validation)}")
    run.seed_everything(seed, deterministic=hp.deterministic)
    cuda = device.type == "cuda"
    # N×C×H×W in [0,1] batches: the whole set on the device when it fits, else gathered from RAM or the
    # memory-mapped stored form a batch at a time, the next one prefetched while a step runs (data/feed.py).
    reals = data.feed(device, channels_last=cuda)
    # Batch indices come from their own generator (on the device when the set is there: no host sync), so
    # the next batch can be drawn and prefetched early without moving any other random stream.
    idx_gen = torch.Generator(device=device if reals.on_device else "cpu").manual_seed(seed + INDEX_SEED_OFFSET)
    eval_data = validation if validation is not None else data
    run.write_spec(
        out_dir,
        {
            "method": "adapt",
            "hyperparameters": hp.model_dump(),
            "seed": seed,
            "data": dataset_stats(data),
            "validation": dataset_stats(validation) if validation is not None else None,
            "data_path": {"on_device": reals.on_device, "stored_bytes": reals.nbytes, "storage": data.storage},
            "base_model": str(base_model) if base_model else None,
            "device": str(device),
        },
    )

    # ---------------------------------------------------------------- nets and optimisers
    nets = build_nets(hp, data.layout, base_model)
    image = nets.image or data.layout  # what G makes and D takes
    fit_train, fit_eval, fit_note = fit_images(hp.large_images, data.layout, image)
    if fit_note:
        nets.notes.append(fit_note)
    g, d = nets.generator.to(device), nets.discriminator.to(device)
    if cuda:
        g.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # missing from torch's stubs
        d.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    frozen = freeze_lowest_blocks(d, hp.freeze_d_blocks)
    if frozen and not nets.pretrained_d:
        nets.notes.append("FreezeD on a randomly initialised D freezes random features")
    if frozen:
        nets.notes.append(f"FreezeD: lowest {len(frozen)} of {len(d_blocks(d))} D blocks frozen")
    d_params = list(run.iter_trainable(d))
    opt_g = torch.optim.Adam(g.parameters(), lr=hp.lr_g, betas=(hp.beta1, hp.beta2))
    opt_d = torch.optim.Adam(d_params, lr=hp.lr_d, betas=(hp.beta1, hp.beta2))
    ema = run.Ema(g, hp.ema_decay)
    ops = list(hp.diffaugment)
    use_ada = hp.ada and bool(ops)  # with no augmentation ops, p means nothing: reported as 0
    p0 = hp.augment_p if hp.augment_p is not None else (0.0 if use_ada else 1.0)
    p0 = p0 if ops else 0.0
    ada = AdaController(
        target=hp.ada_target,
        interval=hp.ada_interval,
        speed_images=hp.ada_speed_images,
        batch_size=hp.batch_size,
        p=p0,
        device=device,
    )
    ev = load_evaluator(evaluator=evaluator, inception_weights=inception_weights)
    ev = ev.to(device) if ev is not None else None
    real_stats = None
    if hp.early_stopping is not None and ev is None:
        raise SpecError(
            "early_stopping watches FID, which needs an evaluator model or Inception weights",
            field="hyperparameters.early_stopping",
        )
    stopper = EarlyStopper(hp.early_stopping, metric="fid", higher_is_better=False) if hp.early_stopping else None
    if ev is not None:
        real_stats = FeatureStats.of_batches(ev, _Fitted(eval_data.feed(device, max_device_bytes=0), fit_eval))
    grid_z = torch.randn(GRID_SAMPLES, nets.z_dim, generator=torch.Generator().manual_seed(GRID_SEED)).to(device)

    # ---------------------------------------------------------------- resume
    step, history = 0, []
    ckpt_path = run.latest_checkpoint(out_dir)
    if ckpt_path is not None:
        ckpt = run.load_checkpoint(ckpt_path, map_location=device)
        if ckpt.get("method") != "adapt":
            raise SpecError(f"{ckpt_path.name} was not written by an adapt run", field="method")
        g.load_state_dict(ckpt["G"])
        d.load_state_dict(ckpt["D"])
        ema.load_state_dict(ckpt["G_ema"])
        opt_g.load_state_dict(ckpt["opt_g"])
        opt_d.load_state_dict(ckpt["opt_d"])
        ada.load_state_dict(ckpt["ada"])
        run.restore_rng_state(ckpt["rng"])
        if "index_rng" in ckpt:
            idx_gen.set_state(ckpt["index_rng"])
        step, history = int(ckpt["step"]), list(ckpt["history"])
        if stopper is not None:
            stopper.load_state_dict(ckpt.get("early_stopping"))
        started -= float(ckpt.get("elapsed_s", 0.0))  # "seconds" counts every attempt of the run
        nets.notes.append(f"resumed from {ckpt_path.name} at step {step}")
    for note in nets.notes:
        log.info(note)
        progress(ProgressUpdate("log", step, hp.steps, {}, message=note))

    def save(at: int) -> None:
        path = run.save_checkpoint(
            out_dir,
            at,
            {
                "method": "adapt",
                "step": at,
                "G": g.state_dict(),
                "D": d.state_dict(),
                "G_ema": ema.state_dict(),
                "opt_g": opt_g.state_dict(),
                "opt_d": opt_d.state_dict(),
                "ada": ada.state_dict(),
                "rng": run.capture_rng_state(),
                "index_rng": idx_state,
                "history": history,
                "elapsed_s": time.monotonic() - started,
                "early_stopping": stopper.state_dict() if stopper is not None else None,
            },
            keep_last=3,
        )
        progress(ProgressUpdate("checkpoint", at, hp.steps, {}, path=str(path.relative_to(out_dir))))

    def evaluate(at: int) -> dict[str, float]:
        """FID/KID and p; the grid of the fixed latents (numbered, and as samples.png) and curves.png so far,
        each rewritten picture reported as an `artifact` update so that a watcher can publish it at once."""
        grid = _sample(ema.module, grid_z)
        numbered = save_grid(grid, out_dir / f"samples-{at:08d}.png", nrow=8)
        shutil.copyfile(numbered, out_dir / "samples.png.tmp")
        (out_dir / "samples.png.tmp").replace(out_dir / "samples.png")
        scores = {"augment_p": float(ada.p)}
        if use_ada:
            scores["ada_rt"] = float(ada.last_rt)  # E[sign(D(real))] at the last p update
        if ev is not None and real_stats is not None:
            scores.update(_fid_kid(ema.module, ev, real_stats, hp.eval_samples, nets.z_dim, device))
        history.append({"step": at, **scores})
        run.append_metrics(out_dir, {"step": at, "kind": "evaluation", **scores})
        save_curves(_curve_panels(out_dir), out_dir / "curves.png")
        progress(ProgressUpdate("evaluation", at, hp.steps, scores, path=numbered.name))
        for name in PICTURES:
            progress(ProgressUpdate("artifact", at, hp.steps, {}, path=name))
        return scores

    # ---------------------------------------------------------------- train
    g.train()
    set_train_mode(d, frozen)
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)  # any non-finite loss since the last check
    last: dict[str, torch.Tensor] = {}
    r1 = torch.zeros((), device=device)  # the latest R1 value (computed every r1_every steps)

    def draw() -> tuple[torch.Tensor, torch.Tensor]:
        """(generator state before the draw, the next batch's indices); the state is what a checkpoint keeps."""
        state = idx_gen.get_state()
        return state, torch.randint(len(reals), (hp.batch_size,), generator=idx_gen, device=idx_gen.device)

    idx_state, idx = draw()
    while step < hp.steps and not (stopper is not None and stopper.stopped):
        if should_abort():
            _check(nonfinite, last, step)
            save(step)
            raise Aborted(f"stopped at step {step} of {hp.steps}; a checkpoint was written")
        p = ada.p if use_ada else p0

        # ---- D step: logistic loss on augmented reals and fakes, lazy R1 on reals
        do_r1 = hp.r1_gamma > 0 and step % hp.r1_every == 0
        real = fit_train(reals.gather(idx)).requires_grad_(do_r1)
        if step + 1 < hp.steps:
            idx_state, idx = draw()
            reals.prefetch(idx)  # gathered (and copied to the device) while this step runs
        with torch.no_grad(), run.autocast(device):
            fake = g(torch.randn(hp.batch_size, nets.z_dim, device=device))
        with run.autocast(device):
            d_real = d(diff_augment(real, ops, p)).float()
            d_fake = d(diff_augment(fake.detach(), ops, p)).float()
        loss_d = F.softplus(d_fake).mean() + F.softplus(-d_real).mean()
        if do_r1:
            (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
            r1 = grad.float().square().sum(dim=(1, 2, 3)).mean()  # E||∇_x D||², kept for the logs
            loss_d = loss_d + r1 * (hp.r1_gamma / 2 * hp.r1_every)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        if use_ada:
            ada.observe(d_real)
            if (step + 1) % hp.ada_interval == 0:
                ada.update()

        # ---- G step: non-saturating loss through the same augmentation; D's weights untouched
        for param in d_params:
            param.requires_grad_(False)
        with run.autocast(device):
            d_gen = d(diff_augment(g(torch.randn(hp.batch_size, nets.z_dim, device=device)), ops, p)).float()
        loss_g = F.softplus(-d_gen).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        for param in d_params:
            param.requires_grad_(True)
        ema.update(g)
        step += 1

        # ---- log, evaluate, checkpoint (the only host syncs)
        last = {
            "loss_d": loss_d.detach(),
            "loss_g": loss_g.detach(),
            "r1": r1.detach(),
            "d_real": d_real.detach().mean(),
            "d_fake": d_fake.detach().mean(),
        }
        nonfinite |= ~torch.isfinite(loss_d.detach() + loss_g.detach())
        if step % hp.log_every == 0 or step == hp.steps:
            scalars = _check(nonfinite, last, step)
            scalars.update(augment_p=float(ada.p), seconds=time.monotonic() - started)
            run.append_metrics(out_dir, {"step": step, "kind": "log", **scalars})
            progress(ProgressUpdate("step", step, hp.steps, scalars))
        if step % hp.eval_every == 0 or step == hp.steps:
            scores = evaluate(step)
            if stopper is not None:  # the best evaluation's G (EMA) and D are the outputs
                stopper.observe(step, scores["fid"], lambda: {"G_ema": copy_state(ema.module), "D": copy_state(d)})
        if step % hp.checkpoint_every == 0 or step == hp.steps or (stopper is not None and stopper.stopped):
            _check(nonfinite, last, step)
            save(step)
    if not history or history[-1]["step"] != step or not all((out_dir / name).is_file() for name in PICTURES):
        # A finished run resumed (a later worker attempt starts in a fresh folder): evaluate once more
        # for the artifacts, replacing the checkpoint's record of that evaluation.
        if history and history[-1]["step"] == step:
            history.pop()
        evaluate(step)

    # ---------------------------------------------------------------- artifacts
    summary: dict[str, Any] = {}
    if stopper is not None:
        summary = stopper.summary(step, hp.steps)
        if stopper.best_state is not None:  # early stopping: the best evaluated step's weights
            ema.module.load_state_dict(stopper.best_state["G_ema"])
            d.load_state_dict(stopper.best_state["D"])
    return _finish(
        hp,
        image,
        out_dir,
        g_ema=ema.module,
        d=d,
        history=history,
        ev=ev,
        z_dim=nets.z_dim,
        against="validation set" if validation is not None else "training images",
        started=started,
        progress=progress,
        early_stopping=summary,
    )


Fit = Callable[[torch.Tensor], torch.Tensor]


def fit_images(policy: str, data: Layout, image: Layout) -> tuple[Fit, Fit, str | None]:
    """(training fit, evaluation fit, note) taking N×C×H×W batches of `data`'s size to `image`'s (G's output).

    - "resize": antialiased bilinear to G's size, the same in training and for FID/KID;
    - "random_crop": a random window per image in training (offsets from torch's RNG on the batch's
      device, which checkpoints keep), the centre window for FID/KID.
    Identity when the sizes agree. The stored data is never changed: this runs on each batch.
    """
    h, w = image.height, image.width
    if (data.height, data.width) == (h, w):
        return _same, _same, None
    size = f"{data.width}×{data.height} images, {w}×{h} networks"
    if policy == "resize":

        def resize(x: torch.Tensor) -> torch.Tensor:
            return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)

        return resize, resize, f"large images: {size}: resized (antialiased bilinear) in training and for FID/KID"

    def random_crop(x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        top = torch.randint(data.height - h + 1, (n, 1), device=x.device) + torch.arange(h, device=x.device)
        left = torch.randint(data.width - w + 1, (n, 1), device=x.device) + torch.arange(w, device=x.device)
        rows = torch.arange(n, device=x.device)[:, None, None, None]
        chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        return x[rows, chans, top[:, None, :, None], left[:, None, None, :]]  # N×C×h×w

    def centre(x: torch.Tensor) -> torch.Tensor:
        top, left = (data.height - h) // 2, (data.width - w) // 2
        return x[:, :, top : top + h, left : left + w]

    return random_crop, centre, f"large images: {size}: random crops in training, the centre crop for FID/KID"


def _same(x: torch.Tensor) -> torch.Tensor:
    return x


class _Fitted:
    """A Feed whose ordered batches pass through `fit` (what FeatureStats.of_batches reads)."""

    def __init__(self, feed: Any, fit: Fit) -> None:
        self.feed, self.fit = feed, fit

    def __len__(self) -> int:
        return len(self.feed)

    def iter_batches(self, batch: int) -> Iterator[torch.Tensor]:
        return (self.fit(b) for b in self.feed.iter_batches(batch))


def _check(nonfinite: torch.Tensor, last: dict[str, torch.Tensor], step: int) -> dict[str, float]:
    """Host sync: the latest losses as floats, or NanLossError if any loss went non-finite since the last check."""
    if bool(nonfinite):
        raise NanLossError(
            f"a GAN loss became NaN or infinite before step {step}; lower the learning rates "
            "or raise r1_gamma. The last good checkpoint is kept."
        )
    return run.ensure_finite(last, step) if last else {}


@torch.inference_mode()
def _sample(g: torch.nn.Module, z: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """G(z) in batches, as float32 on the device (G in eval mode: the EMA copy always is)."""
    with run.autocast(z.device):
        return torch.cat([g(z[i : i + batch]).float() for i in range(0, z.shape[0], batch)])


def _fid_kid(
    g: torch.nn.Module, ev: Evaluator, real: FeatureStats, n: int, z_dim: int, device: torch.device
) -> dict[str, float]:
    z = torch.randn(n, z_dim, generator=torch.Generator().manual_seed(EVAL_SEED)).to(device)
    fake = FeatureStats.of(ev.features(_sample(g, z)))
    return {
        "fid": frechet_distance(fake.mu, fake.sigma, real.mu, real.sigma),
        "kid": kernel_inception_distance(fake.features, real.features),
    }


def _finish(
    hp: AdaptHyperparameters,
    image: Layout,
    out_dir: Path,
    *,
    g_ema: torch.nn.Module,
    d: torch.nn.Module,
    history: list[dict[str, float]],
    ev: Evaluator | None,
    z_dim: int,
    against: str,
    started: float,
    progress: ProgressFn,
    early_stopping: dict[str, Any],
) -> RunResult:
    """Write the EMA generator (model.* and generator.*), D, model.pt2 and metrics.json."""
    layout = image.to_dict()
    shape = "×".join(str(v) for v in image.shape())
    g_note = (
        f"EMA of G (decay {hp.ema_decay}); input z: N×{z_dim} float32 ~ N(0, I); output: N×{shape} images in [0, 1]"
    )
    g_cpu, d_cpu = g_ema.to("cpu"), d.to("cpu")
    g_meta = meta_for(g_cpu, input_layout=layout, notes=[g_note])
    save_model(g_cpu, g_meta, out_dir, "model")
    save_model(g_cpu, g_meta, out_dir, "generator")
    save_model(
        d_cpu.eval(),
        meta_for(d_cpu, input_layout=layout, notes=["the adapted discriminator (raw logits)"]),
        out_dir,
        "discriminator",
    )
    export_program(g_cpu, torch.randn(2, z_dim), out_dir / "model.pt2")
    best_step = early_stopping.get("early_stopping", {}).get("best_step")
    final = next((h for h in history if h["step"] == best_step), history[-1])  # the figures of the weights written
    metrics: dict[str, Any] = {
        "fid": final.get("fid"),
        "kid": final.get("kid"),
        "augment_p": final["augment_p"],
        "evaluator": ev.name if ev is not None else NO_EVALUATOR,
        "fid_reference": against if ev is not None else None,  # which real images FID/KID compare with
        "steps": hp.steps,
        "seconds": time.monotonic() - started,
        "history": history,
        **early_stopping,
    }
    run.write_json(out_dir / "metrics.json", metrics)  # samples.png and curves.png: the last evaluation's
    artifacts = [
        "model.safetensors",
        "model.json",
        "model.pt2",
        "generator.safetensors",
        "generator.json",
        "discriminator.safetensors",
        "discriminator.json",
        "metrics.json",
        *PICTURES,
    ]
    for name in artifacts:
        progress(ProgressUpdate("artifact", hp.steps, hp.steps, {}, path=name))
    return RunResult(metrics=metrics, artifacts=artifacts)


def _curve_panels(out_dir: Path) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """Losses, FID/KID and p over steps, read back from metrics.jsonl (complete across resumes in the same
    folder; a worker's later attempt starts a fresh folder, so its curves begin at the resumed step)."""
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    series = {
        "GAN losses": ("log", ["loss_d", "loss_g"]),
        "FID": ("evaluation", ["fid"]),
        "KID": ("evaluation", ["kid"]),
        "augmentation p": ("log", ["augment_p"]),
    }
    panels: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for title, (kind, keys) in series.items():
        lines = {
            k: [(float(r["step"]), float(r[k])) for r in records if r.get("kind") == kind and r.get(k) is not None]
            for k in keys
        }
        if any(lines.values()):
            panels[title] = lines
    return panels
