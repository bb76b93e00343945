"""`resnet18`: ResNet-18 (He et al. 2016) whose state_dict keys and shapes match torchvision's.

Users can bring torchvision `resnet18` weights as safetensors: `conv1`, `bn1`, `layer1.0.conv1` ...
`fc` are named exactly as there. torchvision weights expect ImageNet normalisation, so their
`model.json` should say `"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]`.
`small_input=True` swaps the 7×7/2 stem and max-pool for a 3×3/1 stem (CIFAR-style, for 32-64 px):
the key names stay, only `conv1.weight` becomes 64×C×3×3, so torchvision's stem no longer fits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ganft_core.models.arguments import require_all_positive
from ganft_core.models.layers import normalization_buffers


@dataclass(frozen=True)
class ResNet18Args:
    num_classes: int  # K: logits per example (torchvision's ImageNet head: 1000)
    in_channels: int = 3  # C of the N×C×H×W input (1 grey, 3 RGB)
    small_input: bool = False  # 3×3 stride-1 stem without max-pool, for 32-64 px images
    mean: tuple[float, ...] = ()  # per-channel input normalisation; () = 0
    std: tuple[float, ...] = ()  # () = 1

    def __post_init__(self) -> None:
        require_all_positive("num_classes", (self.num_classes,))
        require_all_positive("in_channels", (self.in_channels,))


class BasicBlock(nn.Module):
    """Two 3×3 convs with a residual connection; torchvision's `BasicBlock` names."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """forward(x: N×C×H×W in [0,1]) -> N×K logits; features(x) -> N×512 (avgpool + flatten)."""

    norm_mean: torch.Tensor  # (1, C, 1, 1) or (1, F)
    norm_std: torch.Tensor

    def __init__(self, args: ResNet18Args) -> None:
        super().__init__()
        mean, std = normalization_buffers(args.mean, args.std, args.in_channels, image=True)
        # Non-persistent so the state_dict keys stay exactly torchvision's.
        self.register_buffer("norm_mean", mean, persistent=False)
        self.register_buffer("norm_std", std, persistent=False)
        if args.small_input:
            self.conv1 = nn.Conv2d(args.in_channels, 64, 3, stride=1, padding=1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(args.in_channels, 64, 7, stride=2, padding=3, bias=False)  # H/2
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)  # H/4
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(BasicBlock(64, 64, 1), BasicBlock(64, 64, 1))
        self.layer2 = nn.Sequential(BasicBlock(64, 128, 2), BasicBlock(128, 128, 1))  # /2
        self.layer3 = nn.Sequential(BasicBlock(128, 256, 2), BasicBlock(256, 256, 1))  # /2
        self.layer4 = nn.Sequential(BasicBlock(256, 512, 2), BasicBlock(512, 512, 1))  # /2
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, args.num_classes)  # the head, named as in torchvision
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def head(self) -> nn.Linear:
        return self.fc

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.norm_mean) / self.norm_std
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # N×512×H/32×W/32 (H/8 small)
        return torch.flatten(self.avgpool(x), 1)  # N×512

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))  # N×K

    def blocks(self) -> list[nn.Module]:
        """Stem, then layer1..layer4, lowest first (for freezing)."""
        return [nn.ModuleList([self.conv1, self.bn1]), self.layer1, self.layer2, self.layer3, self.layer4]

    def replace_head(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.fc.in_features, num_classes)
