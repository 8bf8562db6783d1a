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


#: Lesion radii of the growing-lesion tests, as multiples of the phantom's default ones.
GROWTH = (0.0, 1.0, 1.4)


@pytest.fixture(scope="module")
def growing():
    """The default 48 x 128 x 128 phantom with its lesions at each :data:`GROWTH` multiple of
    their radius (0: a healthy phantom), and its analysis with the shipped models."""
    from covidct.phantom import make_phantom, scaled_lesions

    out = []
    for scale in GROWTH:
        ph = make_phantom(lesions=scaled_lesions(scale))
        out.append((ph, analyze(ph.volume)))
    return out


# The classifier's calls are not asserted on the synthetic phantom: its flat, noisy lungs read
# as abnormal-ish to the classifiers trained on real CT (median p_abnormal 0.68 at 128 x 128 and
# 0.85 at 256 x 256 for the classifier shipped before 2026-12-07). They are asserted on real
# anatomy below (test_on_a_normal_ct_with_inserted_lesions_...).


def test_maps_stay_inside_the_true_lungs(growing):
    for ph, a in growing:
        assert float(a.maps[ph.lungs == 0].sum()) <= 0.01 * max(float(a.maps.sum()), 1e-9)


def test_segmented_infection_grows_with_the_lesions(growing):
    analyses = [a for _, a in growing]
    segmented = [a.infection_involvement["infection"].infection_volume_ml for a in analyses]
    involved = [a.infection_involvement["infection"].involvement_pct["total"] for a in analyses]
    lungs = [a.lungs.volume_ml["total"] for a in analyses]
    assert segmented[0] < segmented[1] < segmented[2], segmented  # 0 / 61.7 / 139.3 mL of 0 / 152 / 403 (0 / 130.7 / 331.6 before the lung-weights start)
    assert involved[0] < involved[1] < involved[2], involved
    assert max(lungs) - min(lungs) <= 0.02 * min(lungs), lungs  # lesions stay lung


#: Radii of the lesions inserted into a real normal CT, as multiples of the phantom's default ones.
INSERTED_GROWTH = (0.0, 1.0, 1.5)


@pytest.fixture(scope="module")
def inserted(shared_data):
    """normal001 with the phantom's default lesions inserted at each :data:`INSERTED_GROWTH`
    multiple of their radius, the lesions' labels, and the analysis with the shipped models."""
    import covidct
    from covidct.lungs import segment_lungs
    from covidct.phantom import insert_lesions, scaled_lesions

    volume = covidct.load(shared_data / "covid_ct_md" / "Normal" / "normal001")
    lungs = segment_lungs(volume).labels
    out = []
    for scale in INSERTED_GROWTH:
        with_lesions, truth = insert_lesions(volume, lungs, scaled_lesions(scale))
        out.append((truth, analyze(with_lesions)))
    return out


def test_on_a_normal_ct_with_inserted_lesions_the_case_turns_abnormal_and_the_scores_grow(inserted):
    """Real anatomy, known lesions (127 and 396 mL; benchmarks/inserted_lesions.py). The shipped
    classifier trained on normal001, not on these lesions. Measured (2026-12-07): normal /
    abnormal / abnormal, Corona 40.2 / 106.7 / 155.0 cm3; the classifier shipped before called
    both lesion cases normal (Corona 0 / 6.4 / 17.7)."""
    analyses = [a for _, a in inserted]
    corona = [a.corona_score_cm3 for a in analyses]
    segmented = [a.infection_involvement["infection"].infection_volume_ml for a in analyses]
    lungs = [a.lungs.volume_ml["total"] for a in analyses]
    assert [a.decision.label for a in analyses] == ["normal", "abnormal", "abnormal"]
    assert corona[0] < corona[1] < corona[2], corona
    assert segmented[0] < segmented[1] < segmented[2], segmented  # 2.6 / 72.6 / 128.1 mL (2.9 / 60.0 / 77.8 before the lung-weights start)
    assert min(lungs) >= 0.95 * lungs[0], lungs  # lesions stay lung: 3533 / 3528 / 3446 mL


def test_on_a_normal_ct_the_maps_lie_on_the_inserted_lesions(inserted):
    """Measured: 0.30 and 0.36 of the map mass on lesions that fill 3.5 % and 9.1 % of the lungs
    (enrichment 8.4 and 3.9); the classifier shipped before: 0.51 and 0.50."""
    for truth, a in inserted[1:]:
        lesion = truth > 0
        share = float(a.maps[lesion].sum() / a.maps.sum())
        in_lungs = a.lungs.labels > 0
        lesion_fraction = float((lesion & in_lungs).sum() / in_lungs.sum())
        assert share >= 2 * lesion_fraction, (share, lesion_fraction)


def test_infected_lung_the_lung_model_left_out_is_counted_and_said(shared_data):
    from covidct.io import load

    a = analyze(load(shared_data / "covid_ct_md" / "CAP" / "cap001"))
    said = [w for w in a.warnings if "left out" in w]
    assert len(said) == 1, a.warnings
    added_ml = float(said[0].split(" mL ")[0].split()[-1])
    assert 80 < added_ml < 150, said  # 111 mL (benchmarks/README.md, "Lesions must stay lung")
    assert not a.infection[a.lungs.labels == 0].any()  # the infection counted is the grown lungs'
