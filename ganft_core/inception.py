"""Inception-v3 feature extractor for FID/KID (Szegedy et al. 2016; Heusel et al. 2017).

The network is written out here (no torchvision) with the module names of torchvision's
`Inception3`, so that both common weight files load as they are:
- `pt_inception-2015-12-05-*.pth` (pytorch-fid's port of the TensorFlow FID graph: 1008
  classes, no aux head). That graph differs from torchvision's in three places, which this
  module reproduces when it sees those weights: average pools in the A/C/E blocks ignore the
  zero padding (TF `avg_pool` semantics), and the last E block (`Mixed_7c`) max-pools its
  pool branch.
- torchvision's `inception_v3_google-*.pth` (1000 classes, with `AuxLogits`), standard pools.
Features are the 2048-d global average pool before the classifier ("pool3"). The `fc` and
`AuxLogits` weights are not needed and are ignored. Input images are N×C×H×W in [0, 1]
(1-channel images are repeated to RGB), resized bilinearly to 299×299 and mapped to
[-1, 1], which is what both weight sets expect (torchvision's `transform_input` reduces to
the same 2x - 1 for [0, 1] input).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from ganft_core.errors import ModelError

Variant = Literal["fid", "torchvision"]
FEATURE_DIM = 2048


class BasicConv2d(nn.Module):
    """conv (no bias) + batch norm (eps 1e-3, as in TF) + ReLU."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: int | tuple[int, int],
        stride: int = 1,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x: torch.Tensor, tf_pool: bool) -> torch.Tensor:
    # TF's 3×3 same-padded average pool divides by the number of real (non-pad) pixels.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=not tf_pool)


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int, tf_pool: bool) -> None:
        super().__init__()
        self.tf_pool = tf_pool
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool(x, self.tf_pool))
        return torch.cat([self.branch1x1(x), b5, b3, bp], 1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    """Factorised 7×7 convolutions at 17×17."""

    def __init__(self, cin: int, c7: int, tf_pool: bool) -> None:
        super().__init__()
        self.tf_pool = tf_pool
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for conv in (
            self.branch7x7dbl_1,
            self.branch7x7dbl_2,
            self.branch7x7dbl_3,
            self.branch7x7dbl_4,
            self.branch7x7dbl_5,
        ):
            bd = conv(bd)
        bp = self.branch_pool(_avg_pool(x, self.tf_pool))
        return torch.cat([self.branch1x1(x), b7, bd, bp], 1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    """Expanded filter bank at 8×8. `pool`: "avg", "avg_tf" (ignore padding) or "max" (FID's Mixed_7c)."""

    def __init__(self, cin: int, pool: Literal["avg", "avg_tf", "max"]) -> None:
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        if self.pool == "max":
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pooled = _avg_pool(x, self.pool == "avg_tf")
        return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], 1)


class InceptionV3Features(nn.Module):
    """Inception-v3 up to the 2048-d pool3 features. `forward(x: N×C×H×W in [0,1]) -> N×2048`."""

    def __init__(self, variant: Variant = "fid") -> None:
        super().__init__()
        self.variant = variant
        tf = variant == "fid"
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, 32, tf)
        self.Mixed_5c = InceptionA(256, 64, tf)
        self.Mixed_5d = InceptionA(288, 64, tf)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128, tf)
        self.Mixed_6c = InceptionC(768, 160, tf)
        self.Mixed_6d = InceptionC(768, 160, tf)
        self.Mixed_6e = InceptionC(768, 192, tf)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, "avg_tf" if tf else "avg")
        self.Mixed_7c = InceptionE(2048, "max" if tf else "avg")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2.0 * x - 1.0
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # N×64×147×147
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # N×64×73×73
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))  # N×192×71×71
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # N×192×35×35
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))  # N×288×35×35
        x = self.Mixed_6a(x)  # N×768×17×17
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))  # N×768×17×17
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))  # N×2048×8×8
        return x.mean(dim=(2, 3))  # N×2048


def load_inception(path: Path) -> InceptionV3Features:
    """Load Inception weights (a `.pth` state dict, read with weights_only=True, or `.safetensors`).

    The variant is told by the classifier size: 1008 classes is the TF FID graph, else torchvision's.
    """
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or non-tensor file: the user's configuration, not our bug
        raise ModelError(f"cannot read Inception weights {path.name}: {exc}") from exc
    if not isinstance(state, dict) or "fc.weight" not in state:
        raise ModelError(f"{path.name} is not an Inception-v3 state dict (no fc.weight)")
    variant: Variant = "fid" if state["fc.weight"].shape[0] == 1008 else "torchvision"
    net = InceptionV3Features(variant)
    wanted = net.state_dict()
    features = {k: v for k, v in state.items() if k in wanted}
    missing = sorted(set(wanted) - set(features) - {k for k in wanted if k.endswith("num_batches_tracked")})
    if missing:
        raise ModelError(f"{path.name} lacks Inception-v3 weights, e.g. {missing[:3]}")
    bad = [k for k, v in features.items() if v.shape != wanted[k].shape]
    if bad:
        raise ModelError(f"{path.name}: wrong shapes for {bad[:3]}")
    net.load_state_dict(features, strict=False)
    return net.eval().requires_grad_(False)
