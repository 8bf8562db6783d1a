"""Infection U-Net: two ways of turning the softmax into labels, on kept cross-validation fold models (tried, not shipped).

    python benchmarks/infection_decoding.py DIR [DIR ...] [--name NAME]

Each DIR holds the five fold models an earlier ``python benchmarks/infection_cv.py --keep DIR``
kept. Every fold model validates its own fold's MedSeg slices (with the flip, as shipped)
decoded three ways:

* ``shipped``: the most probable class on the 256 x 256 grid, resized to the picture by nearest
  neighbour (:func:`covidct.infection.labels_in_slices`);
* ``bilinear``: the softmax resized bilinearly to the picture's crop box, then the most probable
  class (sub-pixel boundaries). What the grid alone costs is measured on the ground truth
  itself (``truth_through_the_grid``): its one-hot labels taken to the 256 grid and back, by
  nearest neighbour both ways (as the shipped decoding), or by area averaging and then bilinearly
  (as this one);
* ``offsets``: the most probable class of log p + b, b = (0, b_gg, b_cons) on a grid of
  -1 ... 1 in steps of 0.25, with b chosen for each fold on the other four folds' images (the mean
  of the three per-image Dice there; nested, so no fold is scored with offsets fitted to it).

A change at inference alone, so it is compared on the very same networks, free of the
training's seed-to-seed spread. Writes results/NAME.json: Dice per image and pooled for each
DIR and way, and each fold's chosen offsets.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import torch
from _common import DATA, kept_fold_models, record
from torch.nn import functional as F

from covidct import classify, infection
from covidct.train import infection as train_infection
from covidct.train.data import load_medseg

OFFSETS = tuple(itertools.product(np.arange(-1.0, 1.01, 0.25).round(2), repeat=2))


def bilinear_labels(probabilities: torch.Tensor, box: classify.Box, shape: tuple[int, int]) -> np.ndarray:
    """:func:`covidct.infection.labels_in_slices` with the softmax, not the labels, resized to the box."""
    y0, y1, x0, x1 = box
    resized = F.interpolate(probabilities, size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=False)
    return classify.uncrop(torch.max(resized, dim=1).indices.to(torch.uint8), box, shape, "nearest-exact")


def truth_through_the_grid(medseg: list) -> dict[str, dict[str, float]]:
    """Dice per image of the MedSeg labels against themselves after a round trip through the
    model's 256 x 256 grid: ``nearest`` both ways, or ``area_then_bilinear``."""
    nearest, smooth = {}, {}
    for item in medseg:
        box = train_infection.medseg_box(item)
        on_grid = train_infection.label_input(item.mask[None], box)  # nearest, as training sees them
        nearest[item.name] = train_infection.class_counts(
            classify.uncrop(on_grid.to(torch.uint8), box, item.mask.shape, "nearest-exact")[0], item.mask)
        cropped = train_infection.crop_labels(item.mask[None], box)[0].astype(np.int64)
        one_hot = F.one_hot(torch.from_numpy(cropped), 3).permute(2, 0, 1)[None].float()
        averaged = F.interpolate(one_hot, size=on_grid.shape[-2:], mode="area")
        smooth[item.name] = train_infection.class_counts(bilinear_labels(averaged, box, item.mask.shape)[0], item.mask)
    return {"nearest": per_image(nearest), "area_then_bilinear": per_image(smooth)}


def per_image(counts: dict) -> dict[str, float]:
    return train_infection.summarize_medseg(counts)["dice_mean_per_image"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", nargs="+", type=Path, help="folders of kept fold models (infection_cv.py --keep)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--name", default="infection_decoding")
    args = parser.parse_args()
    torch.set_num_threads(2)
    medseg = load_medseg(DATA)
    result = {}
    for folder in args.dirs:
        shipped, bilinear = {}, {}
        by_offset: dict[tuple, list[dict]] = {b: [{} for _ in range(args.folds)] for b in OFFSETS}
        for k, model, slices in kept_fold_models(folder, medseg, args.folds):
            for item in slices:
                box = train_infection.medseg_box(item)
                prob = train_infection.picture_probabilities(model, item.image[None], box, flip=True)
                shipped[item.name] = train_infection.class_counts(
                    infection.labels_in_slices(prob, box, item.mask.shape)[0], item.mask)
                bilinear[item.name] = train_infection.class_counts(
                    bilinear_labels(prob, box, item.mask.shape)[0], item.mask)
                log_p = prob.clamp_min(1e-8).log()
                for b in OFFSETS:
                    shifted = log_p + torch.tensor([0.0, *b])[None, :, None, None]
                    by_offset[b][k][item.name] = train_infection.class_counts(
                        infection.labels_in_slices(shifted, box, item.mask.shape)[0], item.mask)
        nested, chosen = {}, []
        for k in range(args.folds):
            def others(b: tuple, k: int = k) -> dict:
                return {name: c for j, fold in enumerate(by_offset[b]) if j != k for name, c in fold.items()}
            best = max(OFFSETS, key=lambda b: float(np.mean(list(per_image(others(b)).values()))))
            chosen.append([float(v) for v in best])
            nested.update(by_offset[best][k])
        ways = {"shipped": shipped, "bilinear": bilinear, "offsets": nested}
        summaries = {way: train_infection.summarize_medseg(c) for way, c in ways.items()}
        result[str(folder)] = {
            **{way: {key: s[key] for key in ("dice_mean_per_image", "dice_pooled")} for way, s in summaries.items()},
            "offsets_chosen_per_fold": chosen,
            "difference_per_image": {way: {name: round(summaries[way]["dice_mean_per_image"][name]
                                                       - summaries["shipped"]["dice_mean_per_image"][name], 4)
                                           for name in train_infection.DICE_CLASSES}
                                     for way in ("bilinear", "offsets")},
        }
        print(folder, result[str(folder)]["difference_per_image"], flush=True)
    record(args.name, {"truth_through_the_grid": truth_through_the_grid(medseg),
                       "offset_grid": [-1.0, 1.0, 0.25], "runs": result})


if __name__ == "__main__":
    main()
