"""Two classifier cross-validations compared image by image, with paired bootstrap intervals.

    python benchmarks/classifier_cv_compare.py results/A.json results/B.json [--merge] [--name NAME]

Both files come from benchmarks/classifier_cv.py with the same folds (``--folds``,
``--fold-seed``), so every UCSD image was predicted out of fold by a model of each run. This
gives B - A for the out-of-fold AUC of p_abnormal (and of p(COVID-19), the dataset's own
task), with a 95 % paired bootstrap interval: UCSD patients drawn with replacement, the same
ones for both runs.

With ``--merge``, B is first replaced by the ensemble of both runs' fold models: the
probabilities averaged with the runs' numbers of networks as weights, which is exactly what
one ensemble of all the networks outputs (:class:`covidct.models.resnet.CompactResNetEnsemble`
averages its members' probabilities). E.g. A = the shipped 3 networks (seeds 0-2) and B =
``--members 2 --seed 3`` give the 5-network ensemble against the 3.

A run stopped after some folds (``--first-folds``) is compared over the folds both runs have.

Writes results/NAME.json (default: classifier_cv_compare_A_B, or ..._A_merged_B).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from _common import record

from covidct.train.metrics import bootstrap_interval, roc_auc, rounded_interval


def load_run(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The run's recipe and folds dealt, and its per-image rows in the order it wrote them."""
    result = json.loads(path.read_text())
    return {"recipe": result["recipe"], "folds_dealt": result["folds_dealt"]}, result["images"]


def paired(a: np.ndarray, b: np.ndarray, truth: np.ndarray, patients: np.ndarray) -> dict[str, Any]:
    """AUCs of scores ``a`` and ``b`` and B - A with its paired bootstrap interval over patients."""
    interval = bootstrap_interval(lambda r: roc_auc(b[r], truth[r]) - roc_auc(a[r], truth[r]), patients)
    auc_a, auc_b = roc_auc(a, truth), roc_auc(b, truth)
    return {"auc_a": round(auc_a, 4), "auc_b": round(auc_b, 4), "b_minus_a": round(auc_b - auc_a, 4),
            "ci95": rounded_interval(interval)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--merge", action="store_true", help="compare A with the ensemble of A's and B's networks")
    parser.add_argument("--name", help="results file stem")
    args = parser.parse_args()
    (info_a, rows_a), (info_b, rows_b) = load_run(args.a), load_run(args.b)
    if info_a["folds_dealt"] != info_b["folds_dealt"]:
        raise SystemExit(f"the runs dealt different folds: {info_a['folds_dealt']} vs {info_b['folds_dealt']}")
    folds = sorted({r["fold"] for r in rows_a} & {r["fold"] for r in rows_b})  # a run stopped early (--first-folds)
    rows_a, rows_b = ([r for r in rows if r["fold"] in folds] for rows in (rows_a, rows_b))
    key = [(r["fold"], r["patient"], r["covid"]) for r in rows_a]
    if key != [(r["fold"], r["patient"], r["covid"]) for r in rows_b]:
        raise SystemExit("the runs' images differ (fold, patient or label, row by row)")
    truth = np.array([r["covid"] for r in rows_a])
    patients = np.array([r["patient"] for r in rows_a])
    out: dict[str, Any] = {"a": {"file": args.a.name, **info_a}, "b": {"file": args.b.name, **info_b},
                           "merged": args.merge, "folds": folds, "images": len(rows_a), "patients": len(set(patients.tolist())),
                           "ci95_resampled": "patients, the same for both runs"}
    for score in ("p_abnormal", "p_covid"):
        a = np.array([r[score] for r in rows_a])
        b = np.array([r[score] for r in rows_b])
        if args.merge:
            na, nb = info_a["recipe"]["members"], info_b["recipe"]["members"]
            b = (na * a + nb * b) / (na + nb)
        out[score] = paired(a, b, truth, patients)
    stem = f"{args.a.stem}_{'merged_' if args.merge else ''}{args.b.stem}"
    record(args.name or f"classifier_cv_compare_{stem}", out)


if __name__ == "__main__":
    main()
