import numpy as np
import pytest
import torch

from covidct import classify, infection, load
from covidct.lungs import LungMasks


@pytest.fixture(scope="module")
def model():
    return infection.load_infection_model()


def test_shipped_model_matches_the_input_domain(model):
    assert model.card["input"]["domain"] == infection.DOMAIN
    assert model.card["architecture_args"]["out_channels"] == 3


def test_segmentation_is_typed_and_stays_inside_the_lungs(small_phantom, model):
    masks = LungMasks(labels=small_phantom.lungs, volume_ml={})
    out = infection.segment_infection(small_phantom.volume, masks, model)
    assert out.shape == small_phantom.volume.shape and out.dtype == np.uint8
    assert set(np.unique(out)) <= {0, 1, 2}
    assert not out[small_phantom.lungs == 0].any()


def test_outside_the_lungs_only_on_request_and_otherwise_the_same(small_phantom, model):
    carved = np.where(small_phantom.infection > 0, 0, small_phantom.lungs)  # masks that left the lesions out
    masks = LungMasks(labels=carved, volume_ml={})
    inside = infection.segment_infection(small_phantom.volume, masks, model)
    whole = infection.segment_infection(small_phantom.volume, masks, model, inside_lungs=False)
    np.testing.assert_array_equal(inside, whole * (carved > 0))
    assert (whole[(small_phantom.infection > 0) & (carved == 0)] > 0).mean() > 0.5  # found where the masks are not
    y0, y1, x0, x1 = classify.lung_box(masks.footprint)  # the crop the model saw, and no further
    beyond = np.ones(whole.shape[1:], bool)
    beyond[max(y0, 0) : y1, max(x0, 0) : x1] = False
    assert not whole[:, beyond].any()


def test_no_lung_no_infection(small_phantom, model):
    empty = LungMasks(labels=np.zeros_like(small_phantom.lungs), volume_ml={})
    assert not infection.segment_infection(small_phantom.volume, empty, model).any()


def test_labels_go_back_to_the_box_they_came_from():
    prob = torch.zeros(1, 3, infection.INPUT_SIZE, infection.INPUT_SIZE)
    prob[:, 0] = 1.0
    prob[0, :, :128, :128] = torch.tensor([0.0, 0.0, 1.0])[:, None, None]  # top-left quarter: consolidation
    box = (10, 50, 20, 60)  # 40 x 40 box inside a 64 x 80 slice
    out = infection.labels_in_slices(prob, box, (64, 80))
    assert out.shape == (1, 64, 80)
    assert (out[0, 10:30, 20:40] == 2).all() and out[0, 30:50, 40:60].max() == 0
    assert out.sum() == 2 * 20 * 20  # nothing outside the box


def test_box_beyond_the_image_is_clipped():
    prob = torch.zeros(1, 3, infection.INPUT_SIZE, infection.INPUT_SIZE)
    prob[:, 1] = 1.0  # ground-glass everywhere
    out = infection.labels_in_slices(prob, (-10, 30, -10, 30), (20, 20))
    assert (out == 1).all()


def test_inputs_are_the_classifier_domain_and_the_medseg_window_at_256(small_phantom):
    box = classify.lung_box(small_phantom.lungs)
    slices = small_phantom.volume.array[:2]
    x = infection.model_input(slices, True, box)
    assert x.shape == (2, infection.CHANNELS, 256, 256) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert torch.equal(x[:, :1], classify.model_input(slices, True, box, size=256))
    # channel 1 has no CLAHE: a uniform HU slice stays uniform, a step stays a step
    step = np.full((1, 64, 64), -1100.0, dtype=np.float32)
    step[:, :, 32:] = -475.0  # the middle of the medseg window
    out = infection.model_input(step, True, (0, 64, 0, 64))[0, 1]
    assert float(out[:, :120].max()) == 0.0 and float(out[:, 136:].min()) == 1.0


