"""FID and KID in the feature space of an evaluator network.

FID (Heusel et al. 2017): ||mu1 - mu2||² + Tr(S1 + S2 - 2 (S1 S2)^½) between Gaussians fitted
to the two feature sets. Tr((S1 S2)^½) = Tr((S1^½ S2 S1^½)^½), and S1^½ S2 S1^½ is symmetric
PSD, so two symmetric eigendecompositions (float64, torch only: no scipy) give it exactly.

KID (Bińkowski et al. 2018, "Demystifying MMD GANs", sec. 4): the unbiased MMD² estimate with
the cubic polynomial kernel k(x, y) = (x·y / d + 1)³, averaged over random subsets of equal
size m (as in the reference implementations: 100 subsets of up to 1000). Unlike FID it is
unbiased in the number of samples, which matters for few-shot sets of a few hundred images.

Evaluators (what "feature space" means, recorded in metrics.json as `evaluator`):
- Inception-v3 pool3 features (2048-d) from local weights (`ganft_core.inception`);
- else a classifier model folder (`model.json` + safetensors): its `features()`, i.e. the
  penultimate layer. FIDs in different feature spaces are not comparable with each other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ganft_core.errors import ModelError

KID_SUBSETS = 100
KID_MAX_SUBSET = 1000
KID_MAX_FEATURES = 10_000  # feature vectors of a set kept for KID (FID's stats always use every image)
_KID_FULL_KERNEL = 5000  # up to this many samples per set, kernels are computed once for all subsets


@dataclass
class FeatureStats:
    """Features of one image set: kept whole for KID, summarised (mean, covariance) for FID."""

    features: torch.Tensor  # N×D float64, on CPU
    mu: torch.Tensor  # D
    sigma: torch.Tensor  # D×D

    @classmethod
    def of(cls, features: torch.Tensor) -> FeatureStats:
        f = features.detach().to("cpu", torch.float64)
        if f.shape[0] < 2:
            raise ValueError("need at least 2 feature vectors for a covariance")
        return cls(features=f, mu=f.mean(0), sigma=torch.cov(f.T).reshape(f.shape[1], f.shape[1]))

    @classmethod
    def of_batches(cls, ev: Evaluator, feed: Any, *, keep: int = KID_MAX_FEATURES, seed: int = 0) -> FeatureStats:
        """The stats of every image of `feed` (a `ganft_core.data.feed.Feed`), read `ev.batch_size` at a time.

        Up to `keep` images, every feature vector is kept and the stats equal `of(features)` exactly. Past
        that, mean and covariance come from running float64 sums (about the batch mean of the first batch,
        for precision) over all images, and KID keeps a seeded random sample of `keep` feature vectors:
        its estimate is unbiased in the sample size, and the memory stays `keep`×D whatever the set's size.
        """
        n = len(feed)
        if n <= keep:
            return cls.of(torch.cat([ev.features(batch) for batch in feed.iter_batches(ev.batch_size)]))
        kept_at = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:keep].sort().values
        kept: list[torch.Tensor] = []
        shift: torch.Tensor | None = None
        total: torch.Tensor | None = None
        outer: torch.Tensor | None = None
        start = 0
        for batch in feed.iter_batches(ev.batch_size):
            f = ev.features(batch)  # b×D float64 on CPU
            if shift is None:
                shift = f.mean(0)
                total = torch.zeros_like(shift)
                outer = torch.zeros(f.shape[1], f.shape[1], dtype=torch.float64)
            assert total is not None and outer is not None
            centred = f - shift
            total += centred.sum(0)
            outer += centred.T @ centred
            lo, hi = torch.searchsorted(kept_at, torch.tensor([start, start + len(f)]))
            kept.append(f[kept_at[lo:hi] - start])
            start += len(f)
        assert shift is not None and total is not None and outer is not None
        mean_c = total / n
        sigma = (outer - n * torch.outer(mean_c, mean_c)) / (n - 1)
        return cls(features=torch.cat(kept), mu=shift + mean_c, sigma=sigma)


def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric PSD matrix by eigendecomposition (tiny negative eigenvalues clipped)."""
    vals, vecs = torch.linalg.eigh((m + m.T) / 2)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """FID between N(mu1, sigma1) and N(mu2, sigma2), computed in float64."""
    mu1, mu2 = mu1.double(), mu2.double()
    sigma1, sigma2 = sigma1.double(), sigma2.double()
    root1 = _sqrt_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    fid = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt
    return max(float(fid), 0.0)  # rounding can leave -1e-12 for identical sets


