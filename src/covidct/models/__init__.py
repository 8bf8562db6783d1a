"""Network definitions and the weights format (safetensors + JSON model card)."""

from covidct.models.resnet import CompactResNet, CompactResNetEnsemble, ResNet50
from covidct.models.unet import UNet, UNetEnsemble, VGG16UNet

#: Architectures a model card may name, by class name.
ARCHITECTURES = {
    "UNet": UNet,
    "UNetEnsemble": UNetEnsemble,
    "VGG16UNet": VGG16UNet,
    "CompactResNet": CompactResNet,
    "CompactResNetEnsemble": CompactResNetEnsemble,
    "ResNet50": ResNet50,
}

__all__ = ["ARCHITECTURES", "CompactResNet", "CompactResNetEnsemble", "ResNet50", "UNet", "UNetEnsemble", "VGG16UNet"]
