"""Lung segmentation: exact post-processing on the phantom, the shipped model on real data."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage as ndi

from covidct import lungs
from covidct.io import load
from covidct.train.metrics import dice


def test_clean_lungs_labels_right_and_left_in_patient_coordinates(small_phantom):
    labels = lungs.clean_lungs(small_phantom.lungs > 0, small_phantom.volume.spacing_mm)
    np.testing.assert_array_equal(labels, small_phantom.lungs)


def test_clean_lungs_drops_specks_and_fills_holes(small_phantom):
    mask = small_phantom.lungs > 0
    noisy = mask.copy()
    noisy[0:2, 0:3, 0:3] = True  # a speck outside the body
    k = mask.shape[0] // 2
    ys, xs = np.argwhere(small_phantom.lungs[k] == 1).mean(0).round().astype(int)
    noisy[k, ys - 1 : ys + 2, xs - 1 : xs + 2] = False  # a hole inside the right lung
    np.testing.assert_array_equal(lungs.clean_lungs(noisy, small_phantom.volume.spacing_mm), small_phantom.lungs)


def test_touching_lungs_are_split_into_right_and_left(small_phantom):
    truth = small_phantom.lungs
    merged = truth > 0
    k = truth.shape[0] // 2
    rows = np.flatnonzero(merged[k].any(1))
    bridge_row = rows[len(rows) // 2]
    cols = np.flatnonzero(merged[k, bridge_row])
    merged[k - 2 : k + 3, bridge_row - 1 : bridge_row + 2, cols.min() : cols.max() + 1] = True
    assert ndi.label(merged)[1] == 1
    labels = lungs.clean_lungs(merged, small_phantom.volume.spacing_mm)
    assert dice(labels == 1, truth == 1) > 0.97 and dice(labels == 2, truth == 2) > 0.97


def test_lungs_outside_the_body_and_large_enclosed_holes_are_dropped(small_phantom):
    ph = small_phantom
    body = lungs.body_mask(ph.volume.array)
    assert body[ph.lungs > 0].all() and not body[:, 0, 0].any()
    junk = ph.lungs > 0
    junk[:, -4:, 10:50] = True  # "lung" in the air below the patient, larger than a lung
    labels = lungs.clean_lungs(junk, ph.volume.spacing_mm, body)
    np.testing.assert_array_equal(labels, ph.lungs)
    # A hole larger than 10 cm² (an organ cut across) stays open; a vessel-sized one is filled.
    ring = np.zeros((1, 64, 64), bool)
    ring[0, 8:56, 8:56] = True
    ring[0, 20:44, 20:44] = False  # 24 x 24 px = 576 mm² at 1.3 mm -> filled if small enough
    assert lungs.fill_small_holes(ring, max_area_px=1000)[0, 30, 30]
    assert not lungs.fill_small_holes(ring, max_area_px=500)[0, 30, 30]


def test_aerated_lung_the_model_mostly_covers_is_added_but_not_the_trachea(small_phantom):
    ph = small_phantom
    hu = ph.volume.array
    body = lungs.body_mask(hu)
    k = ph.volume.shape[0] - 3  # a slice with both lungs and the trachea
    assert (hu[k][ph.lungs[k] == 0] < -900).any()
    partial = ph.lungs > 0
    partial[:, :, : hu.shape[2] // 4] = False  # the model missed the lateral part of the right lung
    added = lungs.add_aerated_lung(partial, hu, body)
    lung_air = (ph.lungs > 0) & (hu < lungs.AERATED_HU)
    assert added[lung_air].mean() > 0.99
    trachea = (ph.lungs == 0) & (hu < -900) & body
    assert trachea[k].any() and not added[trachea].any()


def _right_lung_cut_off(ph):
    """The phantom with an airless band across its right lung: the lateral third becomes an
    aerated region of its own, and lung masks that miss it and the band."""
    hu = ph.volume.array.copy()
    right = ph.lungs == 1
    cols = np.flatnonzero(right.any(axis=(0, 1)))
    x = np.arange(hu.shape[2])[None, None, :]
    wall_col = cols.min() + (cols.max() - cols.min()) // 3
    band = right & (x >= wall_col) & (x <= wall_col + 1)
    lateral = right & (x < wall_col)
    hu[band] = 40  # soft tissue
    volume = replace(ph.volume, array=hu)
    body = lungs.body_mask(hu)
    labels = lungs.clean_lungs((ph.lungs > 0) & ~band & ~lateral, volume.spacing_mm, body)
    masks = lungs.LungMasks(labels=labels, volume_ml=lungs.lung_volumes_ml(labels, volume.spacing_mm))
    return volume, masks, band, lateral


def test_infected_aerated_lung_the_masks_left_out_is_put_back(small_phantom):
    volume, masks, band, lateral = _right_lung_cut_off(small_phantom)
    assert (masks.labels[lateral | band] == 0).all()
    lesions = np.zeros(volume.shape, np.uint8)
    lesions[band] = 2  # consolidation across the band ...
    next_to_band = lateral & ~np.roll(lateral, 2, axis=2)  # ... and ground-glass in the 2 columns beside it
    lesions[next_to_band] = 1
    grown = lungs.add_infected_lung(masks, lesions, volume)
    assert (grown.labels[band | lateral] == lungs.RIGHT).all()  # the band, and the aerated rest behind it
    np.testing.assert_array_equal(grown.labels == lungs.LEFT, masks.labels == lungs.LEFT)
    assert grown.volume_ml["right"] > masks.volume_ml["right"]
    assert grown.volume_ml["left"] == masks.volume_ml["left"]


def test_airless_or_detached_lesions_and_pictures_leave_the_lungs_as_they_are(small_phantom):
    volume, masks, band, lateral = _right_lung_cut_off(small_phantom)
    airless = np.where(band, 2, 0).astype(np.uint8)  # touches the lungs, but no air: fluid or soft tissue
    assert lungs.add_infected_lung(masks, airless, volume) is masks
    detached = np.where(lateral, 1, 0).astype(np.uint8)  # aerated, but the band keeps it off the lungs
    assert lungs.add_infected_lung(masks, detached, volume) is masks
    both = airless | detached
    picture = replace(volume, is_hu=False)
    assert lungs.add_infected_lung(masks, both, picture) is masks
    assert lungs.add_infected_lung(masks, both, volume) is not masks


def test_airless_fat_is_dropped_but_not_consolidation_or_lung():
    hu = np.full((2, 40, 60), 40.0, np.float32)  # soft tissue
    mask = np.zeros(hu.shape, bool)
    hu[0, 5:15, 5:15], mask[0, 5:15, 5:15] = -100.0, True  # fat the model took for lung
    hu[0, 5:15, 30:40], mask[0, 5:15, 30:40] = 30.0, True  # a fully consolidated cross-section
    hu[1, 5:25, 5:25], mask[1, 5:25, 5:25] = -850.0, True  # lung ...
    hu[1, 5:25, 25:28], mask[1, 5:25, 25:28] = -100.0, True  # ... with a thin rim of fat (stays with it)
    hu[1, 30:38, 40:50], mask[1, 30:38, 40:50] = -90.0, True  # fat with a little air: still fat
    hu[1, 30:31, 40:50] = -700.0  # 12.5 % aerated
    out = lungs.drop_fat_regions(mask, hu, (1.0, 1.0, 1.0))
    assert not out[0, 5:15, 5:15].any() and out[0, 5:15, 30:40].all()
    assert out[1, 5:25, 5:28].all() and not out[1, 30:38, 40:50].any()
    assert not out[~mask].any()


def test_thick_fat_bulging_out_of_the_lung_goes_but_a_fat_dense_lesion_inside_stays():
    """1 mm pixels: 6 mm thick, outline more than half on the mask's edge."""
    hu = np.full((1, 60, 80), 40.0, np.float32)
    mask = np.zeros(hu.shape, bool)
    hu[0, 5:45, 5:45], mask[0, 5:45, 5:45] = -850.0, True  # lung
    hu[0, 10:40, 45:57], mask[0, 10:40, 45:57] = -100.0, True  # mediastinal fat joined to it
    hu[0, 20:30, 20:30] = -100.0  # a partial-volumed dense lesion inside the lung
    hu[0, 33:45, 10:22] = -110.0  # ... and one against the pleura (one side on the edge)
    out = lungs.drop_fat_regions(mask, hu, (2.0, 1.0, 1.0))
    assert out[0, 5:45, 5:45].all()
    assert not out[0, 13:37, 48:54].any() and out[0, 10:40, 45:57].mean() < 0.1  # the opening rounds corners
    assert not out[~mask].any()
    thin = lungs.drop_fat_regions(mask, hu, (2.0, 0.4, 0.4))  # the same 12 px are 4.8 mm: a rim, stays
    assert thin[0, 10:40, 45:57].all()


