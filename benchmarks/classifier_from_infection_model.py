"""Can the infection U-Net tell UCSD's COVID-19 pictures from the others? (tried, not shipped)

    python benchmarks/classifier_from_infection_model.py [--cv results/classifier_cv.json] [--name NAME]

The infection U-Net never trained on UCSD. Three scores of each UCSD train/val picture (543),
each picture shown whole as :func:`covidct.segment_infection` shows a 2-D picture:

* ``infection_fraction``: the fraction of its pixels the U-Net labels infection (no fitting);
* ``probe_whole``: a linear read-out of the U-Net's encoder, the global average of each of its
  five levels' outputs (8 + 16 + 32 + 64 + 128 = 248 values), standardized, by a logistic
  regression with ridge 1.0 on the weights;
* ``probe_lungs``: the same averages taken inside the lung model's mask of the picture only.

Each is compared with the classifier recipe's out-of-fold scores on the same pictures (``--cv``,
the output of benchmarks/classifier_cv.py). The read-outs, and the combinations, are fitted on
four of the classifier's folds and applied to the fifth, so every picture's score comes from a
fit that did not see it. Combinations: for the fraction, a logistic regression on (logit
p_abnormal, log(fraction + 0.001)); for the read-outs, the sum of the two log-odds (no fitting).

Does a score read the disease or the source? Each read-out, fitted on all 543 pictures, is also
applied to the lung slices of the three shared CT studies (lung box, as
:func:`covidct.segment_infection` shows them): its AUC against the radiologists' slice labels
within P001 and cap001, and the share of slices (and of zenodo20's infected validation pictures)
it calls COVID-19 (log-odds above 0). The fraction and its combination, and the whole-picture
read-out with its sum, were fixed before they were computed; the lung-pooled read-out came after
the whole-picture one's CT check, to see whether pooling in the lungs removes the source. Writes
results/NAME.json; intervals resample patients.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import DATA, RESULTS, record
from torch.nn import functional as F

import covidct
from covidct import classify, infection, lungs
from covidct.io.image import load_image
from covidct.models.weights import channels_last, inference
from covidct.train.data import COVID_CT_MD_STUDIES, load_ucsd, load_zenodo20, read_slice_labels
from covidct.train.metrics import bootstrap_interval, roc_auc, rounded_interval

RIDGE = 1.0


def fit_logistic(x: np.ndarray, y: np.ndarray, ridge: float = 1e-3, iterations: int = 50) -> np.ndarray:
    """Weights (intercept first) of a logistic regression of ``y`` (0/1) on the columns of ``x``,
    by Newton's method, with ``ridge`` on the weights (not the intercept)."""
    a = np.c_[np.ones(len(x)), x]
    w = np.zeros(a.shape[1])
    penalty = ridge * np.eye(len(w))
    penalty[0, 0] = 0.0
    for _ in range(iterations):
        q = 1 / (1 + np.exp(-a @ w))
        hessian = (a * (q * (1 - q))[:, None]).T @ a + penalty
        w -= np.linalg.solve(hessian, a.T @ (q - y) + penalty @ w)
    return w


