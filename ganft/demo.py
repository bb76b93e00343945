"""`ganft demo`: semi-supervised GAN fine-tuning on scikit-learn's digits, end to end over HTTP.

Starts the embedded stack (or uses `--url` + `--key`), uploads the digits benchmark split
(10 labels per class, the rest of the training split unlabeled, 20% held out as the
validation set), runs an `ssgan` job while drawing a progress bar from its event stream,
downloads `model.pt2` (sha256 checked), loads it with plain `torch.export.load(...).module()`
and prints its held-out accuracy next to the supervised-only control's from metrics.json.
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

from ganft.client import Client
from ganft.embedded import EmbeddedStack, free_port
from ganft.settings import get_settings

LABELS_PER_CLASS = 10
TEST_FRACTION = 0.2

log = logging.getLogger(__name__)


def digits_split(
    seed: int, labels_per_class: int = LABELS_PER_CLASS
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(train, test) digits as npz-ready dicts: x is N×8×8 float32 in [0, 1] (pixel/16).

    The benchmark split: a stratified 80/20 train/test split with `random_state=seed`; in
    the training split `labels_per_class` labels per class (a RandomState(seed) permutation
    of each class's indices) stay, the rest is unlabeled (y = -1).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=TEST_FRACTION, stratify=y, random_state=seed)
    rng = np.random.RandomState(seed)
    y_semi = np.full_like(y_train, -1)
    for k in range(10):
        keep = rng.permutation(np.flatnonzero(y_train == k))[:labels_per_class]
        y_semi[keep] = k
    classes = np.array([str(k) for k in range(10)])
    return {"x": x_train, "y": y_semi, "classes": classes}, {"x": x_test, "y": y_test, "classes": classes}


def program_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of an exported classifier loaded with nothing but torch (N×8×8 -> N×1×8×8 input)."""
    import torch

    model = torch.export.load(str(path)).module()
    with torch.no_grad():
        logits = model(torch.from_numpy(x[:, None]).float())
    return float((logits.argmax(dim=1).numpy() == y).mean())


class _Bar:
    """A tqdm bar fed by the job's events: step/total, latest metrics as postfix."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=None, unit="step", dynamic_ncols=True, file=sys.stderr)

    def update(self, type_: str, data: dict[str, Any]) -> None:
        bar = self.bar
        if type_ in ("progress", "evaluation"):
            step, total = int(data.get("step", 0)), int(data.get("total_steps") or 0)
            if step < bar.n:
                bar.reset(total=total or None)  # a new phase (the supervised control) starts over
            elif total and bar.total != total:
                bar.total = total
            bar.update(step - bar.n)
            metrics = data.get("metrics") or {}
            if metrics:
                bar.set_postfix({k: f"{v:.3g}" for k, v in metrics.items() if isinstance(v, int | float)})
            if type_ == "evaluation":
                shown = " ".join(f"{k}={v:.3g}" for k, v in metrics.items() if isinstance(v, int | float))
                bar.write(f"evaluation at step {step}: {shown}")
        elif type_ == "status":
            bar.write(f"job {data.get('status')}" + (f": {data['error']['message']}" if data.get("error") else ""))
        elif type_ == "log" and data.get("message"):
            bar.write(str(data["message"]))

    def close(self) -> None:
        self.bar.close()


def run_job(api: Client, *, seed: int, steps: int | None, workdir: Path) -> int:
    """Upload the split, train, download and check the model; 0 on success."""
    train, test = digits_split(seed)
    np.savez(workdir / "digits-train.npz", **train)
    np.savez(workdir / "digits-test.npz", **test)
    train_ds = api.upload_dataset(workdir / "digits-train.npz", name="digits-train.npz")
    test_ds = api.upload_dataset(workdir / "digits-test.npz", name="digits-test.npz")
    spec: dict[str, Any] = {
        "method": "ssgan",
        "dataset_id": train_ds["id"],
        "validation_dataset_id": test_ds["id"],
        "seed": seed,
        "hyperparameters": {"steps": steps} if steps else {},
        "metadata": {"source": "ganft demo"},
    }
    job = api.create_job(spec)
    labeled = int((train["y"] >= 0).sum())
    print(f"job {job['id']}: ssgan on {len(train['y'])} digits ({labeled} labeled), {len(test['y'])} held out")  # noqa: T201
    bar = _Bar()
    try:
        for event in api.events(job["id"]):
            bar.update(event.type, event.data)
    finally:
        bar.close()
    job = api.get_job(job["id"])
    if job["status"] != "succeeded":
        error = job.get("error") or {}
        print(f"job {job['status']}: {error.get('code')}: {error.get('message')}")  # noqa: T201
        return 1
    model_path = api.download_artifact(job["id"], "model.pt2", workdir / "model.pt2")
    metrics_path = api.download_artifact(job["id"], "metrics.json", workdir / "metrics.json")
    metrics = json.loads(metrics_path.read_text())
    accuracy = program_accuracy(model_path, test["x"], test["y"])
    control = control_accuracy(metrics)
    print(f"held-out accuracy of the downloaded model.pt2: {accuracy:.4f}")  # noqa: T201
    if control is not None:
        print(f"supervised-only control (same labels, steps, seed): {control:.4f}")  # noqa: T201
    print(f"output model {job['output_model_id']}; files in {workdir}")  # noqa: T201
    return 0


def control_accuracy(metrics: dict[str, Any]) -> float | None:
    """The supervised-only control's accuracy in metrics.json."""
    control = metrics.get("control")
    if isinstance(control, dict) and isinstance(control.get("accuracy"), int | float):
        return float(control["accuracy"])
    return None


def run_demo(args: argparse.Namespace) -> int:
    seed = int(getattr(args, "seed", 1) or 1)
    steps = getattr(args, "steps", None)
    url, key = getattr(args, "url", None), getattr(args, "key", None)
    settings = get_settings()
    workdir = Path(tempfile.mkdtemp(prefix="ganft-demo-", dir=settings.data_dir.resolve() if not url else None))
    if url:
        if not key:
            print("--url needs --key (an API key of that server)")  # noqa: T201
            return 2
        with Client(url, key, timeout=120.0) as api:
            return run_job(api, seed=seed, steps=steps, workdir=workdir)
    settings.data_dir.resolve().mkdir(parents=True, exist_ok=True)
    stack = EmbeddedStack(settings, port=free_port(), logs=settings.data_dir.resolve() / "logs")
    print(f"starting the embedded stack in {settings.data_dir.resolve()} ...")  # noqa: T201
    with stack, Client(stack.url, stack.key, timeout=120.0) as api:
        return run_job(api, seed=seed, steps=steps, workdir=workdir)