def test_intensity_channel_of_8bit_pictures_is_their_min_max():
    picture = np.zeros((1, 50, 50), dtype=np.uint8)
    picture[:, 10:40, 10:40] = 100
    picture[:, 20:30, 20:30] = 200
    out = infection.model_input(picture, False, (0, 50, 0, 50))[0, 1]
    assert float(out.max()) == 1.0 and float(out.min()) == 0.0
    assert abs(float(out[128, 90]) - 0.5) < 1e-6  # 100 of 0-200, inside the 100 square only


def _phantom_segmentation(scale: float, model, lesions=True):
    from covidct import lungs, phantom

    chosen = phantom.scaled_lesions(scale)
    ph = phantom.make_phantom(shape=(48, 128, 128), spacing_mm=(5.0, 2.8125, 2.8125),
                              lesions=chosen if lesions else (), seed=0)
    found = infection.segment_infection(ph.volume, lungs.segment_lungs(ph.volume), model)
    return ph, found


def test_on_the_phantom_lesions_are_found_where_they_are_and_grow_with_them(model):
    volumes = []
    for scale in (0.7, 1.0, 1.4):
        ph, found = _phantom_segmentation(scale, model)
        assert found.any()
        precision = ((found > 0) & (ph.infection > 0)).sum() / (found > 0).sum()
        assert precision >= 0.95, (scale, precision)  # what is segmented lies in the inserted lesions
        volumes.append(float((found > 0).sum() * ph.volume.voxel_volume_ml))
    assert volumes[0] < volumes[1] < volumes[2], volumes


def test_on_the_healthy_phantom_almost_nothing_is_segmented(model):
    ph, found = _phantom_segmentation(1.0, model, lesions=False)
    assert (found > 0).sum() * ph.volume.voxel_volume_ml < 2.0  # mL, against 40-216 mL with lesions


def test_on_the_shared_studies_infection_is_near_zero_only_for_the_normal_one(shared_data, model):
    """Issue 10: clearly non-zero for COVID-19 and CAP, under 5 % of the COVID study's for Normal."""
    volumes = {}
    for study in ("COVID/P001", "CAP/cap001", "Normal/normal001"):
        volume = load(shared_data / "covid_ct_md" / study)
        found = infection.segment_infection(volume, model=model)
        volumes[study] = float((found > 0).sum() * volume.voxel_volume_ml)
    assert volumes["COVID/P001"] > 50 and volumes["CAP/cap001"] > 50, volumes
    assert volumes["Normal/normal001"] < 0.05 * volumes["COVID/P001"], volumes


def test_test_time_flip_makes_the_prediction_mirror_with_the_input(model):
    x = torch.rand(2, infection.CHANNELS, 256, 256, generator=torch.Generator().manual_seed(0))
    plain = infection.predict_probabilities(model.model, x)
    flipped = infection.predict_probabilities(model.model, x, flip=True)
    assert torch.allclose(flipped, infection.predict_probabilities(model.model, x.flip(-1), flip=True).flip(-1))
    assert not torch.allclose(plain, infection.predict_probabilities(model.model, x.flip(-1)).flip(-1))
    assert torch.allclose(flipped.sum(dim=1), torch.ones(2, 256, 256), atol=1e-5)


def test_a_picture_is_segmented_whole_and_not_cut_by_the_lung_mask(small_phantom, model, tmp_path):
    from PIL import Image

    from covidct.train import infection as train_infection

    hu = small_phantom.volume.array[10]  # a slice through lesions
    picture = (np.clip((hu + 1100) / 1250, 0, 1) * 255).astype(np.uint8)  # an 8-bit lung-window slice
    Image.fromarray(picture).save(tmp_path / "slice.png")
    volume = load(tmp_path / "slice.png")
    no_lungs = LungMasks(labels=np.zeros(volume.shape, np.uint8), volume_ml={})
    out = infection.segment_infection(volume, no_lungs, model)
    expected = train_infection.predict_labels(model.model, volume.array, infection.picture_box(picture.shape), flip=True)
    assert np.array_equal(out, expected)
    found, lesion = out[0] > 0, small_phantom.infection[10] > 0
    assert found.sum() > 0.5 * lesion.sum() and (found & lesion).sum() >= 0.8 * found.sum()  # no lung mask given
    assert infection.picture_box((40, 60)) == (-10, 50, 0, 60)  # the whole picture, made square
