"""Infection segmentation of 2-D pictures: the whole picture, or the lung model's crop and cut?

    python benchmarks/infection_pictures.py --folds DIR [--name NAME]

Two ways to segment a 2-D picture (no HU) with one infection model:

* ``whole``: :func:`covidct.segment_infection` as shipped: the whole picture made square, as the
  MedSeg pictures are in training, no lung mask;
* ``lung_box_and_cut``: as for CT (and as covidct did for pictures before 2026-12-06): the
  lung model's mask of the picture, the square box around it (8 % margin), labels kept inside
  the mask.

MedSeg: every slice through the fold model that never saw it (``DIR`` from
``benchmarks/infection_cv.py --keep DIR``), pooled as in the cross-validation, and the share of
each slice's true infection that lies outside the lung model's mask. zenodo20 val (full CT
slices, lung masks given; no model trained on them): binary Dice per case (slices pooled),
mean over cases, then over the 5 fold models; also with the given lung masks for box and cut
(``given_lung_box_and_cut``, what ``covidct evaluate infection`` reports). All with the test-time
flip. Writes results/NAME.json (default infection_pictures).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from _common import DATA, fold_models_arguments, record

from covidct import classify, lungs
from covidct.infection import load_infection_model, picture_box
from covidct.train import infection as train_infection
from covidct.train.data import load_medseg, load_zenodo20
from covidct.train.metrics import dice

Counts = dict[str, tuple[int, int, int]]


def main() -> None:
    args = fold_models_arguments(__doc__, "infection_pictures")
    lung_model = lungs.load_lung_model().model
    medseg = load_medseg(DATA)
    zenodo = load_zenodo20(DATA, ("val",))
    # the lung model's masks do not depend on the fold model: made once
    medseg_lungs = {item.name: lungs.picture_lung_labels(lung_model, item.image[None]) > 0 for item in medseg}
    zenodo_lungs = [lungs.picture_lung_labels(lung_model, case.images) > 0 for case in zenodo]

    def crop_and_cut(way: str, images: np.ndarray, model_lungs: np.ndarray,
                     given: np.ndarray | None) -> tuple[classify.Box, np.ndarray]:
        """The crop box and the mask the labels are kept inside, for one way."""
        if way == "whole":
            return picture_box(images.shape[1:]), np.ones(images.shape, bool)
        mask = model_lungs if way == "lung_box_and_cut" else given
        return classify.lung_box(mask), mask

    ways = ("whole", "lung_box_and_cut", "given_lung_box_and_cut")
    medseg_counts: dict[str, dict[str, Counts]] = {"whole": {}, "lung_box_and_cut": {}}
    zenodo_means: dict[str, list[float]] = {way: [] for way in ways}
    outside = {}
    for k, (val, guard) in enumerate(train_infection.medseg_folds([s.name for s in medseg]), 1):
        model = load_infection_model(str(Path(args.folds) / f"infection_fold{k}.json")).model
        _, val_slices = train_infection.split_medseg(medseg, val, guard)
        for item in val_slices:
            images, model_lungs = item.image[None], medseg_lungs[item.name]
            for way in medseg_counts:
                box, keep = crop_and_cut(way, images, model_lungs, None)
                pred = train_infection.predict_labels(model, images, box, flip=True)[0] * keep[0]
                medseg_counts[way][item.name] = train_infection.class_counts(pred, item.mask)
            truth = item.mask > 0
            outside[item.name] = round(float((truth & ~model_lungs[0]).sum() / truth.sum()), 4)
        for way in ways:
            per_case = []
            for case, model_lungs in zip(zenodo, zenodo_lungs):
                box, keep = crop_and_cut(way, case.images, model_lungs, case.lungs > 0)
                pred = train_infection.predict_labels(model, case.images, box, flip=True) * keep
                per_case.append(dice(pred > 0, case.infection > 0))
            zenodo_means[way].append(float(np.mean(per_case)))
    record(args.name, {
        "folds": str(args.folds),
        "medseg": {way: train_infection.summarize_medseg(c) for way, c in medseg_counts.items()},
        "medseg_true_infection_outside_the_lung_mask": {
            "mean_share": round(float(np.mean(list(outside.values()))), 4),
            "slices_over_half": sorted((n for n, v in outside.items() if v > 0.5), key=int),
            "per_slice": outside,
        },
        "zenodo20_val_mean_dice_per_fold_model": {way: [round(v, 4) for v in m] for way, m in zenodo_means.items()},
        "zenodo20_val_mean_dice": {way: round(float(np.mean(m)), 4) for way, m in zenodo_means.items()},
    })


if __name__ == "__main__":
    main()
