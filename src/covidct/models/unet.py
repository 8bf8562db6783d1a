"""2-D U-Nets for slice segmentation.

* :class:`UNet`: a compact U-Net sized for a 2-core CPU (0.5 M parameters by default).
* :class:`UNetEnsemble`: several :class:`UNet` trained from different seeds, their softmax averaged.
* :class:`VGG16UNet`: the published pipeline's U-Net with a VGG16 encoder. The encoder's
  parameters are named exactly as torchvision's ``vgg16().features`` (``features.0.weight`` ...),
  so a user who owns ImageNet VGG16 weights can start from them with
  :meth:`VGG16UNet.load_encoder`.

Both take (N, C, H, W) float input with H and W divisible by 16 and return (N, out_channels,
H, W) logits.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two 3x3 convolutions, each followed by batch norm and ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class UpBlock(nn.Module):
    """Upsample by 2 (transposed convolution), concatenate the skip, then a conv block."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        self.conv = conv_block(out_channels + skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([self.up(x), skip], dim=1))


class UNet(nn.Module):
    """Compact U-Net.

    Parameters
    ----------
    in_channels, out_channels : int
    features : sequence of int
        Channels per level, shallow to deep; each level halves the resolution.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, features: Sequence[int] = (8, 16, 32, 64, 128)) -> None:
        super().__init__()
        features = list(features)
        self.encoder = nn.ModuleList()
        channels = in_channels
        for f in features:
            self.encoder.append(conv_block(channels, f))
            channels = f
        self.decoder = nn.ModuleList(
            UpBlock(features[i], features[i - 1], features[i - 1]) for i in range(len(features) - 1, 0, -1)
        )
        self.head = nn.Conv2d(features[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(x)
            if i < len(self.encoder) - 1:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for up in self.decoder:
            x = up(x, skips.pop())
        return self.head(x)


class UNetEnsemble(nn.Module):
    """Several :class:`UNet` of one architecture trained from different seeds; their softmax
    outputs are averaged pixel by pixel.

    ``forward`` returns the log of the mean probability, so ``softmax(forward(x))`` is the mean
    of the members' probabilities and the ensemble drops in wherever a single U-Net with a
    softmax output did (as :class:`covidct.models.resnet.CompactResNetEnsemble` does for the
    classifier). Members are ``members.0``, ``members.1``, ... in the state dict.
    """

    def __init__(
        self, n_members: int = 2, in_channels: int = 1, out_channels: int = 3,
        features: Sequence[int] = (8, 16, 32, 64, 128),
    ) -> None:
        super().__init__()
        if out_channels < 2:
            raise ValueError("a softmax ensemble needs at least 2 output channels")
        self.members = nn.ModuleList(UNet(in_channels, out_channels, features) for _ in range(n_members))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Log mean class probability (N, out_channels, H, W)."""
        probs = torch.stack([torch.softmax(m(x).float(), dim=1) for m in self.members])
        return torch.log(probs.mean(dim=0).clamp_min(1e-12))


#: torchvision's VGG16 configuration ("D"): channels, "M" = max pool.
VGG16_CONFIG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
#: Indices in ``features`` whose outputs feed the decoder (the last ReLU before each pool).
VGG16_SKIPS = (3, 8, 15, 22, 29)


class VGG16UNet(nn.Module):
    """U-Net with a VGG16 encoder (torchvision parameter names), as in the published pipeline.

    Parameters
    ----------
    in_channels : int
        3 to use ImageNet weights as they are (grayscale is repeated to 3 channels); 1 trains
        the first convolution for a single channel.
    out_channels : int
    decoder_features : sequence of 5 int
        Decoder channels from the deepest level up.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 1, decoder_features: Sequence[int] = (256, 128, 64, 32, 16)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for v in VGG16_CONFIG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, int(v), 3, padding=1), nn.ReLU(inplace=True)]
                channels = int(v)
        self.in_channels = in_channels
        self.features = nn.Sequential(*layers)  # torchvision: vgg16().features
        skip_channels = (64, 128, 256, 512, 512)
        d = list(decoder_features)
        self.bridge = conv_block(512, d[0])
        self.decoder = nn.ModuleList(
            UpBlock(d[i - 1] if i else d[0], skip_channels[4 - i], d[i]) for i in range(5)
        )
        self.head = nn.Conv2d(d[-1], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1 and self.in_channels == 3:
            x = x.expand(-1, 3, -1, -1)
        skips = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in VGG16_SKIPS:
                skips.append(x)
        x = self.bridge(x)  # 1/32 resolution
        for up in self.decoder:
            x = up(x, skips.pop())
        return self.head(x)

    def load_encoder(self, path: str | os.PathLike[str]) -> list[str]:
        """Load VGG16 encoder weights (torchvision ``vgg16`` state dict, .pth or .safetensors).

        Keys may be ``features.N.weight`` or the same with any prefix; classifier keys are
        ignored. Returns the list of loaded keys. Raises ValueError when none match.
        """
        path = os.fspath(path)
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        own = self.features.state_dict()
        picked = {}
        for key, value in state.items():
            name = key[key.index("features.") + len("features."):] if "features." in key else None
            if name in own and own[name].shape == value.shape:
                picked[name] = value
        if not picked:
            raise ValueError(f"{path}: no VGG16 'features.*' tensors of matching shape found")
        self.features.load_state_dict(picked, strict=False)
        return [f"features.{k}" for k in picked]