def test_fat_beyond_the_lungs_is_not_lung_on_a_real_study(shared_data):
    """normal001 reaches into the neck and abdomen, where the 2-D model takes fat for lung."""
    volume = load(shared_data / "covid_ct_md" / "Normal" / "normal001")
    result = lungs.segment_lungs(volume)
    values = volume.array[result.labels > 0]
    for k in result.lung_slices:
        region = volume.array[k][result.labels[k] > 0]
        assert (region < lungs.AERATED_HU).mean() > 0.05 or not (-190 <= np.median(region) <= -30), k
    assert 3400 < result.volume_ml["total"] < 3600  # 3675 mL with the fat
    assert np.median(values) < -800


def test_volumes_count_voxels_times_spacing():
    labels = np.zeros((2, 4, 4), np.uint8)
    labels[0, :2] = 1
    labels[1] = 2
    v = lungs.lung_volumes_ml(labels, (2.0, 0.5, 0.5))
    assert v == pytest.approx({"right": 8 * 0.5 / 1000, "left": 16 * 0.5 / 1000, "total": 24 * 0.5 / 1000})


def test_model_input_maps_hu_and_8bit_into_one_domain(small_phantom):
    hu = lungs.model_input(small_phantom.volume.array[10:12], is_hu=True)
    u8 = lungs.model_input(np.random.default_rng(0).integers(0, 256, (3, 100, 140)), is_hu=False)
    assert hu.shape == (2, 1, 256, 256) and u8.shape == (3, 1, 256, 256)
    for x in (hu, u8):
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


