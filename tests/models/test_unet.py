import torch

from covidct.models import UNet, VGG16UNet


def test_unet_keeps_the_input_size():
    model = UNet(features=(4, 8, 16)).eval()
    with torch.inference_mode():
        assert model(torch.zeros(2, 1, 64, 48)).shape == (2, 1, 64, 48)


def test_vgg16_unet_has_torchvision_encoder_names_and_loads_them(tmp_path):
    model = VGG16UNet(decoder_features=(16, 16, 8, 8, 8)).eval()
    names = [k for k in model.state_dict() if k.startswith("features.")]
    assert names[:4] == ["features.0.weight", "features.0.bias", "features.2.weight", "features.2.bias"]
    assert "features.28.weight" in names and len(names) == 26  # 13 convolutions
    # A torchvision-style state dict (features + classifier), as a user would have it.
    fake = {k: torch.full_like(v, 0.5) for k, v in model.state_dict().items() if k.startswith("features.")}
    fake["classifier.0.weight"] = torch.zeros(4096, 25088)
    torch.save(fake, tmp_path / "vgg16.pth")
    loaded = model.load_encoder(tmp_path / "vgg16.pth")
    assert len(loaded) == 26
    assert torch.all(model.features[0].weight == 0.5)
    with torch.inference_mode():
        assert model(torch.zeros(1, 1, 64, 64)).shape == (1, 1, 64, 64)
