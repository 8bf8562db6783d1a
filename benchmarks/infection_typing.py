"""How well does intensity alone type the true infection of the MedSeg slices?

    python benchmarks/infection_typing.py

For every MedSeg training slice, the radiologists' infection pixels (ground-glass or
consolidation) are typed by one threshold: below it ground-glass, at or above it consolidation.
The Dice of each type (mean over the slices that have it, as Inf-Net reports) is printed for a
range of thresholds, once on each channel of the infection model's input
(:func:`covidct.infection.model_input`): the CLAHE channel (0) and the intensity channel (1).
No model is involved: this measures what each channel can tell about the type, given the extent.
"""

from __future__ import annotations

import numpy as np

from _common import DATA, record
from covidct.train import infection as train_infection
from covidct.train.data import load_medseg

THRESHOLDS = np.round(np.arange(0.30, 0.951, 0.05), 2)


def typing_dice(x: np.ndarray, y: np.ndarray, threshold: float) -> dict[str, float]:
    """Mean per-image Dice of ground-glass (x < threshold) and consolidation inside the true infection."""
    dices: dict[int, list[float]] = {1: [], 2: []}
    for image, labels in zip(x, y):
        infected = labels > 0
        typed = np.where(image < threshold, 1, 2)
        for cls in (1, 2):
            truth = labels == cls
            if truth.any():
                pred = infected & (typed == cls)
                dices[cls].append(2 * float((pred & truth).sum()) / float(pred.sum() + truth.sum()))
    return {"ground_glass": round(float(np.mean(dices[1])), 4), "consolidation": round(float(np.mean(dices[2])), 4)}


def main() -> None:
    x, y = train_infection.to_tensors([], load_medseg(DATA))
    x, y = x.numpy(), y.numpy()
    result = {}
    for channel, name in ((0, "clahe"), (1, "intensity")):
        rows = {str(t): typing_dice(x[:, channel], y, float(t)) for t in THRESHOLDS}
        best = max(rows, key=lambda t: rows[t]["ground_glass"] + rows[t]["consolidation"])
        result[name] = {"best_threshold_by_sum": best, "best": rows[best], "by_threshold": rows}
    record("infection_typing", {"slices": len(x), **result})


if __name__ == "__main__":
    main()