def test_shipped_model_segments_the_phantom(small_phantom):
    result = lungs.segment_lungs(small_phantom.volume)
    truth = small_phantom.lungs
    assert dice(result.labels == 1, truth == 1) > 0.9
    assert dice(result.labels == 2, truth == 2) > 0.9
    expected = lungs.lung_volumes_ml(truth, small_phantom.volume.spacing_mm)["total"]
    assert result.volume_ml["total"] == pytest.approx(expected, rel=0.1)
    assert result.model["name"] == "lungs" and len(result.model["sha256"]) == 64


def test_picture_lung_labels_are_what_segment_lungs_gives_a_2d_picture(small_phantom, tmp_path):
    from PIL import Image

    from covidct.windowing import apply_window

    picture = (apply_window(small_phantom.volume.array[12], "lung") * 255).astype(np.uint8)
    Image.fromarray(picture).save(tmp_path / "slice.png")
    volume = load(tmp_path / "slice.png")
    model = lungs.load_lung_model()
    labels = lungs.picture_lung_labels(model.model, volume.array)
    assert labels.shape == (1, 64, 64) and labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1, 2}
    assert np.array_equal(labels, lungs.segment_lungs(volume, model).labels)


@pytest.mark.parametrize("study", ["COVID/P001", "CAP/cap001", "Normal/normal001"])
def test_shipped_model_on_real_hu_studies(shared_data, study):
    volume = load(shared_data / "covid_ct_md" / study)
    result = lungs.segment_lungs(volume)
    v = result.volume_ml
    assert 2500 < v["total"] < 8000, v
    assert 0.35 < v["right"] / v["total"] < 0.65, v  # both lungs, right usually the larger
    assert np.median(volume.array[result.labels > 0]) < -500  # lung, not body wall
    # The right lung lies on the image left (patient right).
    cols_r = np.argwhere(result.labels == 1)[:, 2].mean()
    cols_l = np.argwhere(result.labels == 2)[:, 2].mean()
    assert cols_r < cols_l


@pytest.mark.parametrize("study", ["CAP/cap001", "Normal/normal001"])
def test_infected_lung_put_back_on_real_studies(shared_data, study):
    from covidct.infection import segment_infection

    volume = load(shared_data / "covid_ct_md" / study)
    masks = lungs.segment_lungs(volume)
    grown = lungs.add_infected_lung(masks, segment_infection(volume, masks, inside_lungs=False), volume)
    if study.startswith("Normal"):
        assert grown is masks  # nothing infected outside the lungs to put back
        return
    added = (grown.labels > 0) & (masks.labels == 0)
    assert not ((masks.labels > 0) & (grown.labels == 0)).any()
    # cap001: 111 mL of nodular pneumonia and the aerated lung around it at the left base and in
    # the right lower lobe (benchmarks/README.md, "Lesions must stay lung"), most of it aerated.
    assert 50 < added.sum() * volume.voxel_volume_ml < 300
    assert np.mean(volume.array[added] < lungs.AERATED_HU) > 0.7
