import numpy as np
import pytest

from covidct.pipeline import STAGES, analyze


@pytest.fixture(scope="module")
def result(small_phantom):
    stages = []
    return analyze(small_phantom.volume, on_stage=stages.append), stages


def test_analysis_shapes_stages_and_models(result, small_phantom):
    a, stages = result
    vol = small_phantom.volume
    assert stages == list(STAGES)
    assert a.probabilities.shape == (vol.shape[0], 3) and a.maps.shape == vol.shape
    assert set(a.timing_s) == set(STAGES)
    assert a.models["lungs"]["name"] == "lungs" and a.models["classifier"]["name"] == "classifier"


def test_maps_stay_on_positive_lung_slices_inside_the_lungs(result):
    a, _ = result
    assert a.maps.min() >= 0.0 and a.maps.max() <= 1.0
    assert a.maps[a.lungs.labels == 0].max(initial=0.0) == 0.0
    off = np.setdiff1d(np.arange(a.maps.shape[0]), a.positive)
    assert a.maps[off].max(initial=0.0) == 0.0


def test_case_figures_agree_with_each_other(result):
    a, _ = result
    d = a.decision
    assert d.positive_slices == len(a.positive) and d.lung_slices == len(a.lungs.lung_slices)
    assert d.label == ("abnormal" if d.positive_slice_ratio > d.threshold else "normal")
    assert (a.corona_score_cm3 > 0) == (a.maps.max() > 0)
    assert a.involvement.infection_volume_ml <= a.involvement.lung_volume_ml["total"]


def test_every_report_carries_the_localization_caveat(result):
    from covidct.pipeline import LOCALIZATION_CAVEAT

    a, _ = result
    assert LOCALIZATION_CAVEAT in a.warnings
