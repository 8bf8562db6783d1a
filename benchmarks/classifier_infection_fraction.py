"""Does the infection U-Net tell UCSD's COVID-19 pictures from the others? (tried, not shipped)

    python benchmarks/classifier_infection_fraction.py [--cv results/classifier_cv.json] [--name NAME]

The infection U-Net never trained on UCSD. Each UCSD train/val picture is segmented whole
(:func:`covidct.segment_infection` of a 2-D image, as ``covidct analyze`` does a picture), and
its score is the fraction of its pixels labelled infection. The score's AUC (COVID-19 against
NonCOVID) over the 543 pictures stands beside the classifier recipe's out-of-fold AUC on the same
pictures (``--cv``, the output of benchmarks/classifier_cv.py). One combination, fixed before it
was computed: a logistic regression on (logit p_abnormal, log(fraction + 0.001)) fitted on four of
the classifier's folds and applied to the fifth, so that every picture's combined score comes from
a fit that did not see it. Intervals resample patients. Writes results/NAME.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from _common import DATA, RESULTS, record

from covidct.infection import load_infection_model, segment_infection
from covidct.io.image import load_image
from covidct.train.data import load_ucsd
from covidct.train.metrics import bootstrap_interval, roc_auc, rounded_interval


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, iterations: int = 50) -> np.ndarray:
    """Weights (intercept first) of a logistic regression of ``y`` (0/1) on the columns of ``x``,
    by Newton's method with a small ridge ``l2``."""
    a = np.c_[np.ones(len(x)), x]
    w = np.zeros(a.shape[1])
    for _ in range(iterations):
        q = 1 / (1 + np.exp(-a @ w))
        gradient = a.T @ (q - y) + l2 * w
        hessian = (a * (q * (1 - q))[:, None]).T @ a + l2 * np.eye(len(w))
        w -= np.linalg.solve(hessian, gradient)
    return w


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cv", type=Path, default=RESULTS / "classifier_cv.json")
    parser.add_argument("--name", default="classifier_infection_fraction")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = load_infection_model()
    fraction = {}
    for item in load_ucsd(DATA):
        labels = segment_infection(load_image(item.file), model=model)
        fraction[item.file.name] = float((labels > 0).mean())
    files = [item.file.name for item in load_ucsd(DATA)]
    patients = [item.patient_id or f"ucsd-unknown:{item.file.name}" for item in load_ucsd(DATA)]
    cv = json.loads(args.cv.read_text())
    rows = []  # classifier_cv.json lists each fold's pictures in load_ucsd's order
    for k in sorted({r["fold"] for r in cv["images"]}):
        in_fold = [r for r in cv["images"] if r["fold"] == k]
        fold_patients = {r["patient"] for r in in_fold}
        names = [f for f, p in zip(files, patients) if p in fold_patients]
        if len(names) != len(in_fold):
            raise SystemExit(f"{args.cv}: fold {k} does not match the UCSD pictures")
        rows += [{**r, "file": f, "fraction": fraction[f]} for r, f in zip(in_fold, names)]
    y = np.array([r["covid"] for r in rows])
    p = np.clip([r["p_abnormal"] for r in rows], 1e-5, 1 - 1e-5)
    f = np.array([r["fraction"] for r in rows])
    fold = np.array([r["fold"] for r in rows])
    groups = np.array([r["patient"] for r in rows])
    x = np.c_[np.log(p / (1 - p)), np.log(f + 1e-3)]
    combined = np.zeros(len(rows))
    weights = {}
    for k in np.unique(fold):
        w = fit_logistic(x[fold != k], y[fold != k].astype(float))
        combined[fold == k] = np.c_[np.ones((fold == k).sum()), x[fold == k]] @ w
        weights[int(k)] = [round(float(v), 3) for v in w]

    def auc(score: np.ndarray) -> dict:
        interval = bootstrap_interval(lambda r: roc_auc(score[r], y[r]), groups)
        return {"auc": round(roc_auc(score, y), 4), "ci95": rounded_interval(interval)}

    record(args.name, {
        "classifier_cv": str(args.cv), "images": len(rows), "covid_images": int(y.sum()),
        "classifier_out_of_fold": auc(p),
        "infection_fraction": auc(f),
        "combined_out_of_fold": {**auc(combined), "weights_per_fold (intercept, logit p, log fraction)": weights},
        "combined_minus_classifier_ci95": rounded_interval(
            bootstrap_interval(lambda r: roc_auc(combined[r], y[r]) - roc_auc(p[r], y[r]), groups)),
        "infection_fraction_by_class_median": {
            "covid": round(float(np.median(f[y])), 4), "noncovid": round(float(np.median(f[~y])), 4)},
    })


if __name__ == "__main__":
    main()