class Readout:
    """Standardize, then a ridge logistic regression (:data:`RIDGE`): ``score`` gives log-odds."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.mean, self.std = x.mean(0), x.std(0) + 1e-6
        self.w = fit_logistic((x - self.mean) / self.std, y.astype(float), RIDGE)

    def score(self, x: np.ndarray) -> np.ndarray:
        return np.c_[np.ones(len(x)), (x - self.mean) / self.std] @ self.w


class EncoderFeatures:
    """The infection U-Net's encoder outputs averaged over the whole input or over a mask."""

    def __init__(self) -> None:
        self.model = infection.load_infection_model().model
        self.levels: dict[int, torch.Tensor] = {}
        for i, block in enumerate(self.model.encoder):
            block.register_forward_hook(lambda module, inputs, out, i=i: self.levels.__setitem__(i, out.float()))

    def __call__(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(whole, inside ``mask``) averages, each (n, 248), for inputs (n, 2, 256, 256) and masks (n, 1, 256, 256)."""
        whole, inside = [], []
        for start in range(0, len(x), 16):
            with inference():
                self.model(channels_last(x[start : start + 16]))
            m = mask[start : start + 16]
            levels = [self.levels[i] for i in range(len(self.levels))]
            whole.append(torch.cat([f.mean(dim=(2, 3)) for f in levels], 1))
            pooled = []
            for f in levels:
                mk = F.interpolate(m, size=f.shape[-2:], mode="area")
                pooled.append((f * mk).sum(dim=(2, 3)) / mk.sum(dim=(2, 3)).clamp_min(1e-3))
            inside.append(torch.cat(pooled, 1))
        return torch.cat(whole).numpy(), torch.cat(inside).numpy()


def input_mask(mask: np.ndarray, box: classify.Box) -> torch.Tensor:
    """A lung mask (n, y, x) cut by ``box`` and averaged to the U-Net's 256 x 256 input; all ones
    where the lung model found almost no lung (as the classifier shows such a picture whole)."""
    m = torch.from_numpy(classify.crop((mask > 0).astype(np.float32), box))[:, None]
    m = F.interpolate(m, size=(infection.INPUT_SIZE, infection.INPUT_SIZE), mode="area")
    return m if m.mean() >= classify.MIN_LUNG_FRACTION else torch.ones_like(m)


def auc_with_interval(score: np.ndarray, truth: np.ndarray, groups: np.ndarray) -> dict[str, Any]:
    interval = bootstrap_interval(lambda r: roc_auc(score[r], truth[r]), groups)
    return {"auc": round(roc_auc(score, truth), 4), "ci95": rounded_interval(interval)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cv", type=Path, default=RESULTS / "classifier_cv.json")
    parser.add_argument("--name", default="classifier_from_infection_model")
    args = parser.parse_args()
    torch.set_num_threads(2)
    encoder = EncoderFeatures()
    lung_model = lungs.load_lung_model()
    segmenter = infection.load_infection_model()
    pictures = load_ucsd(DATA)
    fraction, whole, inside = [], [], []
    for item in pictures:
        picture = load_image(item.file)
        image = picture.array.astype(np.float32)
        labels = infection.segment_infection(picture, model=segmenter)
        fraction.append(float((labels > 0).mean()))
        box = infection.picture_box(image.shape[1:])
        mask = lungs.picture_lung_labels(lung_model.model, image)
        w, i = encoder(infection.model_input(image, False, box), input_mask(mask, box))
        whole.append(w[0])
        inside.append(i[0])
    features = {"probe_whole": np.stack(whole), "probe_lungs": np.stack(inside)}

    # classifier_cv.json lists each fold's pictures in load_ucsd's order
    patients = [item.patient_id or f"ucsd-unknown:{item.file.name}" for item in pictures]
    cv = json.loads(args.cv.read_text())
    order, rows = [], []
    for k in sorted({r["fold"] for r in cv["images"]}):
        in_fold = [r for r in cv["images"] if r["fold"] == k]
        fold_patients = {r["patient"] for r in in_fold}
        index = [j for j, p in enumerate(patients) if p in fold_patients]
        if len(index) != len(in_fold) or any(patients[j] != r["patient"] for j, r in zip(index, in_fold)):
            raise SystemExit(f"{args.cv}: fold {k} does not match the UCSD pictures")
        order += index
        rows += in_fold
    y = np.array([r["covid"] for r in rows])
    fold = np.array([r["fold"] for r in rows])
    groups = np.array([r["patient"] for r in rows])
    p = np.clip([r["p_abnormal"] for r in rows], 1e-5, 1 - 1e-5)
    classifier = np.log(p / (1 - p))
    f = np.array(fraction)[order]

    out_of_fold = {name: np.zeros(len(rows)) for name in ("fraction_stacked", *features)}
    stack_x = np.c_[classifier, np.log(f + 1e-3)]
    for k in np.unique(fold):
        train, test = fold != k, fold == k
        w = fit_logistic(stack_x[train], y[train].astype(float))
        out_of_fold["fraction_stacked"][test] = np.c_[np.ones(test.sum()), stack_x[test]] @ w
        for name, x in features.items():
            out_of_fold[name][test] = Readout(x[order][train], y[train]).score(x[order][test])

    def versus_classifier(score: np.ndarray) -> dict[str, Any]:
        difference = bootstrap_interval(lambda r: roc_auc(score[r], y[r]) - roc_auc(classifier[r], y[r]), groups)
        return {**auc_with_interval(score, y, groups), "minus_classifier": round(roc_auc(score, y) - roc_auc(classifier, y), 4),
                "minus_classifier_ci95": rounded_interval(difference)}

    ucsd = {
        "classifier_out_of_fold": auc_with_interval(classifier, y, groups),
        "infection_fraction": {**auc_with_interval(f, y, groups),
                               "median": {"covid": round(float(np.median(f[y])), 4),
                                          "noncovid": round(float(np.median(f[~y])), 4)},
                               "stacked_with_classifier": versus_classifier(out_of_fold["fraction_stacked"])},
    }
    readouts = {}
    all_y = np.array([item.covid for item in pictures])
    for name, x in features.items():
        ucsd[name] = {**auc_with_interval(out_of_fold[name], y, groups),
                      "sum_with_classifier": versus_classifier(classifier + out_of_fold[name])}
        readouts[name] = Readout(x, all_y)
        ucsd[name]["fit_on_all_pictures_auc"] = round(roc_auc(readouts[name].score(x), all_y), 4)

    elsewhere: dict[str, Any] = {name: {} for name in readouts}
    for folder, study, _ in COVID_CT_MD_STUDIES:
        volume = covidct.load(DATA / "covid_ct_md" / folder / study)
        slice_labels = read_slice_labels(DATA / "covid_ct_md" / folder / f"{study}_slice_labels.csv")
        masks = lungs.segment_lungs(volume, lung_model)
        index = masks.lung_slices
        box = classify.lung_box(masks.footprint)
        w, i = encoder(infection.model_input(volume.array[index], True, box), input_mask(masks.labels[index], box))
        truth = np.array([slice_labels[round(volume.meta.slice_z_mm[j], 1)] for j in index]) > 0
        for name, x in (("probe_whole", w), ("probe_lungs", i)):
            s = readouts[name].score(x)
            elsewhere[name][study] = {"slices": len(index), "called_covid": round(float((s > 0).mean()), 3),
                                      "median_log_odds": round(float(np.median(s)), 2)}
            if truth.any() and not truth.all():
                elsewhere[name][study]["auc_infected_slices"] = round(roc_auc(s, truth), 4)
    for case in load_zenodo20(DATA, ("val",)):
        box = classify.lung_box(case.lungs)
        w, i = encoder(infection.model_input(case.images, False, box), input_mask(case.lungs, box))
        for name, x in (("probe_whole", w), ("probe_lungs", i)):
            elsewhere[name][f"zenodo20 {case.case_id} (all infected)"] = {
                "slices": len(case.images), "called_covid": round(float((readouts[name].score(x) > 0).mean()), 3)}

    record(args.name, {
        "classifier_cv": str(args.cv), "images": len(rows), "covid_images": int(y.sum()), "ridge": RIDGE,
        "fixed_before_computed": ["infection_fraction", "infection_fraction.stacked_with_classifier", "probe_whole",
                                  "probe_whole.sum_with_classifier"],
        "ucsd_out_of_fold": ucsd,
        "readouts_fitted_on_all_ucsd_applied_elsewhere": elsewhere,
    })


if __name__ == "__main__":
    main()
