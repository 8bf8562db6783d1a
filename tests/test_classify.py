import numpy as np
import pytest

from covidct import classify


def test_lung_box_is_square_with_margin_and_falls_back_to_whole_image():
    mask = np.zeros((3, 100, 200), np.uint8)
    mask[1, 40:60, 50:150] = 1  # 20 x 100 lung region
    y0, y1, x0, x1 = classify.lung_box(mask, margin=0.1)
    assert y1 - y0 == x1 - x0 == 120  # larger side 100 + 2 x 10
    assert (x0, x1) == (40, 160) and (y0 + y1) / 2 == 50
    assert classify.lung_box(np.zeros((100, 200))) == (-50, 150, 0, 200)


def test_crop_pads_with_slice_minimum():
    slices = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)
    out = classify.crop(slices, (-1, 3, 2, 6))
    assert out.shape == (2, 4, 4)
    assert out[0, 0].tolist() == [0, 0, 0, 0]  # row above the image
    assert out[1, 1, :2].tolist() == [18, 19] and out[1, 1, 2:].tolist() == [16, 16]


def test_model_input_domain(small_phantom):
    vol = small_phantom.volume
    box = classify.lung_box(small_phantom.lungs)
    x = classify.model_input(vol.array[10:12], vol.is_hu, box)
    assert x.shape == (2, 1, 224, 224)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    # Same pixels as 8-bit lung-window image give nearly the same input (one domain).
    from covidct.windowing import apply_window

    as_8bit = np.round(apply_window(vol.array[10:12], "lung") * 255)
    x8 = classify.model_input(as_8bit, False, box)
    assert float((x - x8).abs().mean()) < 0.02


@pytest.fixture(scope="module")
def p001(shared_data):
    import covidct
    from covidct.lungs import segment_lungs
    from covidct.train.data import read_slice_labels

    root = shared_data / "covid_ct_md" / "COVID"
    volume = covidct.load(root / "P001")
    labels = read_slice_labels(root / "P001_slice_labels.csv")
    infected = np.array([labels[round(z, 1)] for z in volume.meta.slice_z_mm], bool)
    return volume, segment_lungs(volume), infected


def test_classify_slices_separates_infected_slices(p001):
    """Real HU input through the whole inference path. The shipped classifier never trained on
    P001 (it is held out; see its model card), so this is a held-out figure: measured 0.930,
    floor 0.85 (the issue's target for unseen COVID-CT-MD studies)."""
    from covidct.train.metrics import roc_auc

    volume, masks, infected = p001
    probs = classify.classify_slices(volume, masks)
    assert probs.shape == (volume.shape[0], 3)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    lung = masks.lung_slices
    assert roc_auc(1 - probs[lung, 0], infected[lung]) >= 0.85
    # Infected slices of the COVID-19 study lean to COVID-19 rather than CAP.
    assert probs[infected, 1].mean() > probs[infected, 2].mean()


def test_lung_input_mask_dilates_like_a_4_connected_binary_dilation():
    from scipy import ndimage as ndi

    rng = np.random.default_rng(0)
    mask = np.zeros((3, 300, 300), np.uint8)
    mask[:, 60:240, 40:140] = rng.random((3, 180, 100)) > 0.7
    box = classify.lung_box(mask)
    got = classify.lung_input_mask(mask, box, dilate_px=4)[:, 0].numpy() > 0
    base = classify.lung_input_mask(mask, box, dilate_px=0)[:, 0].numpy() > 0
    structure = ndi.generate_binary_structure(3, 1)
    structure[0] = structure[2] = False
    assert np.array_equal(got, ndi.binary_dilation(base, structure, iterations=4))
    assert got.sum() > base.sum()
