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
