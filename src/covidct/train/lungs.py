"""Train and evaluate the lung U-Net on zenodo20_slices (split by case, cases.csv).

Augmentation follows the published pipeline (random crop, horizontal flip, normal noise added
inside the lungs with scale 0.1 / mean 0 / std 0.8 so infected lungs still segment) plus small
rotations and zoom and a random gamma, which help a model trained on 13 cases meet other
scanners. The loss is binary cross-entropy plus soft Dice.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from covidct import lungs
from covidct.models import UNet, VGG16UNet
from covidct.models import weights as model_weights
from covidct.train.augment import random_affine_grid, random_crop, warp
from covidct.train.data import SliceCase, load_zenodo20
from covidct.train.loop import fit, seed_everything
from covidct.train.metrics import dice

ARCHITECTURE_ARGS: dict[str, dict[str, Any]] = {
    "UNet": {"in_channels": 1, "out_channels": 1, "features": [8, 16, 32, 64, 128]},
    "VGG16UNet": {"in_channels": 3, "out_channels": 1},
}


def to_tensors(cases: list[SliceCase]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images through :func:`covidct.lungs.model_input` and lung masks, as (N, 1, H, W) float."""
    images = torch.cat([lungs.model_input(c.images, is_hu=False) for c in cases])
    masks = torch.cat([torch.from_numpy(c.lungs.astype(np.float32))[:, None] for c in cases])
    masks = lungs.resize_slices(masks, (lungs.MODEL_SIZE, lungs.MODEL_SIZE)).round()
    return images, masks


def insert_dense_lesions(x: torch.Tensor, lung: torch.Tensor, gen: torch.Generator, p: float) -> torch.Tensor:
    """Paint dense lesions into the lungs at their edge, leaving the lung label as it is.

    With probability ``p`` per image, one or two ellipses (semi-axes 6-36 px, soft edges) centred
    on random pixels of the lung mask's edge are blended in, clipped to the lung, at the
    brightness of the image's soft tissue (a quantile in 0.60-0.85 of the pixels outside the
    lungs) with a little texture (N(0, 0.03)). Meant to teach the model that dense consolidation
    at the lung's edge, which looks like the chest wall and which the training masks rarely
    show, is lung; tried at p = 0.5, it did not (benchmarks/README.md, "Lesions must stay lung").

    Parameters
    ----------
    x, lung : (N, 1, H, W) float
        Images in [0, 1] and their lung masks (0 / 1).
    gen : random generator
    p : probability that an image gets lesions

    Returns
    -------
    The images with lesions.
    """
    n, _, h, w = x.shape
    out = x.clone()
    edge = lung + F.max_pool2d(-lung, 3, 1, 1)  # the mask minus its erosion
    yy = torch.arange(h, dtype=torch.float32)[:, None]
    xx = torch.arange(w, dtype=torch.float32)[None, :]
    for i in range(n):
        if float(torch.rand(1, generator=gen)) >= p:
            continue
        edges = torch.nonzero(edge[i, 0] > 0)
        outside = x[i, 0][lung[i, 0] == 0]
        if len(edges) == 0 or len(outside) == 0:
            continue
        level = torch.quantile(outside, 0.60 + 0.25 * float(torch.rand(1, generator=gen)))
        alpha = torch.zeros(h, w)
        for _ in range(int(torch.randint(1, 3, (1,), generator=gen))):
            cy, cx = edges[int(torch.randint(len(edges), (1,), generator=gen))].float()
            ry, rx = (6 + 30 * torch.rand(2, generator=gen)).tolist()
            d = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
            alpha = torch.maximum(alpha, torch.sigmoid((1 - d) * 8))
        alpha = alpha * lung[i, 0]
        texture = level + 0.03 * torch.randn(h, w, generator=gen)
        out[i, 0] = x[i, 0] * (1 - alpha) + texture * alpha
    return out


