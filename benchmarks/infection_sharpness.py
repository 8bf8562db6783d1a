"""How sharp the infection model's training inputs are, and how sharpness at inference moves its Dice.

    python benchmarks/infection_sharpness.py --folds DIR [--name NAME]

Every training image passes through the augmentation's warp (:func:`covidct.train.infection.augment`),
which moves the pixel grid by a fraction of a pixel and so interpolates; inference sees the
pictures unwarped. Two measurements:

* ``gradient_energy_kept``: the mean squared difference of neighbouring pixels after the
  training warp (:data:`covidct.train.infection.WARP`, 3 draws each) as a share of before, for
  bilinear and bicubic interpolation, on the training inputs of each source (all 50 MedSeg
  slices, zenodo20's training cases); and the Gaussian sigma (pixels of the 256 x 256 input) that
  removes as much from the MedSeg inputs as the bilinear warp does.
* Dice of the fold models of ``benchmarks/infection_cv.py --keep DIR`` when the inputs are
  smoothed at inference (that Gaussian sigma, and 0.7) or averaged over test-time rotations
  (0, ±5°, ±10°, each with the flip; the rotation resamples the input too): MedSeg through the
  fold model that never saw each slice (pooled as in the cross-validation), zenodo20 val whole
  and in its lung masks' box and cut (mean over cases, then over the 5 models). ``as_shipped``
  is what :func:`covidct.segment_infection` does.

A probe, not a shipped path: no smoothing or rotation is applied in covidct. Writes
results/NAME.json (default infection_sharpness).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _common import DATA, fold_models_arguments, record
from torch.nn import functional as F

from covidct import classify, infection
from covidct.train import infection as train_infection
from covidct.train.augment import random_affine_grid, warp
from covidct.train.data import load_medseg, load_zenodo20
from covidct.train.metrics import dice

ROTATIONS_DEG = (0.0, -5.0, 5.0, -10.0, 10.0)


def gradient_energy(x: torch.Tensor) -> float:
    """Mean squared difference of neighbouring pixels along both image axes of (N, C, H, W)."""
    return float(((x[..., 1:, :] - x[..., :-1, :]) ** 2).mean() + ((x[..., :, 1:] - x[..., :, :-1]) ** 2).mean())


def gaussian_smooth(x: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Separable Gaussian of (N, C, H, W) over the image axes, radius round(3 sigma), edges replicated."""
    radius = int(3 * sigma_px + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(t**2) / (2 * sigma_px**2))
    kernel /= kernel.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def energy_kept_by_warp(x: torch.Tensor, mode: str, gen: torch.Generator) -> float:
    """Share of ``x``'s gradient energy left after one draw of the training warp resampled with ``mode``."""
    warped = warp(x, random_affine_grid(x.shape, gen, **train_infection.WARP), mode=mode).clamp(0, 1)
    return round(gradient_energy(warped) / gradient_energy(x), 3)


def matching_sigma(x: torch.Tensor, kept: float) -> float:
    """The Gaussian sigma (bisection, to 0.005 px) that keeps the share ``kept`` of ``x``'s gradient energy."""
    low, high, base = 0.3, 1.5, gradient_energy(x)
    while high - low > 0.005:
        mid = (low + high) / 2
        low, high = (mid, high) if gradient_energy(gaussian_smooth(x, mid)) / base > kept else (low, mid)
    return round((low + high) / 2, 2)


