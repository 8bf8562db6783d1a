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


def test_unet_ensemble_softmax_is_the_mean_of_its_members():
    from covidct.models import UNetEnsemble

    torch.manual_seed(0)
    model = UNetEnsemble(n_members=2, in_channels=2, out_channels=3, features=(4, 8, 16)).eval()
    x = torch.rand(2, 2, 32, 32)
    with torch.no_grad():
        expected = torch.stack([torch.softmax(m(x), 1) for m in model.members]).mean(0)
        torch.testing.assert_close(torch.softmax(model(x), 1), expected, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(torch.softmax(model.members[0](x), 1), expected)  # the members differ


def test_unet_ensemble_survives_save_and_load(tmp_path):
    from covidct.models import UNetEnsemble
    from covidct.models import weights as model_weights

    torch.manual_seed(1)
    args = {"n_members": 2, "in_channels": 2, "out_channels": 3, "features": [4, 8, 16]}
    model = UNetEnsemble(**args).eval()
    card = {"name": "e", "architecture": "UNetEnsemble", "architecture_args": args, "input": {}}
    loaded = model_weights.load(model_weights.save(model, card, tmp_path / "e")).model  # batch norm fused
    x = torch.rand(1, 2, 32, 32)
    torch.testing.assert_close(model_weights.predict_softmax(loaded, x, 1, bf16=False),
                               model_weights.predict_softmax(model, x, 1, bf16=False), rtol=1e-4, atol=1e-5)
