"""Slice classifiers: ResNet-50 (the published pipeline) and a compact ResNet for CPUs.

Both are built here (no torchvision dependency) with torchvision's ResNet parameter names (``conv1``, ``bn1``, ``layer1`` ... ``layer4``,
``fc``), so torchvision ImageNet weights load into ResNet-50 by name (:meth:`ResNet50.load_backbone`)
and Grad-CAM finds the same layers in either network: at 224 x 224 input, ``layer2`` gives
28 x 28 activations and ``layer3`` 14 x 14.

The head replaces torchvision's single ``fc`` by the published dense stack:
BatchNorm - Dense 256 - ReLU - Dropout - BatchNorm - Dense 128 - ReLU - Dense (classes).
"""

from __future__ import annotations

import os
from typing import Sequence

import torch
from torch import nn


def _downsample(in_channels: int, out_channels: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34 block)."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_channels, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    """1x1 - 3x3 (strided, as torchvision's ResNet v1.5) - 1x1 with a residual connection."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_channels, planes * 4, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet(nn.Module):
    """ResNet with torchvision's layout: stem (7x7 stride 2, max-pool), four stages, global
    average pooling and the dense head.

    Parameters
    ----------
    block : BasicBlock or Bottleneck
    blocks : blocks per stage
    widths : planes per stage (output channels are ``width * block.expansion``)
    num_classes, in_channels : int
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        blocks: Sequence[int],
        widths: Sequence[int],
        num_classes: int,
        in_channels: int,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        channels = widths[0]
        stages = []
        for i, (width, n) in enumerate(zip(widths, blocks)):
            layers = []
            for j in range(n):
                layers.append(block(channels, width, stride=2 if (i > 0 and j == 0) else 1))
                channels = width * block.expansion
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = dense_head(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and the four stages: (N, C, H/32, W/32)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N, num_classes)."""
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


def dense_head(in_features: int, num_classes: int, dropout: float = 0.5) -> nn.Sequential:
    """The published classifier head on pooled features; returns logits."""
    return nn.Sequential(
        nn.BatchNorm1d(in_features),
        nn.Linear(in_features, 256),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.BatchNorm1d(256),
        nn.Linear(256, 128),
        nn.ReLU(inplace=True),
        nn.Linear(128, num_classes),
    )


class ResNet50(ResNet):
    """ResNet-50 (torchvision names) with the dense head; ``in_channels`` 3 takes grayscale
    repeated to three channels, as ImageNet weights expect."""

    def __init__(self, num_classes: int = 3, in_channels: int = 3) -> None:
        super().__init__(Bottleneck, (3, 4, 6, 3), (64, 128, 256, 512), num_classes, in_channels)

    def load_backbone(self, path: str | os.PathLike[str]) -> list[str]:
        """Load torchvision ResNet-50 weights (``.pth`` state dict or ``.safetensors``) into every
        layer but the head. Returns the names of the tensors loaded."""
        path = os.fspath(path)
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        own = self.state_dict()
        backbone = {k: v for k, v in state.items() if not k.startswith("fc.") and k in own}
        missing = [k for k in own if not k.startswith("fc.") and k not in backbone]
        if missing:
            raise ValueError(f"{path}: not torchvision ResNet-50 weights (missing {missing[:3]} ...)")
        self.load_state_dict(backbone, strict=False)
        return sorted(backbone)


class CompactResNet(ResNet):
    """A narrow ResNet of BasicBlocks with the same stages and strides as ResNet-50.

    Parameters
    ----------
    num_classes, in_channels : int
    widths : channels of ``layer1`` ... ``layer4``
    blocks : blocks per stage
    """

    def __init__(
        self,
        num_classes: int = 3,
        in_channels: int = 1,
        widths: Sequence[int] = (24, 48, 96, 192),
        blocks: Sequence[int] = (2, 2, 2, 2),
    ) -> None:
        super().__init__(BasicBlock, tuple(blocks), tuple(widths), num_classes, in_channels)


class CompactResNetEnsemble(nn.Module):
    """Several :class:`CompactResNet` trained from different seeds; their softmax outputs are
    averaged. Trained from scratch on a few hundred images, single networks differ a lot from
    seed to seed (README, "Slice classifier"); the average is steadier and better than the
    typical member, at ``n_members`` times the (small) inference cost.

    ``forward`` returns the log of the mean probability, so ``softmax(forward(x))`` is the mean
    of the members' probabilities and the ensemble drops in wherever a single network did.
    """

    def __init__(
        self,
        n_members: int = 3,
        num_classes: int = 3,
        in_channels: int = 1,
        widths: Sequence[int] = (24, 48, 96, 192),
        blocks: Sequence[int] = (2, 2, 2, 2),
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.members = nn.ModuleList(
            CompactResNet(num_classes, in_channels, widths, blocks) for _ in range(n_members)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Log mean class probability (N, num_classes)."""
        probs = torch.stack([torch.softmax(m(x).float(), dim=1) for m in self.members])
        return torch.log(probs.mean(dim=0).clamp_min(1e-12))


def stage_channels(stage: nn.Sequential) -> int:
    """Output channels of a ResNet stage (its last block's last batch norm)."""
    return [m for m in stage[-1].modules() if isinstance(m, nn.BatchNorm2d)][-1].num_features


class LesionHead(nn.Module):
    """Infection logits from a ResNet's ``layer2`` and ``layer3`` (the Grad-CAM layers).

    Used to pretrain a classifier's encoder on pixel labels: a 1x1 convolution per layer (a
    linear read-out, so that "infection" must be a direction in those layers' channels, which is
    what Grad-CAM weighs), the ``layer3`` logits upsampled by 2 and added to ``layer2``'s.
    ``encoder`` keeps its own parameter names (``encoder.layer2...``); ``layer4`` and ``fc`` are
    not used.

    Returns (N, 1, H/8, W/8) logits: 28 x 28 at 224 input.
    """

    def __init__(self, encoder: ResNet) -> None:
        super().__init__()
        self.encoder = encoder
        self.in_channels = encoder.in_channels
        self.read2 = nn.Conv2d(stage_channels(encoder.layer2), 1, 1)
        self.read3 = nn.Conv2d(stage_channels(encoder.layer3), 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.encoder
        a2 = e.layer2(e.layer1(e.maxpool(e.relu(e.bn1(e.conv1(x))))))
        a3 = e.layer3(a2)
        return self.read2(a2) + nn.functional.interpolate(self.read3(a3), size=a2.shape[-2:], mode="nearest")