def rotation_average(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Softmax (with the flip) averaged over :data:`ROTATIONS_DEG`: each rotated input's prediction is
    rotated back (bilinear, border values) before averaging."""
    n, size = len(x), x.shape[-1]
    total = torch.zeros(n, 3, size, size)
    for degrees in ROTATIONS_DEG:
        a = math.radians(degrees)
        theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]]).expand(n, 2, 3)
        back = torch.tensor([[math.cos(a), math.sin(a), 0.0], [-math.sin(a), math.cos(a), 0.0]]).expand(n, 2, 3)
        rotated = F.grid_sample(x, F.affine_grid(theta, [n, 2, size, size], align_corners=False), align_corners=False)
        prob = infection.predict_probabilities(model, rotated, flip=True)
        total += F.grid_sample(prob, F.affine_grid(back, [n, 3, size, size], align_corners=False),
                               padding_mode="border", align_corners=False)
    return total / len(ROTATIONS_DEG)


def main() -> None:
    args = fold_models_arguments(__doc__, "infection_sharpness")
    medseg = load_medseg(DATA)
    zenodo_train, zenodo_val = load_zenodo20(DATA, ("train",)), load_zenodo20(DATA, ("val",))

    inputs = {
        "medseg": torch.cat([infection.model_input(m.image[None], False, train_infection.medseg_box(m)) for m in medseg]),
        "zenodo20_train": torch.cat([infection.model_input(c.images, False, train_infection.zenodo_box(c))
                                     for c in zenodo_train]),
    }
    gen = torch.Generator().manual_seed(0)
    kept = {source: {mode: [energy_kept_by_warp(x, mode, gen) for _ in range(3)] for mode in ("bilinear", "bicubic")}
            for source, x in inputs.items()}
    sigma = matching_sigma(inputs["medseg"], float(np.mean(kept["medseg"]["bilinear"])))

    predictors: dict[str, Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]] = {
        "as_shipped": lambda m, x: infection.predict_probabilities(m, x, flip=True),
        f"smoothed_sigma_{sigma}": lambda m, x: infection.predict_probabilities(m, gaussian_smooth(x, sigma), flip=True),
        "smoothed_sigma_0.7": lambda m, x: infection.predict_probabilities(m, gaussian_smooth(x, 0.7), flip=True),
        "rotations_0_5_10": rotation_average,
    }
    counts: dict[str, dict] = {name: {} for name in predictors}
    zenodo: dict[str, dict[str, list[float]]] = {name: {"whole": [], "lung_box_and_cut": []} for name in predictors}

    def labels(predict: Callable, model: torch.nn.Module, images: np.ndarray, box: classify.Box) -> np.ndarray:
        return infection.labels_in_slices(predict(model, infection.model_input(images, False, box)), box, images.shape[1:])

    for k, (val, guard) in enumerate(train_infection.medseg_folds([s.name for s in medseg]), 1):
        model = infection.load_infection_model(str(Path(args.folds) / f"infection_fold{k}.json")).model
        _, val_slices = train_infection.split_medseg(medseg, val, guard)
        for name, predict in predictors.items():
            for item in val_slices:
                pred = labels(predict, model, item.image[None], train_infection.medseg_box(item))[0]
                counts[name][item.name] = train_infection.class_counts(pred, item.mask)
            whole = [dice(labels(predict, model, c.images, infection.picture_box(c.images.shape[1:])) > 0,
                          c.infection > 0) for c in zenodo_val]
            cut = [dice((labels(predict, model, c.images, train_infection.zenodo_box(c)) * (c.lungs > 0)) > 0,
                        c.infection > 0) for c in zenodo_val]
            zenodo[name]["whole"].append(float(np.mean(whole)))
            zenodo[name]["lung_box_and_cut"].append(float(np.mean(cut)))
    record(args.name, {
        "folds": str(args.folds),
        "gradient_energy_kept_by_the_training_warp": kept,
        "gaussian_sigma_px_matching_the_bilinear_warp_on_medseg": sigma,
        "predictions": {
            name: {
                "medseg": {key: value for key, value in train_infection.summarize_medseg(counts[name]).items()
                           if key != "slices"},
                "zenodo20_val_mean_dice": {way: round(float(np.mean(v)), 4) for way, v in zenodo[name].items()},
                "zenodo20_val_mean_dice_per_fold_model": {way: [round(x, 4) for x in v] for way, v in zenodo[name].items()},
            }
            for name in predictors
        },
    })


if __name__ == "__main__":
    main()
