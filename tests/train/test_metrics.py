import numpy as np
import pytest

from covidct.train import metrics


def test_auc_perfect_inverted_and_ties():
    truth = np.array([0, 0, 1, 1], bool)
    assert metrics.roc_auc(np.array([0.1, 0.2, 0.8, 0.9]), truth) == 1.0
    assert metrics.roc_auc(np.array([0.9, 0.8, 0.2, 0.1]), truth) == 0.0
    assert metrics.roc_auc(np.full(4, 0.5), truth) == 0.5
    # One positive ranked below one negative out of 2 x 2 pairs.
    assert metrics.roc_auc(np.array([0.1, 0.7, 0.6, 0.9]), truth) == pytest.approx(0.75)
    assert np.isnan(metrics.roc_auc(np.array([0.1, 0.2]), np.array([1, 1], bool)))


def test_auc_equals_area_under_roc_curve():
    rng = np.random.default_rng(0)
    truth = rng.random(200) < 0.4
    scores = rng.random(200) + truth * 0.5
    fpr, tpr, thresholds = metrics.roc_curve(scores, truth)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1 and thresholds[0] == np.inf
    area = float(np.sum(np.diff(fpr) * tpr[1:]))  # no ties in continuous scores: step integral
    assert metrics.roc_auc(scores, truth) == pytest.approx(area)


def test_youden_threshold_separates_separable_scores():
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.7])
    truth = np.array([0, 0, 0, 1, 1], bool)
    t = metrics.youden_threshold(scores, truth)
    assert metrics.sensitivity_specificity(scores, truth, t) == (1.0, 1.0)
    assert 0.3 < t <= 0.6


def test_confusion_matrix_rows_are_truth():
    cm = metrics.confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]


def test_bootstrap_interval_of_a_mean_matches_the_normal_approximation():
    values = np.random.default_rng(1).normal(size=400)
    low, high = metrics.bootstrap_interval(lambda rows: float(values[rows].mean()), np.arange(400))
    half = 1.96 * values.std() / np.sqrt(400)
    assert low == pytest.approx(values.mean() - half, abs=0.02)
    assert high == pytest.approx(values.mean() + half, abs=0.02)
    assert metrics.bootstrap_interval(lambda rows: float(values[rows].mean()), np.arange(400)) == (low, high)


def test_bootstrap_interval_resamples_whole_groups():
    values = np.random.default_rng(2).normal(size=50)
    repeated, groups = np.repeat(values, 10), np.repeat(np.arange(50), 10)
    per_group = metrics.bootstrap_interval(lambda rows: float(values[rows].mean()), np.arange(50))
    # Ten identical rows per group: resampling groups gives the same draws and the same interval;
    # resampling rows as if independent gives one about sqrt(10) times too narrow.
    assert metrics.bootstrap_interval(lambda rows: float(repeated[rows].mean()), groups) == pytest.approx(per_group)
    naive = metrics.bootstrap_interval(lambda rows: float(repeated[rows].mean()), np.arange(500))
    assert (naive[1] - naive[0]) < 0.5 * (per_group[1] - per_group[0])


def test_bootstrap_interval_undefined():
    assert metrics.bootstrap_interval(lambda rows: 1.0, np.zeros(10)) is None  # one group
    assert metrics.bootstrap_interval(lambda rows: float("nan"), np.arange(10)) is None
    # One positive in ten: a third of the resamples miss it (AUC undefined); those are dropped.
    truth, scores = np.arange(10) == 9, np.arange(10.0)
    assert metrics.bootstrap_interval(lambda rows: metrics.roc_auc(scores[rows], truth[rows]), np.arange(10)) == (1.0, 1.0)


def test_rounded_interval_is_a_json_list_and_keeps_none():
    assert metrics.rounded_interval((0.123456, 0.98765)) == [0.1235, 0.9877]
    assert metrics.rounded_interval((0.123456, 0.98765), decimals=2) == [0.12, 0.99]
    assert metrics.rounded_interval(None) is None
