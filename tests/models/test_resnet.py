import pytest
import torch

from covidct.models import CompactResNet, ResNet50


@pytest.mark.parametrize("model", [CompactResNet(), ResNet50()], ids=["compact", "resnet50"])
def test_gradcam_layers_are_28_and_14_at_224(model):
    shapes = {}
    model.layer2.register_forward_hook(lambda m, i, o: shapes.__setitem__("layer2", o.shape[-2:]))
    model.layer3.register_forward_hook(lambda m, i, o: shapes.__setitem__("layer3", o.shape[-2:]))
    model.eval()
    with torch.inference_mode():
        logits = model(torch.rand(2, model.in_channels, 224, 224))
    assert logits.shape == (2, 3)
    assert tuple(shapes["layer2"]) == (28, 28) and tuple(shapes["layer3"]) == (14, 14)


def test_resnet50_names_match_torchvision_and_load_a_backbone(tmp_path):
    from safetensors.torch import save_file

    model = ResNet50()
    names = set(model.state_dict())
    # torchvision's ResNet-50 layout (spot checks of each kind of tensor).
    for name in ("conv1.weight", "bn1.running_mean", "layer1.0.downsample.0.weight",
                 "layer3.5.conv3.weight", "layer4.2.bn3.weight", "layer4.0.downsample.1.running_var"):
        assert name in names
    assert sum(p.numel() for n, p in model.named_parameters() if not n.startswith("fc.")) == 23_508_032
    # A torchvision checkpoint: backbone tensors plus its own 1000-class fc.
    donor = ResNet50()
    torch.nn.init.constant_(donor.layer2[0].conv1.weight, 0.5)
    state = {k: v for k, v in donor.state_dict().items() if not k.startswith("fc.")}
    state |= {"fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)}
    save_file(state, str(tmp_path / "resnet50.safetensors"))
    loaded = model.load_backbone(tmp_path / "resnet50.safetensors")
    assert "layer2.0.conv1.weight" in loaded and not any(k.startswith("fc.") for k in loaded)
    assert torch.all(model.layer2[0].conv1.weight == 0.5)
    save_file({"conv1.weight": torch.zeros(64, 3, 7, 7)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not torchvision ResNet-50"):
        model.load_backbone(tmp_path / "other.safetensors")


def test_ensemble_softmax_is_the_mean_of_its_members():
    from covidct.models.resnet import CompactResNetEnsemble

    torch.manual_seed(0)
    model = CompactResNetEnsemble(n_members=2, widths=(8, 8, 8, 8), blocks=(1, 1, 1, 1)).eval()
    x = torch.rand(3, 1, 64, 64)
    with torch.no_grad():
        expected = torch.stack([torch.softmax(m(x), 1) for m in model.members]).mean(0)
        torch.testing.assert_close(torch.softmax(model(x), 1), expected, rtol=1e-5, atol=1e-6)
    assert model.in_channels == 1 and len(model.members) == 2


def test_lesion_head_reads_layer2_and_layer3_at_28x28():
    from covidct.models.resnet import LesionHead

    net = CompactResNet(widths=(4, 8, 16, 32), blocks=(1, 1, 1, 1))
    head = LesionHead(net)
    assert head(torch.zeros(2, 1, 224, 224)).shape == (2, 1, 28, 28)
    assert head.read2.in_channels == 8 and head.read3.in_channels == 16
    assert "encoder.layer3.0.conv1.weight" in head.state_dict()  # the classifier's own names under encoder.
