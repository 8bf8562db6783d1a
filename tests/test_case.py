import numpy as np
import pytest

from covidct import case


def _probs(p_abnormal):
    p = np.asarray(p_abnormal, np.float32)
    return np.stack([1 - p, 0.7 * p, 0.3 * p], axis=1)


def test_decision_counts_positive_lung_slices_against_the_ratio():
    probs = _probs([0.9, 0.9, 0.2, 0.8, 0.1, 0.95])
    lung = np.array([1, 2, 3, 4])  # slices 0 and 5 have no lung and do not count
    d = case.decide(probs, lung, slice_threshold=0.5, case_threshold=0.4)
    assert (d.positive_slices, d.lung_slices, d.positive_slice_ratio) == (2, 4, 0.5)
    assert d.label == "abnormal" and d.diagnosis == "COVID-19"
    assert d.probabilities["Normal"] == pytest.approx(0.15, abs=1e-4)  # mean over slices 1 and 3
    d = case.decide(probs, lung, slice_threshold=0.5, case_threshold=0.5)
    assert d.label == "normal" and d.diagnosis == "Normal"


def test_cap_wins_when_its_mean_probability_is_larger():
    probs = np.array([[0.1, 0.3, 0.6], [0.2, 0.5, 0.3]], np.float32)
    assert case.decide(probs, np.array([0, 1]), 0.5, 0.1).diagnosis == "CAP"


def test_no_lung_is_a_normal_case():
    d = case.decide(_probs([0.9]), np.array([], int), 0.5, 0.1)
    assert d.label == "normal" and d.lung_slices == 0 and d.positive_slice_ratio == 0.0


def test_corona_score_is_map_sum_times_voxel_volume():
    maps = np.zeros((4, 10, 10), np.float32)
    maps[1, :5, :5] = 0.5  # 25 voxels x 0.5
    assert case.corona_score_cm3(maps, (2.0, 1.0, 1.0)) == pytest.approx(25 * 0.5 * 2.0 / 1000)


def test_lung_zones_split_each_lung_in_thirds_along_z():
    labels = np.zeros((9, 4, 4), np.uint8)
    labels[:, :, :2] = 1
    labels[3:9, :, 2:] = 2
    zones = case.lung_zones(labels)
    assert [int(zones[z, 0, 0]) for z in range(9)] == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert [int(zones[z, 0, 3]) for z in range(3, 9)] == [4, 4, 5, 5, 6, 6]
    assert zones[:3, :, 2:].max() == 0


def test_involvement_on_the_phantom(small_phantom):
    labels, infection = small_phantom.lungs, small_phantom.infection
    spacing = small_phantom.volume.spacing_mm
    inv = case.involvement(infection > 0, labels, spacing)
    voxel_ml = np.prod(spacing) / 1000
    assert inv.infection_volume_ml == pytest.approx(((infection > 0) & (labels > 0)).sum() * voxel_ml, abs=0.01)
    assert inv.lung_volume_ml["total"] == pytest.approx((labels > 0).sum() * voxel_ml, abs=0.1)
    for side, code in (("right", 1), ("left", 2)):
        expected = 100 * ((infection > 0) & (labels == code)).sum() / (labels == code).sum()
        assert inv.involvement_pct[side] == pytest.approx(expected, abs=0.01)
    assert set(inv.zones_pct) == {f"{s}_{z}" for s in ("right", "left") for z in ("upper", "middle", "lower")}
    # Growing the infection never lowers any figure.
    grown = case.involvement(np.ones_like(labels, bool), labels, spacing)
    assert grown.involvement_pct["total"] == 100.0
    assert all(grown.zones_pct[k] >= inv.zones_pct[k] for k in inv.zones_pct)


def test_typed_involvement_counts_each_type_and_their_union():
    labels = np.zeros((3, 4, 4), np.uint8)
    labels[:, :, :2], labels[:, :, 2:] = 1, 2  # 24 voxels per lung
    lesions = np.zeros_like(labels)
    lesions[0, :2, 0] = 1  # 2 ground-glass voxels, right lung
    lesions[1, :3, 3] = 2  # 3 consolidation voxels, left lung
    lesions[2, 0, 0] = 2  # 1 consolidation voxel, right lung
    lesions[:, 3, :] = np.where(labels[:, 3, :] > 0, lesions[:, 3, :], 0)
    spacing = (20.0, 10.0, 5.0)  # 1 mL voxels
    typed = case.typed_involvement(lesions, labels, spacing)
    assert typed["ground_glass"].infection_volume_ml == 2.0
    assert typed["consolidation"].infection_volume_ml == 4.0
    assert typed["infection"].infection_volume_ml == 6.0
    assert typed["consolidation"].involvement_pct == {"right": round(100 / 24, 2), "left": 12.5, "total": 8.33}
    assert typed["infection"].involvement_pct["right"] == 12.5
    # Zones: each lung spans 3 slices, one per third; slice 0 is the lower third.
    assert typed["ground_glass"].zones_pct["right_lower"] == 25.0
    assert typed["consolidation"].zones_pct["left_middle"] == 37.5
    # The union equals involvement() of the binary mask.
    assert typed["infection"] == case.involvement(lesions > 0, labels, spacing)


def test_involvement_ignores_infection_outside_the_lungs():
    labels = np.zeros((3, 4, 4), np.uint8)
    labels[:, :2] = 1
    inv = case.involvement(np.ones_like(labels, bool), labels, (10.0, 10.0, 10.0))
    assert inv.infection_volume_ml == 24.0 and inv.involvement_pct["total"] == 100.0


def test_zone_percentages_match_the_voxel_zones(small_phantom):
    labels, infected = small_phantom.lungs, small_phantom.infection > 0
    inv = case.involvement(infected, labels, small_phantom.volume.spacing_mm)
    zones = case.lung_zones(labels)
    names = ["right_lower", "right_middle", "right_upper", "left_lower", "left_middle", "left_upper"]
    for code, name in enumerate(names, start=1):
        expected = 100 * (infected & (zones == code)).sum() / (zones == code).sum()
        assert inv.zones_pct[name] == pytest.approx(expected, abs=0.01), name
