import json

import pytest
import torch

from covidct.models import UNet
from covidct.models import weights


def _card():
    return {"name": "tiny", "architecture": "UNet", "architecture_args": {"features": [4, 8]},
            "input": {"domain": "test", "size": 32}}


def test_round_trip_gives_the_same_outputs(tmp_path):
    model = UNet(features=(4, 8)).eval()
    card_path = weights.save(model, _card(), tmp_path / "tiny")
    loaded = weights.load(card_path, expect_input={"domain": "test"})
    x = torch.rand(1, 1, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(x), model(x))
    card = json.loads(card_path.read_text())
    assert card["sha256"] == loaded.sha256 == weights.sha256_of(tmp_path / "tiny.safetensors")
    assert card["n_parameters"] == sum(p.numel() for p in model.parameters())


def test_half_precision_storage_loads_as_float32(tmp_path):
    card_path = weights.save(UNet(features=(4, 8)), _card(), tmp_path / "tiny", half=True)
    loaded = weights.load(card_path)
    assert loaded.card["dtype"] == "float16"
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())


def test_damaged_weights_and_wrong_input_spec_are_refused(tmp_path):
    card_path = weights.save(UNet(features=(4, 8)), _card(), tmp_path / "tiny")
    with pytest.raises(ValueError, match="input domain"):
        weights.load(card_path, expect_input={"domain": "other"})
    blob = tmp_path / "tiny.safetensors"
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        weights.load(card_path)
    with pytest.raises(FileNotFoundError):
        weights.load(tmp_path / "missing.json")


def test_batchnorm_folding_keeps_the_function():
    import torch

    from covidct.models import CompactResNet, UNet
    from covidct.models.weights import fuse_batchnorm

    torch.manual_seed(0)
    for net, shape in ((UNet(1, 3, (4, 8, 16)), (2, 1, 32, 32)), (CompactResNet(num_classes=3, in_channels=1), (2, 1, 64, 64))):
        for m in net.modules():  # non-trivial statistics, as after training
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.2, 0.2)
        net.eval()
        x = torch.rand(*shape)
        with torch.no_grad():
            before = net(x)
            fuse_batchnorm(net)
            after = net(x)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
        assert torch.allclose(before, after, atol=1e-4, rtol=1e-4)


def test_bf16_setting_follows_the_environment(monkeypatch):
    from covidct.models.weights import bf16_inference

    monkeypatch.setenv("COVIDCT_BF16", "0")
    assert bf16_inference() is False
    monkeypatch.setenv("COVIDCT_BF16", "1")
    assert bf16_inference() is True
