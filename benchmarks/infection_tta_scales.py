"""Infection U-Net: test-time averaging over input scales, on kept cross-validation fold models (tried, not shipped).

    python benchmarks/infection_tta_scales.py DIR [DIR ...] [--sizes 208 256 320] [--name NAME]

Each DIR holds the five fold models an earlier ``python benchmarks/infection_cv.py --keep DIR``
kept. Every fold model validates its own fold's MedSeg slices twice: as shipped (the flip,
:func:`covidct.infection.predict_probabilities`), and with the softmax also averaged over the
input resized to each of ``--sizes`` pixels (bilinear; the softmax resized back), each size with
the flip. A change at inference alone, so it is compared on the very same networks, free of the
training's seed-to-seed spread that blurs recipe comparisons. Writes results/NAME.json: Dice per
image and pooled for each DIR, both ways, and their difference.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch
from _common import DATA, kept_fold_models, record
from torch.nn import functional as F

from covidct import infection
from covidct.train import infection as train_infection
from covidct.train.data import TypedSlice, load_medseg


def multiscale_probabilities(model: torch.nn.Module, x: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """The flipped softmax of ``x`` (n, 2, 256, 256) averaged over the input resized to each of ``sizes``."""
    total = torch.zeros((len(x), 3, *x.shape[-2:]))
    for size in sizes:
        resized = x if size == x.shape[-1] else F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        prob = infection.predict_probabilities(model, resized, flip=True)
        if size != x.shape[-1]:
            prob = F.interpolate(prob, size=x.shape[-2:], mode="bilinear", align_corners=False)
        total += prob
    return total / len(sizes)


def counts(model: torch.nn.Module, slices: list[TypedSlice], sizes: Sequence[int]) -> dict[str, dict]:
    """:func:`covidct.train.infection.medseg_counts` with the multi-scale softmax."""
    out = {}
    for item in slices:
        box = train_infection.medseg_box(item)
        prob = multiscale_probabilities(model, infection.model_input(item.image[None], False, box), sizes)
        labels = infection.labels_in_slices(prob, box, item.mask.shape)[0]
        out[item.name] = train_infection.class_counts(labels, item.mask)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", nargs="+", type=Path, help="folders of kept fold models (infection_cv.py --keep)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[208, 256, 320],
                        help="input sizes in pixels, multiples of 16 (default 208 256 320)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--name", default="infection_tta_scales")
    args = parser.parse_args()
    if any(size % 16 for size in args.sizes):
        parser.error("--sizes must be multiples of 16")
    torch.set_num_threads(2)
    medseg = load_medseg(DATA)
    result = {}
    for folder in args.dirs:
        plain, scaled = {}, {}
        for _, model, slices in kept_fold_models(folder, medseg, args.folds):
            plain.update(train_infection.medseg_counts(model, slices, flip=True))
            scaled.update(counts(model, slices, args.sizes))
        a, b = train_infection.summarize_medseg(plain), train_infection.summarize_medseg(scaled)
        result[str(folder)] = {
            "flip": {key: a[key] for key in ("dice_mean_per_image", "dice_pooled")},
            "flip_and_sizes": {key: b[key] for key in ("dice_mean_per_image", "dice_pooled")},
            "difference_per_image": {name: round(b["dice_mean_per_image"][name] - a["dice_mean_per_image"][name], 4)
                                     for name in train_infection.DICE_CLASSES},
        }
    record(args.name, {"sizes": args.sizes, "runs": result})


if __name__ == "__main__":
    main()