def augment(
    x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, crop: int, dense_lesions: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random rotation (±10°, p 0.8), zoom (0.85-1.15, p 0.5), horizontal flip, crop to
    ``crop``, dense lesions at the lungs' edge (:func:`insert_dense_lesions`, p
    ``dense_lesions``; skipped at 0, which draws no random numbers), noise inside the lungs
    (0.1 × N(0, 0.8), p 0.5) and gamma (0.7-1.4, p 0.5)."""
    n = x.shape[0]
    grid = random_affine_grid(x.shape, gen)
    x = warp(x, grid)
    y = (warp(y, grid) > 0.5).float()
    x, y = random_crop(gen, crop, x, y)
    if dense_lesions > 0:
        x = insert_dense_lesions(x, y, gen, dense_lesions)

    def u(size: int) -> torch.Tensor:
        return torch.rand(size, generator=gen)

    noisy = (u(n) < 0.5).float()[:, None, None, None]
    x = x + noisy * y * 0.1 * torch.randn(x.shape, generator=gen) * 0.8
    gamma = torch.where(u(n) < 0.5, 0.7 + 0.7 * u(n), torch.ones(n))[:, None, None, None]
    x = x.clamp(0, 1) ** gamma
    return x, y


def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy plus soft Dice."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    inter = (p * target).sum((1, 2, 3))
    soft_dice = (2 * inter + 1) / (p.sum((1, 2, 3)) + target.sum((1, 2, 3)) + 1)
    return bce + (1 - soft_dice).mean()


def train(
    data_dir: str | os.PathLike[str],
    out_stem: str | os.PathLike[str],
    architecture: str = "UNet",
    epochs: int = 60,
    batch_size: int = 16,
    lr: float = 3e-3,
    crop: int = 192,
    seed: int = 0,
    encoder_weights: str | None = None,
    max_minutes: float | None = None,
    bf16: bool | None = None,
    dense_lesions: float = 0.0,
) -> dict[str, Any]:
    """Train on the ``train`` split and save weights + model card at ``out_stem``.

    Validation Dice is measured once, after training, on the ``val`` split (cases never seen in
    training) and written into the card; it is not used to pick epochs or settings.

    Parameters
    ----------
    data_dir : the shared data folder
    out_stem : output path without suffix (``.safetensors`` and ``.json`` are written)
    architecture : "UNet" (compact) or "VGG16UNet"
    epochs, batch_size, lr, crop, seed : training settings
    encoder_weights : optional torchvision VGG16 weights for VGG16UNet's encoder
    max_minutes : stop early after this much wall time (the card records the epochs done)
    bf16 : mixed precision (bfloat16 autocast; weights stay float32): 3-4x faster on CPUs with
        AMX/AVX-512 BF16, slower on CPUs without; default: where the CPU has native bf16
        (:func:`covidct.models.weights.bf16_inference`)
    dense_lesions : probability per training image of dense lesions painted in at the lungs'
        edge (:func:`insert_dense_lesions`); 0 for none

    Returns
    -------
    The model card.
    """
    if not 0 <= dense_lesions <= 1:
        raise ValueError(f"dense_lesions is a probability in [0, 1], got {dense_lesions}")
    bf16 = model_weights.bf16_inference() if bf16 is None else bf16
    gen = seed_everything(seed)
    train_cases = load_zenodo20(data_dir, ("train",))
    val_cases = load_zenodo20(data_dir, ("val",))
    x_all, y_all = to_tensors(train_cases)
    args = ARCHITECTURE_ARGS[architecture]
    model = UNet(**args) if architecture == "UNet" else VGG16UNet(**args)
    if encoder_weights:
        if not isinstance(model, VGG16UNet):
            raise ValueError("--encoder-weights applies to VGG16UNet only")
        model.load_encoder(encoder_weights)
    def batch(idx: torch.Tensor) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
        xb, yb = augment(x_all[idx], y_all[idx], gen, crop, dense_lesions)
        return xb, lambda logits: loss_fn(logits, yb)

    done, train_s = fit(model, torch.arange(len(x_all)), batch, gen, epochs, batch_size, lr, bf16, max_minutes,
                        desc=f"train lungs ({architecture})")
    metrics = evaluate(model, val_cases)
    card = {
        "name": Path(out_stem).name,
        "task": "lung segmentation (binary, split into right/left by post-processing)",
        "architecture": architecture,
        "architecture_args": args,
        "input": {
            "domain": lungs.DOMAIN,
            "size": lungs.MODEL_SIZE,
            "channels": 1,
            "description": "per-slice: HU clipped to [-1024, 1024] (HU input only), resized to 256x256, "
            "min-max to [0, 1], CLAHE 8x8 tiles clip 7/256",
        },
        "output": "1 logit channel: lung",
        "threshold": 0.5,
        "training": {
            "data": "zenodo20_slices (Ma et al., Zenodo 3757476, CC BY-NC-SA 4.0), 8-bit CLAHE 256x256 slices",
            "split": {"train": [c.case_id for c in train_cases], "val": [c.case_id for c in val_cases]},
            "n_train_slices": int(len(x_all)),
            "epochs": done,
            "batch_size": batch_size,
            "lr": lr,
            "crop": crop,
            "dense_lesions": dense_lesions,
            "seed": seed,
            "bf16_autocast": bf16,
            "encoder_weights": os.path.basename(encoder_weights) if encoder_weights else None,
            "train_seconds": round(train_s, 1),
            "torch": torch.__version__,
        },
        "metrics": {"val": metrics},
    }
    model_weights.save(model, card, out_stem)
    return card


def predict_case(model: torch.nn.Module, case: SliceCase) -> np.ndarray:
    """Cleaned lung masks (any lung, bool) for each slice of a case, slice by slice (the slices
    of a zenodo case are not contiguous, so each is cleaned on its own)."""
    raw = lungs.predict_mask(model, case.images, is_hu=False, progress=False)
    return np.stack([lungs.clean_lungs(m[None])[0] > 0 for m in raw])


def evaluate(model: torch.nn.Module, cases: list[SliceCase]) -> dict[str, Any]:
    """Dice per case (all its slices pooled) and the mean over cases; slices per second."""
    per_case = {}
    start, n = time.monotonic(), 0
    for case in cases:
        pred = predict_case(model, case)
        per_case[case.case_id] = round(dice(pred, case.lungs > 0), 4)
        n += len(case.images)
    seconds = time.monotonic() - start
    return {
        "dice_per_case": per_case,
        "dice_mean": round(float(np.mean(list(per_case.values()))), 4),
        "n_cases": len(cases),
        "n_slices": n,
        "slices_per_s_256": round(n / seconds, 1),
    }
