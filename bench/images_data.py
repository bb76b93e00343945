"""Data, base models and the plain-PyTorch alternative of bench/ssgan_images.py (no downloads: scikit-learn's
digits and Debian's dataset-fashion-mnist, both on disk)."""

from __future__ import annotations

import gzip
import json
from functools import cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from ganft_core.augment import augment_policy
from ganft_core.data import Dataset, Layout
from ganft_core.models import registry
from ganft_core.models.export import export_program
from ganft_core.models.io import fit_head, load_model, meta_for, save_model

FASHION = Path("/usr/share/datasets/fashion-mnist")
TRANSFER_SIDE = 28


def _semi(y: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """y with all but `per_class` labels per class set to -1 (one RandomState(seed), classes in order)."""
    rng = np.random.RandomState(seed)
    keep = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per_class] for c in np.unique(y)])
    out = np.full(len(y), -1)
    out[keep] = y[keep]
    return out


def digits_images(seed: int) -> tuple[Dataset, Dataset]:
    """bench/ssgan_digits.py's split with x kept as N×1×8×8 images in [0, 1]."""
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).reshape(-1, 1, 8, 8)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, stratify=y, random_state=seed)
    classes, layout = [str(c) for c in range(10)], Layout("image", channels=1, height=8, width=8)
    return Dataset(x_tr, _semi(y_tr, 10, seed), classes, layout), Dataset(x_te, y_te, classes, layout)


def _upsample(x: np.ndarray) -> np.ndarray:
    t = torch.from_numpy(x).float().reshape(-1, 1, 8, 8)
    return F.interpolate(t, size=(TRANSFER_SIDE, TRANSFER_SIDE), mode="bilinear", align_corners=False).numpy()


def transfer_split(seed: int) -> tuple[Dataset, Dataset]:
    """Digits 5-9 as 28×28 images: train split with 10 labels per class, the test split as validation."""
    x, y = load_digits(return_X_y=True)
    new = y >= 5
    x, y = _upsample(x[new] / 16.0), y[new] - 5
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, stratify=y, random_state=seed)
    classes = [str(c) for c in range(5, 10)]
    layout = Layout("image", channels=1, height=TRANSFER_SIDE, width=TRANSFER_SIDE)
    return Dataset(x_tr, _semi(y_tr, 10, seed), classes, layout), Dataset(x_te, y_te, classes, layout)


@cache
def _pretrained() -> torch.nn.Module:
    """A batch-norm `convnet` trained on all of digits 0-4 at 28×28 (seed 0, 600 steps, shifts): the user's model."""
    torch.manual_seed(0)
    x, y = load_digits(return_X_y=True)
    old = y < 5
    xt, yt = torch.from_numpy(_upsample(x[old] / 16.0)), torch.from_numpy(y[old]).long()
    mean, std = float(xt.mean()), float(xt.std())
    net = registry.build("convnet", {"in_channels": 1, "num_classes": 5, "mean": [mean], "std": [std]})
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    for _ in range(600):
        i = torch.randint(len(xt), (64,))
        loss = F.cross_entropy(net(augment_policy(xt[i], translate=0.125, hflip=False, color=0.0)), yt[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def transfer_base(work: Path, fmt: str) -> Path:
    """The pretrained net as a base-model folder: a user's `.pt2` program, or registry weights."""
    folder = work / f"base-{fmt}"
    if (folder / "model.json").exists():
        return folder
    folder.mkdir(parents=True)
    net, names = _pretrained(), [str(c) for c in range(5)]
    layout = Layout("image", channels=1, height=TRANSFER_SIDE, width=TRANSFER_SIDE)
    if fmt == "program":
        export_program(net, torch.zeros(2, 1, TRANSFER_SIDE, TRANSFER_SIDE), folder / "model.pt2")
        (folder / "model.json").write_text(json.dumps({"format": "program", "class_names": names}))
    else:
        save_model(net, meta_for(net, class_names=names, input_layout=layout.to_dict()), folder)
    return folder


def plain_finetune(work: Path, fmt: str, data: Dataset, val: Dataset, seed: int, *, steps: int) -> float:
    """The obvious alternative: a plain PyTorch supervised fine-tune of the same net (new head, Adam 1e-4 on
    everything, batch 100 with the same random shifts as ssgan's labeled batches), accuracy on `val`."""
    torch.manual_seed(seed)
    net, _ = load_model(transfer_base(work, "weights"))
    fit_head(net, [str(c) for c in range(5)], data.classes)
    lab = data.y >= 0
    x, y = torch.from_numpy(data.x[lab]), torch.from_numpy(data.y[lab]).long()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    net.train()
    for _ in range(steps):
        i = torch.randint(len(x), (100,))
        loss = F.cross_entropy(net(augment_policy(x[i], translate=0.125, hflip=False, color=0.0)), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.inference_mode():
        pred = net(torch.from_numpy(val.x)).argmax(1).numpy()
    return float((pred == val.y).mean())


def _idx(name: str) -> np.ndarray:
    with gzip.open(FASHION / name) as f:
        raw = f.read()
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def fashion_split(seed: int, per_class: int = 100) -> tuple[Dataset, Dataset]:
    """Fashion-MNIST: 100 labels per class of the 60k training images (all of them unlabeled), test as validation."""
    if not FASHION.exists():
        raise SystemExit(f"{FASHION} is missing: apt-get install dataset-fashion-mnist")
    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    layout = Layout("image", channels=1, height=28, width=28)
    x_tr = _idx("train-images-idx3-ubyte.gz").reshape(-1, 1, 28, 28)
    y_tr = _idx("train-labels-idx1-ubyte.gz").astype(np.int64)
    x_te = _idx("t10k-images-idx3-ubyte.gz").reshape(-1, 1, 28, 28)
    y_te = _idx("t10k-labels-idx1-ubyte.gz").astype(np.int64)
    return (
        Dataset(x_tr / np.float32(255), _semi(y_tr, per_class, seed), classes, layout),
        Dataset(x_te / np.float32(255), y_te, classes, layout),
    )
