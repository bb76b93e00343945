"""ssgan quality benchmark: scikit-learn's digits with 10 labels per class, through `ganft_core.train`.

The split of the issue's acceptance bar: X/16 as 64-d features, `train_test_split(test_size=0.2,
stratify=y, random_state=seed)`, 10 labels per class (one `RandomState(seed)`, for each class in
order the first 10 of its permuted train indices), the whole train split as the unlabeled pool,
the test split as validation. Bar: mean test accuracy over seeds 1-3 >= 96% and >= 3 points
above the supervised-only control trained in the same run, each run under 3 minutes.

    python bench/ssgan_digits.py [--seeds 1 2 3] [--set steps=2000 ...] [--no-record]

Writes the `## ssgan digits` section of bench/RESULTS.md (`## ssgan digits (N threads)` with --threads N != 2).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from ganft_core.config import TrainSpec
from ganft_core.data import Dataset, Layout
from ganft_core.train import ProgressUpdate, train

RESULTS = Path(__file__).with_name("RESULTS.md")
BAR_ACCURACY, BAR_DELTA, BAR_SECONDS = 0.96, 0.03, 180.0


def digits_split(seed: int) -> tuple[Dataset, Dataset]:
    """(train with 10 labels per class, test) exactly as the acceptance bar describes."""
    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, stratify=y, random_state=seed)
    rng = np.random.RandomState(seed)
    keep = np.concatenate([rng.permutation(np.flatnonzero(y_tr == c))[:10] for c in range(10)])
    y_semi = np.full(len(y_tr), -1)
    y_semi[keep] = y_tr[keep]
    classes, layout = [str(c) for c in range(10)], Layout("features", features=64)
    return Dataset(x_tr, y_semi, classes, layout), Dataset(x_te, y_te, classes, layout)


def show_evaluations(update: ProgressUpdate) -> None:
    if update.kind == "evaluation":
        m = update.metrics
        control = m.get("control_accuracy", float("nan"))
        print(f"  step {update.step}: ssgan {m['accuracy']:.4f}  control {control:.4f}", flush=True)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`name=value` pairs (JSON values, else strings) as hyperparameter overrides."""
    out: dict[str, Any] = {}
    for pair in pairs:
        name, _, raw = pair.partition("=")
        try:
            out[name] = json.loads(raw)
        except json.JSONDecodeError:
            out[name] = raw
    return out


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown CPU",
    )
    cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return f"{cores} cores, {model}, load average {load} at the end"


def commit() -> str:
    """The short HEAD commit, marked when the working tree has uncommitted changes."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True).stdout.strip()
    return f"{head} + uncommitted changes" if dirty else head


def write_section(title: str, body: str) -> None:
    """Replace (or append) the `## title` section of RESULTS.md, leaving other sections alone."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    head = f"## {title}\n"
    start = text.find(head)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + head + body
    else:
        end = text.find("\n## ", start + len(head))
        text = text[:start] + head + body + (text[end:] if end >= 0 else "")
    RESULTS.write_text(text if text.endswith("\n") else text + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE", help="hyperparameter overrides")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-record", action="store_true", help="do not write bench/RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    overrides = parse_overrides(args.set)

    rows = []
    for seed in args.seeds:
        data, test = digits_split(seed)
        spec = TrainSpec.model_validate({"method": "ssgan", "seed": seed, "hyperparameters": overrides})
        with tempfile.TemporaryDirectory(prefix="ssgan-digits-") as out:
            start = time.perf_counter()
            result = train(spec, data, Path(out), validation=test, device="cpu", progress=show_evaluations)
            seconds = time.perf_counter() - start
        s, c = result.metrics["ssgan"]["accuracy"], result.metrics["control"]["accuracy"]
        rows.append((seed, s, c, seconds))
        print(f"seed {seed}: ssgan {s:.4f}  control {c:.4f}  delta {s - c:+.4f}  {seconds:.1f} s", flush=True)

    mean_s = float(np.mean([r[1] for r in rows]))
    mean_c = float(np.mean([r[2] for r in rows]))
    worst = max(r[3] for r in rows)
    passed = mean_s >= BAR_ACCURACY and mean_s - mean_c >= BAR_DELTA and worst < BAR_SECONDS
    print(
        f"mean: ssgan {mean_s:.4f}  control {mean_c:.4f}  delta {mean_s - mean_c:+.4f}  "
        f"slowest {worst:.1f} s  -> {'PASS' if passed else 'FAIL'}"
    )
    if args.no_record:
        return
    table = "\n".join(f"| {seed} | {s:.4f} | {c:.4f} | {s - c:+.4f} | {sec:.1f} |" for seed, s, c, sec in rows)
    hp = TrainSpec.model_validate({"method": "ssgan", "hyperparameters": overrides}).hyperparameters
    body = (
        f"`python bench/ssgan_digits.py{' --set ' + ' '.join(args.set) if args.set else ''}` — commit "
        f"`{commit()}`, {machine()}, torch {torch.__version__}, {args.threads} thread(s) "
        "(the CPU is shared with other work; seconds are wall time of `train()`, incl. control, eval, export).\n\n"
        f"Hyperparameters: `{json.dumps(hp.model_dump(exclude_defaults=False))}`\n\n"
        "| seed | ssgan accuracy | control accuracy | delta | seconds |\n|---|---|---|---|---|\n"
        f"{table}\n| mean | {mean_s:.4f} | {mean_c:.4f} | {mean_s - mean_c:+.4f} | max {worst:.1f} |\n\n"
        f"Bar: mean >= {BAR_ACCURACY:.0%}, >= {BAR_DELTA * 100:.0f} points over the control, each run "
        f"< {BAR_SECONDS:.0f} s: **{'PASS' if passed else 'FAIL'}**.\n"
    )
    threads = "" if args.threads == 2 else f" ({args.threads} thread{'s' if args.threads > 1 else ''})"
    write_section(f"ssgan digits{threads}", body)


if __name__ == "__main__":
    main()
