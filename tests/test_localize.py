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


def test_map_scores_score_slices_with_infection_and_count_empty_maps():
    from covidct import case

    lung = np.zeros((4, 10, 10), np.uint8)
    lung[:, 1:9, 1:9] = 1  # 64 lung pixels
    infection = np.zeros_like(lung)
    infection[:3, 2:4, 2:4] = 1  # 4 pixels on the first three slices, none on the last
    maps = np.zeros((4, 10, 10), np.float32)
    maps[0][lung[0] > 0] = 0.5
    maps[0][infection[0] > 0] = 1.0  # peak inside: twice the rest of the lungs
    maps[1, 7, 7] = 1.0  # peak outside the infection
    maps[3] = 1.0  # a slice without infection is not scored
    maps[:, 0, 0] = 9.0  # outside the lungs: ignored
    per = localize.map_scores(maps, lung, infection)
    assert per["pointing"] == [1.0, 0.0] and per["empty_maps"] == [1.0]  # slice 2's map is empty
    assert per["enrichment"][0] == pytest.approx(2.0) and per["enrichment"][1] == pytest.approx(0.0)
    assert per["chance"] == [pytest.approx(4 / 64)] * 2
    hot = 64 if case.MAP_THRESHOLD <= 0.5 else 4  # pixels of slice 0's map at or above the threshold
    assert per["dice"][0] == pytest.approx(2 * 4 / (hot + 4))


def test_picture_maps_are_in_the_pictures_pixels_and_zero_outside_the_lungs():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 120, 100), dtype=np.uint8)
    lung = np.zeros((2, 120, 100), np.uint8)
    lung[:, 30:90, 20:80] = 1
    maps = localize.picture_maps(_tiny(CompactResNet), images, lung, lung_masked=True)
    assert maps.shape == (2, 120, 100) and maps.dtype == np.float32
    assert maps[lung == 0].max() == 0 and maps.max() <= 1.0 + 1e-6
