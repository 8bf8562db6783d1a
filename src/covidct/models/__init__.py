"""Network definitions and the weights format (safetensors + JSON model card)."""

from covidct.models.resnet import CompactResNet, ResNet50
from covidct.models.unet import UNet, VGG16UNet

#: Architectures a model card may name, by class name.
ARCHITECTURES = {"UNet": UNet, "VGG16UNet": VGG16UNet, "CompactResNet": CompactResNet, "ResNet50": ResNet50}

__all__ = ["ARCHITECTURES", "CompactResNet", "ResNet50", "UNet", "VGG16UNet"]
