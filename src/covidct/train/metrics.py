"""Evaluation metrics over arrays."""

from __future__ import annotations

import numpy as np


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
