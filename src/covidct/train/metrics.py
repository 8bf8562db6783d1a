"""Evaluation metrics over arrays."""

from __future__ import annotations

import numpy as np


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient 2|P∩T| / (|P| + |T|) of two boolean arrays; 1.0 when both are empty."""
    p, t = np.asarray(prediction, bool), np.asarray(truth, bool)
    total = int(p.sum()) + int(t.sum())
    return 1.0 if total == 0 else 2.0 * float(np.logical_and(p, t).sum()) / total
