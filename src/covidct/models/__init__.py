"""Network definitions and the weights format (safetensors + JSON model card)."""

from covidct.models.unet import UNet, VGG16UNet

#: Architectures a model card may name, by class name.
ARCHITECTURES = {"UNet": UNet, "VGG16UNet": VGG16UNet}

__all__ = ["ARCHITECTURES", "UNet", "VGG16UNet"]
