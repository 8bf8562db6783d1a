import numpy as np
import pytest
import torch

from covidct import classify, localize
from covidct.lungs import LungMasks
from covidct.models import CompactResNet, CompactResNetEnsemble


def _tiny(cls, **kw):
    torch.manual_seed(0)
    return cls(widths=(8, 8, 8, 8), blocks=(1, 1, 1, 1), **kw).eval()


@pytest.mark.parametrize("model", [_tiny(CompactResNet), _tiny(CompactResNetEnsemble, n_members=2)], ids=["single", "ensemble"])
def test_gradcam_is_in_unit_range_with_the_input_size(model):
    x = torch.rand(3, 1, 224, 224)
    cam = localize.gradcam(model, x)
    assert cam.shape == (3, 224, 224) and cam.dtype == np.float32
    assert cam.min() >= 0.0 and cam.max() <= 1.0 + 1e-6
    assert not any(p.grad is not None for p in model.parameters())  # weights untouched


def test_uncrop_inverts_the_lung_box_crop():
    box = (-10, 90, 20, 120)  # 100 x 100 box reaching above the image
    maps = np.ones((1, 224, 224), np.float32)
    out = localize.uncrop(maps, box, (80, 160))
    assert out.shape == (1, 80, 160)
    assert out[0, :, 20:120].min() == pytest.approx(1.0) and out[0, :, :20].max() == 0 and out[0, :, 120:].max() == 0


def test_localize_maps_only_positive_lung_slices(small_phantom):
    """Structure of the maps with the shipped classifier: zero on negative slices and outside
    the lungs, non-empty on a positive one. (That they cover the lesions is asserted on whole
    analyses in tests/test_pipeline.py.)"""
    vol, lungs_true = small_phantom.volume, small_phantom.lungs
    lungs = LungMasks(labels=lungs_true, volume_ml={})
    model = classify.load_classifier()
    probs = np.tile([[0.99, 0.005, 0.005]], (vol.shape[0], 1)).astype(np.float32)
    positive = int(np.argmax(small_phantom.infection.reshape(vol.shape[0], -1).sum(1)))
    probs[positive] = [0.01, 0.98, 0.01]
    maps = localize.localize(vol, lungs, probs, model)
    assert maps.shape == vol.shape and maps.dtype == np.float32
    others = np.delete(np.arange(vol.shape[0]), positive)
    assert maps[others].max() == 0.0
    assert maps[positive].max() > 0.0 and maps[positive][lungs_true[positive] == 0].max() == 0.0
    assert maps.max() <= 1.0