def kernel_inception_distance(
    f1: torch.Tensor, f2: torch.Tensor, *, subsets: int = KID_SUBSETS, max_subset: int = KID_MAX_SUBSET, seed: int = 0
) -> float:
    """Unbiased MMD² with kernel (x·y/d + 1)³, averaged over `subsets` random subsets of m = min(n1, n2, max_subset)."""
    x_all, y_all = f1.double().cpu(), f2.double().cpu()
    n1, n2, d = x_all.shape[0], y_all.shape[0], x_all.shape[1]
    m = min(n1, n2, max_subset)
    if m < 2:
        raise ValueError("KID needs at least 2 samples per set")

    def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a @ b.T / d + 1) ** 3

    gen = torch.Generator().manual_seed(seed)
    picks = [(torch.randperm(n1, generator=gen)[:m], torch.randperm(n2, generator=gen)[:m]) for _ in range(subsets)]
    if n1 * n1 + n2 * n2 + n1 * n2 <= 3 * _KID_FULL_KERNEL**2:
        # Kernels between all pairs fit in memory (the usual case: a few thousand samples): compute
        # them once, and every subset's sums as quadratic forms v^T K w with 0/1 indicator rows v, w.
        kxx, kyy, kxy = kernel(x_all, x_all), kernel(y_all, y_all), kernel(x_all, y_all)
        vx = torch.zeros(subsets, n1, dtype=torch.float64)
        vy = torch.zeros(subsets, n2, dtype=torch.float64)
        for s, (i, j) in enumerate(picks):
            vx[s, i], vy[s, j] = 1.0, 1.0
        # unbiased: the diagonals k(x_i, x_i) are left out of the within-set means
        within = ((vx @ kxx) * vx).sum(1) - vx @ kxx.diagonal() + ((vy @ kyy) * vy).sum(1) - vy @ kyy.diagonal()
        cross = ((vx @ kxy) * vy).sum(1)
        return float((within / (m * (m - 1)) - 2 * cross / (m * m)).mean())
    total = 0.0
    for i, j in picks:
        x, y = x_all[i], y_all[j]
        kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
        within = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        total += float(within - 2 * kxy.mean())
    return total / subsets


class Evaluator:
    """A frozen feature extractor: `features(images N×C×H×W in [0,1]) -> N×D` on CPU float64.

    `name` says which feature space it is (it goes into metrics.json). Images are adapted to
    the network's input: 1 channel repeated to 3 where it wants RGB, bilinear resize where its
    input size differs (Inception always resizes to 299 itself).
    """

    def __init__(
        self,
        net: nn.Module,
        name: str,
        *,
        channels: int | None = None,
        size: tuple[int, int] | None = None,
        batch_size: int = 256,
    ) -> None:
        self.net = net.eval().requires_grad_(False)
        self.name = name
        self.channels = channels
        self.size = size
        self.batch_size = batch_size

    def to(self, device: torch.device | str) -> Evaluator:
        self.net.to(device)
        return self

    def _adapt(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels is not None and x.shape[1] != self.channels:
            if x.shape[1] == 4 and self.channels == 3:
                x = x[:, :3]  # RGBA: the evaluator sees the colour, not the alpha
            elif x.shape[1] == 1:
                x = x.expand(-1, self.channels, -1, -1)
            elif self.channels == 1:
                x = x.mean(dim=1, keepdim=True)  # the evaluator was trained on grey images
            else:
                raise ModelError(f"evaluator takes {self.channels}-channel images, the data has {x.shape[1]}")
        if self.size is not None and tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        return x

    @torch.inference_mode()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        device = next(self.net.parameters()).device
        out = []
        for start in range(0, images.shape[0], self.batch_size):
            batch = self._adapt(images[start : start + self.batch_size].to(device, torch.float32))
            out.append(self._forward(batch).float().cpu())
        return torch.cat(out).double()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        features = getattr(self.net, "features", None)  # classifiers: penultimate features; Inception: itself
        return (features(x) if callable(features) else self.net(x)).flatten(1)


def load_evaluator(*, evaluator: Path | None, inception_weights: Path | None) -> Evaluator | None:
    """Inception weights when given, else the classifier model folder, else None (no FID/KID).

    The folder is a registry classifier (`model.json` + `model.safetensors`) or a user's exported
    program (`model.pt2` + `{"format": "program", "class_names": [...]}`); its `features()` are used.
    """
    if inception_weights is not None:
        from ganft_core.inception import FEATURE_DIM, load_inception

        inception = load_inception(Path(inception_weights))
        return Evaluator(
            inception,
            f"inception-v3 ({inception.variant} weights {Path(inception_weights).name}), pool3 {FEATURE_DIM}-d",
            channels=3,
            batch_size=64,
        )
    if evaluator is None:
        return None
    from ganft_core.models.io import load_model

    folder = Path(evaluator)
    config = _read_json(folder / "model.json")
    if config.get("format") == "program":
        from ganft_core.models.program import load_user_program

        names = config.get("class_names")
        if not isinstance(names, list) or not names:
            raise ModelError("model.json of a program must list its class_names", field="evaluator")
        program = load_user_program(folder / "model.pt2", [str(n) for n in names])
        shape = program.input_shape
        if len(shape) != 4:
            raise ModelError("the evaluator program must take N×C×H×W images", field="evaluator")
        fixed = all(isinstance(v, int) for v in shape[1:])
        return Evaluator(
            program.eval(),
            f"classifier program features ({folder.name})",
            channels=shape[1],
            size=(shape[2], shape[3]) if fixed else None,  # type: ignore[arg-type]  # ints when fixed
        )
    net, meta = load_model(folder)
    if meta.role != "classifier" or not callable(getattr(net, "features", None)):
        raise ModelError(
            f"the evaluator must be an image classifier with features(), got a {meta.role}", field="evaluator"
        )
    layout: dict[str, Any] = meta.input_layout
    if layout.get("kind", "image") != "image":
        raise ModelError("the evaluator must take images, it takes feature vectors", field="evaluator")
    # a model.json without an input layout: feed the images as they are (the net must cope)
    channels = int(layout["channels"]) if "channels" in layout else None
    size = (int(layout["height"]), int(layout["width"])) if "height" in layout and "width" in layout else None
    return Evaluator(net, f"classifier {meta.architecture} features ({folder.name})", channels=channels, size=size)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"the evaluator folder has no {path.name}", field="evaluator") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path.name} of the evaluator is not valid JSON: {exc}", field="evaluator") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path.name} of the evaluator must be a JSON object", field="evaluator")
    return data
