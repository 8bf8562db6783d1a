"""Evaluation metrics over arrays."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: Resamples of :func:`bootstrap_interval` (the percentile bounds move by ~0.002 between seeds).
BOOTSTRAP_RESAMPLES = 2000


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient 2|P∩T| / (|P| + |T|) of two boolean arrays; 1.0 when both are empty."""
    p, t = np.asarray(prediction, bool), np.asarray(truth, bool)
    total = int(p.sum()) + int(t.sum())
    return 1.0 if total == 0 else 2.0 * float(np.logical_and(p, t).sum()) / total


def roc_auc(scores: np.ndarray, truth: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U; ties count one half).

    Parameters
    ----------
    scores : (n,) higher means more likely positive
    truth : (n,) bool

    Returns
    -------
    AUC in [0, 1]; NaN when ``truth`` holds only one class.
    """
    from scipy.stats import rankdata

    scores, truth = np.asarray(scores, dtype=np.float64), np.asarray(truth, dtype=bool)
    n_pos, n_neg = int(truth.sum()), int((~truth).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[truth].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(scores: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False-positive rate, true-positive rate and the thresholds they hold at (``score >= t``),
    from the strictest threshold (+inf: nothing positive) to the loosest."""
    scores, truth = np.asarray(scores, dtype=np.float64), np.asarray(truth, dtype=bool)
    thresholds = np.concatenate([[np.inf], np.unique(scores)[::-1]])
    positive = scores[None, :] >= thresholds[:, None]
    tpr = (positive & truth).sum(1) / max(int(truth.sum()), 1)
    fpr = (positive & ~truth).sum(1) / max(int((~truth).sum()), 1)
    return fpr, tpr, thresholds


def youden_threshold(scores: np.ndarray, truth: np.ndarray) -> float:
    """The threshold maximizing sensitivity + specificity - 1 (ties: the highest threshold)."""
    fpr, tpr, thresholds = roc_curve(scores, truth)
    finite = np.isfinite(thresholds)
    j = np.where(finite, tpr - fpr, -np.inf)
    return float(thresholds[int(np.argmax(j))])


def sensitivity_specificity(scores: np.ndarray, truth: np.ndarray, threshold: float) -> tuple[float, float]:
    """Sensitivity and specificity of ``score >= threshold`` (NaN where a class is absent)."""
    truth = np.asarray(truth, dtype=bool)
    positive = np.asarray(scores) >= threshold
    sens = float((positive & truth).sum() / truth.sum()) if truth.any() else float("nan")
    spec = float((~positive & ~truth).sum() / (~truth).sum()) if (~truth).any() else float("nan")
    return sens, spec


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) counts; rows are the truth, columns the prediction."""
    out = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(out, (np.asarray(truth, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    return out


def bootstrap_interval(
    statistic: Callable[[np.ndarray], float],
    groups: np.ndarray,
    level: float = 0.95,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of a statistic, resampling whole groups.

    Rows of one group (the slices of one patient) are not independent, so the groups are drawn
    with replacement, each bringing all its rows; drawing single rows would give too narrow an
    interval. Resamples on which the statistic is undefined (NaN: e.g. an AUC of one class) are
    dropped.

    Parameters
    ----------
    statistic : rows -> float
        The statistic of a sample given as an index array into the data (repeats allowed).
    groups : (n,) array
        Group of every row; every row its own group to resample rows.
    level : float
        Coverage of the interval (0.95: the 2.5th and 97.5th percentiles).
    n_resamples, seed : int
        Number of resamples and the seed of their draws (the interval is reproducible).

    Returns
    -------
    (low, high), or None with fewer than two groups or when fewer than half the resamples
    give a defined statistic.
    """
    _, group_index = np.unique(np.asarray(groups), return_inverse=True)
    n_groups = int(group_index.max()) + 1 if len(group_index) else 0
    if n_groups < 2:
        return None
    rows_of = [np.flatnonzero(group_index == g) for g in range(n_groups)]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_resamples):
        drawn = rng.integers(0, n_groups, n_groups)
        value = statistic(np.concatenate([rows_of[g] for g in drawn]))
        if value == value:
            values.append(value)
    if len(values) < n_resamples / 2:
        return None
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def rounded_interval(interval: tuple[float, float] | None, decimals: int = 4) -> list[float] | None:
    """An interval of :func:`bootstrap_interval` as a JSON-ready list, rounded; None stays None."""
    return None if interval is None else [round(v, decimals) for v in interval]
