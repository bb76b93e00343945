"""`ganft demo`: semi-supervised GAN fine-tuning on scikit-learn's digits, end to end over HTTP.

Starts the embedded stack (or uses `--url` + `--key`), uploads the digits benchmark split
(10 labels per class, the rest of the training split unlabeled, 20% held out as the
validation set), runs an `ssgan` job while drawing a progress bar from its event stream
(`ganft.cli_watch`, as `ganft jobs watch` does), prints the same summary as `jobs watch` (the GAN
against the supervised-only control, the verdict, the output model), then downloads `model.pt2`
(sha256 checked), loads it with plain `torch.export.load(...).module()` and checks its held-out
accuracy against what metrics.json says.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ganft.cli_watch import ProgressView, follow, summary_lines
from ganft.client import Client
from ganft.embedded import EmbeddedStack, free_port, say
from ganft.settings import get_settings

LABELS_PER_CLASS = 10
TEST_FRACTION = 0.2

log = logging.getLogger(__name__)


def digits_split(
    seed: int, labels_per_class: int = LABELS_PER_CLASS
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(train, test) digits as npz-ready dicts: x is N×64 float32 features in [0, 1] (pixel/16).

    The benchmark split: a stratified 80/20 train/test split with `random_state=seed`; in
    the training split `labels_per_class` labels per class (a RandomState(seed) permutation
    of each class's indices) stay, the rest is unlabeled (y = -1).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=TEST_FRACTION, stratify=y, random_state=seed)
    rng = np.random.RandomState(seed)
    y_semi = np.full_like(y_train, -1)
    for k in range(10):
        keep = rng.permutation(np.flatnonzero(y_train == k))[:labels_per_class]
        y_semi[keep] = k
    classes = np.array([str(k) for k in range(10)])
    return {"x": x_train, "y": y_semi, "classes": classes}, {"x": x_test, "y": y_test, "classes": classes}


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An npz dataset file: `x`, `y` (-1 = unlabeled) and `classes`."""
    np.savez(path, x=arrays["x"], y=arrays["y"], classes=arrays["classes"])


def program_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of an exported classifier loaded with nothing but torch (input: N×F float32 features)."""
    import torch

    model = torch.export.load(str(path)).module()
    with torch.no_grad():
        logits = model(torch.from_numpy(x).float())
    return float((logits.argmax(dim=1).numpy() == y).mean())


def short_run(steps: int) -> dict[str, int]:
    """Hyperparameters for `--steps N`: report and evaluate often enough to watch a short run."""
    return {"steps": steps, "log_every": min(50, max(1, steps // 40)), "eval_every": min(500, max(1, steps // 4))}


def run_job(api: Client, *, seed: int, steps: int | None, workdir: Path) -> int:
    """Upload the split, train, download and check the model; 0 on success."""
    train, test = digits_split(seed)
    save_npz(workdir / "digits-train.npz", train)
    save_npz(workdir / "digits-test.npz", test)
    train_ds = api.upload_dataset(workdir / "digits-train.npz", name="digits-train.npz")
    test_ds = api.upload_dataset(workdir / "digits-test.npz", name="digits-test.npz")
    spec: dict[str, Any] = {
        "method": "ssgan",
        "dataset_id": train_ds["id"],
        "validation_dataset_id": test_ds["id"],
        "seed": seed,
        "hyperparameters": short_run(steps) if steps else {},
        "metadata": {"source": "ganft demo"},
    }
    job = api.create_job(spec)
    labeled = int((train["y"] >= 0).sum())
    say(f"{job.id}: ssgan, {len(train['y'])} digits ({labeled} labeled), {len(test['y'])} held out")
    with ProgressView(sys.stderr) as view:
        job = follow(api, job.id, view)
    summary = summary_lines(job)  # the same summary as `ganft jobs watch`
    if job.status != "succeeded":
        for line in summary:
            say(line)
        return 1
    model_path = api.download_artifact(job.id, "model.pt2", workdir / "model.pt2")
    metrics_path = api.download_artifact(job.id, "metrics.json", workdir / "metrics.json")
    metrics = json.loads(metrics_path.read_text())
    accuracy = program_accuracy(model_path, test["x"], test["y"])
    reported, _ = accuracies(metrics)
    for line in summary:
        say(line)
    shown = f"{reported:.4f}" if reported is not None else "n/a"
    say("checked: model.pt2 (sha256 verified) loads with plain torch.export.load")
    say(f"         and scores {accuracy:.4f} on the {len(test['y'])} held-out digits (metrics.json: {shown})")
    say(f"files in {workdir}")
    return 0


def accuracies(metrics: dict[str, Any]) -> tuple[float | None, float | None]:
    """(ssgan, supervised-only control) validation accuracy from an ssgan job's metrics.json."""

    def accuracy(part: Any) -> float | None:
        value = part.get("accuracy") if isinstance(part, dict) else None
        return float(value) if isinstance(value, int | float) else None

    return accuracy(metrics.get("ssgan")), accuracy(metrics.get("control"))


def run_demo(args: argparse.Namespace) -> int:
    """`ganft demo [--steps N] [--seed S] [--url U --key K]`; the exit status."""
    seed = getattr(args, "seed", None)
    seed = 1 if seed is None else int(seed)
    steps = getattr(args, "steps", None)
    url, key = getattr(args, "url", None), getattr(args, "key", None)
    if url:
        if not key:
            log.error("--url needs --key (an API key of that server)")
            return 2
        with Client(url, key, timeout=120.0) as api:
            return run_job(api, seed=seed, steps=steps, workdir=Path(tempfile.mkdtemp(prefix="ganft-demo-")))
    settings = get_settings()
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="demo-", dir=data_dir))
    logs = data_dir / "logs"
    stack = EmbeddedStack(settings, port=free_port(), logs=logs)
    sys.stderr.write(f"starting the embedded stack in {data_dir} (logs in {logs.name}/)\n")
    with stack, Client(stack.url, stack.key, timeout=120.0) as api:
        return run_job(api, seed=seed, steps=steps, workdir=workdir)
