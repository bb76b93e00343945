"""ssgan on images: the three benchmarks of the image issue, through `ganft_core.train` (the core path).

    python bench/ssgan_images.py digits   [--seeds 1 2 3] [--set NAME=VALUE ...] [--record]
    python bench/ssgan_images.py transfer [--seeds 1 2 3] [--record]
    python bench/ssgan_images.py fashion  [--seeds 1 2 3] [--per-class N] [--record]

- digits: scikit-learn's digits as 1×8×8 images in [0, 1], the split of bench/ssgan_digits.py (test 20%
  stratified by `random_state=seed`, 10 labels per class, the whole train split unlabeled). Bar: mean ssgan
  >= 98.0%, >= +1.0 point over the augmented control on the mean and not below it on any seed, < 240 s a run.
- transfer: a conv net pretrained on digits 0-4 (all labels, 8×8 upsampled to 28×28), given as the base model
  (a `torch.export` .pt2 program and a registry `convnet` in safetensors), fine-tuned on digits 5-9 with 10 labels
  per class. Bar: ssgan >= control + 0.5 on the mean, not below on any seed, and above the obvious alternative:
  a plain PyTorch supervised fine-tune of the same net with the same augmentation (`plain_finetune`).
- fashion: Fashion-MNIST (Debian's dataset-fashion-mnist) from scratch, 100 labels per class, all 60k training
  images unlabeled, the 10k test images as validation. Bar: ssgan >= control + 1.0 on the mean; < 600 s a run.
  `--per-class 6000` labels all 60k: its control is the fully supervised figure with the same net and budget.

    python bench/ssgan_images.py ablation [--seeds 1 2] [--set steps=1000] [--record]

- ablation: the digits task once per recipe variant (each ingredient removed or added alone), same seeds.

Writes `## ssgan on images: <task>` sections of bench/RESULTS.md with --record.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import numpy as np
import torch
from images_data import digits_images, fashion_split, plain_finetune, transfer_base, transfer_split

from ganft_core.config import TrainSpec
from ganft_core.train import ProgressUpdate, train

BARS = {"digits": "mean ssgan >= 98.0%, >= +1.0 over the control on the mean, not below it on any seed, < 240 s a run",
        "transfer": ("ssgan >= control + 0.5 on the mean, not below it on any seed, "
                     "above the plain supervised fine-tune"),
        "fashion": "ssgan >= control + 1.0 on the mean, < 600 s a run",
        "ablation": "each ingredient's effect on the digits task"}

# name -> overrides on top of the defaults (and of --set)
ABLATION: dict[str, dict[str, Any]] = {
    "defaults (GAN + DiffAugment + pseudo-labels)": {},
    "no pseudo-labels": {"pseudo_label_weight": 0.0},
    "no DiffAugment": {"diffaugment": False},
    "no GAN terms (pseudo-labels alone)": {"unsupervised_weight": 0.0},
    "+ conditional entropy 0.1 (Bad GAN)": {"entropy_weight": 0.1},
    "no augmentation of labeled batches": {"augment": {"translate": 0.0}},
    "weight-norm D, dropout 0.5, input noise 0.15 (Improved-GAN CIFAR)":
        {"architecture_arguments": {"norm": "weight", "dropout": 0.5, "input_noise_std": 0.15}},
}


def show(update: ProgressUpdate) -> None:
    if update.kind == "evaluation":
        m = update.metrics
        control = m.get("control_accuracy", float("nan"))
        print(f"    step {update.step}: ssgan {m['accuracy']:.4f}  control {control:.4f}",
              flush=True)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        name, _, raw = pair.partition("=")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if "." in name:  # augment.translate=0.2 -> {"augment": {"translate": 0.2}}
            outer, inner = name.split(".", 1)
            out.setdefault(outer, {})[inner] = value
        else:
            out[name] = value
    return out


def run_one(task: str, seed: int, overrides: dict[str, Any], base_format: str, work: Path,
            per_class: int = 100) -> dict[str, Any]:
    base = None
    if task == "digits":
        data, val = digits_images(seed)
    elif task == "transfer":
        data, val = transfer_split(seed)
        base = transfer_base(work, base_format)
    else:
        data, val = fashion_split(seed, per_class)
    spec = TrainSpec.model_validate({"method": "ssgan", "seed": seed, "hyperparameters": overrides})
    with tempfile.TemporaryDirectory(prefix=f"ssgan-{task}-") as out:
        start, cpu_start = time.perf_counter(), time.process_time()
        result = train(spec, data, Path(out), validation=val, base_model=base, device="cpu", progress=show)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    m = result.metrics
    row = {"seed": seed, "ssgan": m["ssgan"]["accuracy"], "control": m["control"]["accuracy"],
           "ssgan_f1": m["ssgan"]["macro_f1"], "control_f1": m["control"]["macro_f1"],
           "verdict": m["verdict"]["outcome"], "seconds": seconds, "cpu_seconds": cpu}
    if task == "transfer":
        row["plain"] = plain_finetune(work, base_format, data, val, seed, steps=spec.hyperparameters.steps)
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=sorted(BARS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE", help="hyperparameter overrides")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--base-format", choices=["program", "weights"], default="program")
    parser.add_argument("--per-class", type=int, default=100, help="fashion: labels per class (6000 = all)")
    args = common.parse_bench_args(parser, section="", argv=argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    overrides = parse_overrides(args.set)
    if args.task == "ablation":
        ablation(args, overrides)
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="ssgan-bench-") as work:
        for seed in args.seeds:
            row = run_one(args.task, seed, overrides, args.base_format, Path(work), args.per_class)
            rows.append(row)
            extra = f"  plain fine-tune {row['plain']:.4f}" if "plain" in row else ""
            print(f"seed {seed}: ssgan {row['ssgan']:.4f}  control {row['control']:.4f}  "
                  f"delta {row['ssgan'] - row['control']:+.4f}{extra}  {row['verdict']}  "
                  f"{row['seconds']:.1f} s ({row['cpu_seconds']:.1f} CPU-s)",
                  flush=True)
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("ssgan", "control", "ssgan_f1", "control_f1")}
    print(f"mean: ssgan {mean['ssgan']:.4f}  control {mean['control']:.4f}  "
          f"delta {mean['ssgan'] - mean['control']:+.4f}  slowest {max(r['seconds'] for r in rows):.1f} s")
    if args.record:
        record(args, overrides, rows, mean)


def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = {**base}
    for key, value in extra.items():
        out[key] = {**out.get(key, {}), **value} if isinstance(value, dict) else value
    return out


def ablation(args: argparse.Namespace, overrides: dict[str, Any]) -> None:
    table = []
    with tempfile.TemporaryDirectory(prefix="ssgan-ablation-") as work:
        for name, extra in ABLATION.items():
            spec = merged(overrides, extra)
            rows = [run_one("digits", seed, spec, args.base_format, Path(work)) for seed in args.seeds]
            ssgan, control = (float(np.mean([r[k] for r in rows])) for k in ("ssgan", "control"))
            seconds = float(np.mean([r["seconds"] for r in rows]))
            cpu = float(np.mean([r["cpu_seconds"] for r in rows]))
            table.append((name, ssgan, control, [r["ssgan"] for r in rows], seconds, cpu))
            print(f"{name}: ssgan {ssgan:.4f}  control {control:.4f}  delta {ssgan - control:+.4f}  {seconds:.0f} s",
                  flush=True)
    if args.record:
        m = common.machine()
        lines = ["| variant | ssgan acc (mean) | control acc (mean) | delta | ssgan per seed | s a run "
                 "| CPU-s a run |",
                 "|---|---|---|---|---|---|---|"]
        lines += [f"| {n} | {s:.4f} | {c:.4f} | {s - c:+.4f} | {' '.join(f'{v:.4f}' for v in per)} "
                  f"| {t:.0f} | {u:.0f} |" for n, s, c, per, t, u in table]
        body = (f"`python bench/ssgan_images.py {' '.join(args.argv)}` — {m.describe()}, {args.threads} torch "
                f"thread(s), load average {common.load_average()} at the end; seeds {args.seeds}. Each variant "
                f"changes one thing from the defaults{' + ' + json.dumps(overrides) if overrides else ''}; "
                "the control moves too where the change touches it (augmentation) or the shared RNG stream.\n\n"
                + "\n".join(lines) + "\n")
        common.write_section(args.section or "ssgan on images: ablation (digits 1×8×8)", body)


def record(args: argparse.Namespace, overrides: dict[str, Any], rows: list[dict[str, Any]],
           mean: dict[str, float]) -> None:
    plain = "plain" in rows[0]
    head = "| seed | ssgan acc | control acc | delta | ssgan F1 | control F1 |"
    head += " plain fine-tune |" if plain else ""
    head += " verdict | seconds | CPU seconds |\n|" + "---|" * (9 + plain) + "\n"
    lines = []
    for r in rows:
        cells = [str(r["seed"]), f"{r['ssgan']:.4f}", f"{r['control']:.4f}", f"{r['ssgan'] - r['control']:+.4f}",
                 f"{r['ssgan_f1']:.4f}", f"{r['control_f1']:.4f}"]
        cells += [f"{r['plain']:.4f}"] if plain else []
        cells += [r["verdict"], f"{r['seconds']:.1f}", f"{r['cpu_seconds']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    m = common.machine()
    body = (f"`python bench/ssgan_images.py {' '.join(args.argv)}` — {m.describe()}, "
            f"{args.threads} torch thread(s), load average {common.load_average()} at the end. "
            f"Hyperparameters: defaults{' + ' + json.dumps(overrides) if overrides else ''}. "
            f"Bar: {BARS[args.task]}.\n\n"
            + head + "\n".join(lines)
            + f"\n\nMean: ssgan {mean['ssgan']:.4f}, control {mean['control']:.4f}, "
              f"delta {mean['ssgan'] - mean['control']:+.4f}; "
              f"macro F1 {mean['ssgan_f1']:.4f} vs {mean['control_f1']:.4f}.\n")
    common.write_section(args.section or f"ssgan on images: {args.task}", body)


if __name__ == "__main__":
    main()
