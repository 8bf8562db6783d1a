"""Two infection recipes' cross-validations compared slice by slice, with bootstrap intervals.

    python benchmarks/infection_cv_compare.py results/A.json results/B.json [--name NAME]

Both files come from benchmarks/infection_cv.py (with its per-slice counts) over the same 50
MedSeg slices, so every slice was validated by a fold model of each recipe. For each class
(binary infection, ground-glass, consolidation) this prints B - A: the difference of the Dice per
image (mean over the images whose ground truth has the class) and of the pooled Dice, each with a
95 % paired bootstrap interval (the same images drawn for both recipes), and on how many images
B is better, worse or equal. Test-time flip as shipped. The images are resampled as if
independent (MedSeg names no patients; neighbouring slices often share one), so the intervals
are if anything too narrow. Writes results/NAME.json (default: cv_compare_A_B).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from _common import record

from covidct.train.infection import DICE_CLASSES, dice_per_image
from covidct.train.metrics import bootstrap_interval, rounded_interval


def slice_counts(path: Path) -> dict[str, dict[str, list[int]]]:
    """Per-slice (|P ∩ T|, |P| + |T|, |T|) of each class, with the test-time flip."""
    result = json.loads(path.read_text())
    counts = result["pooled_over_folds"]["flip"].get("medseg_counts_per_slice")
    if counts is None:
        raise SystemExit(f"{path}: no per-slice counts (re-run infection_cv.py, e.g. with --keep DIR --reuse)")
    return counts


def compare(a: dict[str, dict[str, list[int]]], b: dict[str, dict[str, list[int]]]) -> dict[str, Any]:
    """B - A per class of :data:`covidct.train.infection.DICE_CLASSES` (see module docstring)."""
    if set(a) != set(b):
        raise SystemExit(f"the two runs validated different slices: {sorted(set(a) ^ set(b))}")
    names = sorted(a, key=int)
    out = {}
    for cls in DICE_CLASSES:
        ca = np.array([a[n][cls] for n in names], dtype=np.float64)  # (slices, 3)
        cb = np.array([b[n][cls] for n in names], dtype=np.float64)
        if not np.array_equal(ca[:, 2], cb[:, 2]):
            raise SystemExit(f"the two runs' ground truth of {cls} differs")
        da, db = dice_per_image(ca), dice_per_image(cb)  # the same images, in the same order
        diff = db - da
        per_image = bootstrap_interval(lambda r: float(diff[r].mean()), np.arange(len(diff)))

        def pooled(rows: np.ndarray) -> float:
            return float(2 * cb[rows, 0].sum() / cb[rows, 1].sum() - 2 * ca[rows, 0].sum() / ca[rows, 1].sum())

        pooled_ci = bootstrap_interval(pooled, np.arange(len(names)))
        out[cls] = {
            "images": len(diff),
            "per_image_a": round(float(da.mean()), 4),
            "per_image_b": round(float(db.mean()), 4),
            "per_image_b_minus_a": round(float(diff.mean()), 4),
            "per_image_b_minus_a_ci95": rounded_interval(per_image),
            "images_b_better_worse_equal": [int((diff > 0).sum()), int((diff < 0).sum()), int((diff == 0).sum())],
            "pooled_b_minus_a": round(pooled(np.arange(len(names))), 4),
            "pooled_b_minus_a_ci95": rounded_interval(pooled_ci),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path, help="results JSON of infection_cv.py (the reference)")
    parser.add_argument("b", type=Path, help="results JSON of infection_cv.py (the recipe compared)")
    parser.add_argument("--name", help="results file stem (default cv_compare_A_B)")
    args = parser.parse_args()
    result = compare(slice_counts(args.a), slice_counts(args.b))
    name = args.name or f"cv_compare_{args.a.stem}_{args.b.stem}"
    record(name, {"a": args.a.name, "b": args.b.name, "flip": True, "b_minus_a": result})


if __name__ == "__main__":
    main()
