"""Train and evaluate the infection U-Net (none / ground-glass / consolidation).

Data (../shared/data), split by case:

* medseg_infnet/train: 50 MedSeg slices with typed labels (Inf-Net's training split; its 48 test
  slices are held out and not here). The slices carry no patient id; their names are MedSeg slice
  indices, and neighbouring indices tend to come from one patient, so validation takes a
  contiguous block, :data:`MEDSEG_VAL` (names 50-58 and 67), and slice 49, the training slice
  next to it, is left out of training as a guard.
* zenodo20_slices: infection without type (cases.csv split train / val). Their pixels are
  "infection, type unknown" (:data:`UNTYPED`): the loss asks only that ground-glass plus
  consolidation be likely there.

Inputs follow :func:`covidct.infection.model_input`: zenodo20 slices are cropped around their
case's lung masks like a study; MedSeg slices, already cropped to the chest without lung masks,
are shown whole. Augmentation: rotation, zoom, flip, shift (resampled bicubically), random
192 x 192 crop, gamma, and contrast and brightness of the intensity channel.

Loss: class-weighted cross-entropy (ground-glass and consolidation weighted :data:`CLASS_WEIGHTS`
against the background that fills ~86 % of the pixels) plus soft Dice of infection (all images)
and of each type (typed images only).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from covidct import classify, infection, lungs
from covidct.io.image import load_image
from covidct.models import UNet, UNetEnsemble
from covidct.models import weights as model_weights
from covidct.train.augment import random_affine_grid, random_crop, warp
from covidct.train.data import SliceCase, TypedSlice, load_medseg, load_ucsd, load_zenodo20
from covidct.train.loop import fit, seed_everything
from covidct.train.metrics import bootstrap_interval, dice, rounded_interval

#: Training target for infection of unknown type (zenodo20).
UNTYPED = 3
MEDSEG_VAL = ("50", "51", "52", "53", "54", "55", "56", "57", "58", "67")
MEDSEG_GUARD = ("49",)
#: Cross-entropy weights of none, ground-glass, consolidation.
CLASS_WEIGHTS = (1.0, 3.0, 3.0)
#: Each MedSeg training slice is seen this many times per epoch (50 typed vs 241 untyped slices).
MEDSEG_REPEATS = 3
#: The geometric part of :func:`augment`: arguments of :func:`covidct.train.augment.random_affine_grid`.
WARP: dict[str, float] = {"max_rotation_deg": 15.0, "max_shift": 0.05}
#: How that warp resamples the images (bilinear until 2026-12-06; benchmarks/README.md, "Sharpness").
WARP_INTERPOLATION = "bicubic"
#: Training length (100 was cross-validated: zenodo20 +0.06, MedSeg within the seed-to-seed spread,
#: but half the phantom's ground-glass missed; not shipped: benchmarks/README.md, "Training length").
EPOCHS = 50
#: The recipe starts from the shipped lung U-Net's weights (:func:`init_from_lung_model`; since
#: 2026-12-07, benchmarks/README.md "Infection segmentation").
INIT_FROM_LUNGS = "lungs"
#: Network widths compared (benchmarks/README.md, "Infection segmentation"): "compact" is the lung
#: U-Net's, "wide" doubles every level (4x the compute).
WIDTHS: dict[str, list[int]] = {"compact": [8, 16, 32, 64, 128], "wide": [16, 32, 64, 128, 256]}


def crop_labels(labels: np.ndarray, box: classify.Box) -> np.ndarray:
    """(n, y, x) integer labels cut out like :func:`covidct.classify.crop`, but 0 outside the
    image (not each slice's minimum); dtype kept."""
    y0, y1, x0, x1 = box
    n, height, width = labels.shape
    out = np.zeros((n, y1 - y0, x1 - x0), dtype=labels.dtype)
    sy0, sy1, sx0, sx1 = max(y0, 0), min(y1, height), max(x0, 0), min(x1, width)
    out[:, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = labels[:, sy0:sy1, sx0:sx1]
    return out


def label_input(labels: np.ndarray, box: classify.Box) -> torch.Tensor:
    """(n, y, x) integer labels cropped by :func:`crop_labels` and resized to 256 x 256 by
    nearest neighbour: (n, 256, 256) int64."""
    out = torch.from_numpy(crop_labels(labels, box).astype(np.float32))
    size = (infection.INPUT_SIZE, infection.INPUT_SIZE)
    return F.interpolate(out[:, None], size=size, mode="nearest")[:, 0].long()


def zenodo_box(case: SliceCase) -> classify.Box:
    """The crop box of a zenodo20 case: around its lung masks, as for a study."""
    return classify.lung_box(case.lungs)


def medseg_box(item: TypedSlice) -> classify.Box:
    """The crop box of a MedSeg slice: the whole (already chest-cropped) picture, made square, as
    :func:`covidct.segment_infection` crops every 2-D picture."""
    return infection.picture_box(item.image.shape)


def to_tensors(cases: list[SliceCase], medseg: list[TypedSlice]) -> tuple[torch.Tensor, torch.Tensor]:
    """Model inputs (N, 1, 256, 256) and targets (N, 256, 256): zenodo20 infection as
    :data:`UNTYPED`, MedSeg labels as they are."""
    xs, ys = [], []
    for case in cases:
        box = zenodo_box(case)
        xs.append(infection.model_input(case.images, False, box))
        ys.append(label_input((case.infection > 0).astype(np.uint8) * UNTYPED, box))
    for item in medseg:
        box = medseg_box(item)
        xs.append(infection.model_input(item.image[None], False, box))
        ys.append(label_input(item.mask[None], box))
    return torch.cat(xs), torch.cat(ys)


def medseg_lung_input(medseg: list[TypedSlice]) -> torch.Tensor:
    """The shipped lung model's mask of each MedSeg picture on the model's input grid: (n, 256, 256) bool."""
    lung_model = lungs.load_lung_model()
    masks = []
    for item in medseg:
        mask = lungs.picture_lung_labels(lung_model.model, item.image[None])
        masks.append(label_input((mask > 0).astype(np.uint8), medseg_box(item)) > 0)
    return torch.cat(masks) if masks else torch.zeros((0, infection.INPUT_SIZE, infection.INPUT_SIZE), dtype=torch.bool)


def paste_lesions(
    x: torch.Tensor, y: torch.Tensor, lung: torch.Tensor, donors_x: torch.Tensor, donors_y: torch.Tensor,
    gen: torch.Generator, p: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lesion copy-paste (tried, benchmarks/README.md): each item of ``x`` (n, 2, H, W) / ``y``
    (n, H, W), with probability ``p``, gets the typed lesions (labels 1, 2) of a random donor of
    ``donors_x`` / ``donors_y`` where the item is lung (``lung``, (n, H, W) bool) and unlabelled:
    both channels and the labels are copied there. Returns new tensors."""
    x, y = x.clone(), y.clone()
    chosen = torch.rand(len(x), generator=gen) < p
    donors = torch.randint(len(donors_x), (len(x),), generator=gen)
    for i in torch.nonzero(chosen).flatten().tolist():
        d = int(donors[i])
        region = ((donors_y[d] == 1) | (donors_y[d] == 2)) & lung[i] & (y[i] == 0)
        x[i][:, region] = donors_x[d][:, region]
        y[i][region] = donors_y[d][region]
    return x, y


def augment(
    x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, crop: int, intensity_gamma: float = 1.0,
    interpolation: str = WARP_INTERPOLATION,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation (±15°), zoom (0.85-1.15), flip, shift (±5 %), random ``crop`` and gamma (0.7-1.4);
    the intensity channel (1) also gets a random contrast (x0.85-1.15) and brightness (±0.05) about
    its middle, a window a little different from the "medseg" one, and with ``intensity_gamma``
    g > 1 a gamma of its own, log-uniform in [1/g, g]: the level of another window (MedSeg's
    pictures put normal lung anywhere from 25 to 117 of 255).

    ``interpolation`` resamples the images in the warp ("bilinear" or "bicubic", clipped to
    [0, 1]); labels are resampled by nearest neighbour. Every warp moves the pixel grid by a
    fraction of a pixel, so bilinear interpolation smooths every training image (it removes ~28 %
    of a MedSeg input's gradient energy, ~50 % of a zenodo20 input's; bicubic ~4 % and ~23 %),
    while inference sees the pictures unwarped."""
    n = x.shape[0]
    grid = random_affine_grid(x.shape, gen, **WARP)
    x = warp(x, grid, mode=interpolation)
    if interpolation == "bicubic":  # overshoots at edges; bilinear stays in [0, 1]
        x = x.clamp(0, 1)
    y = warp(y[:, None].float(), grid, mode="nearest")[:, 0].long()
    x, y = random_crop(gen, crop, x, y)
    u = torch.rand(n, generator=gen)
    gamma = torch.where(u < 0.5, 0.7 + 0.7 * torch.rand(n, generator=gen), torch.ones(n))[:, None, None, None]
    contrast = (0.85 + 0.3 * torch.rand(n, generator=gen))[:, None, None, None]
    brightness = (0.1 * torch.rand(n, generator=gen) - 0.05)[:, None, None, None]
    x = torch.cat([x[:, :1], (x[:, 1:] - 0.5) * contrast + 0.5 + brightness], dim=1).clamp(0, 1)
    if intensity_gamma > 1:
        level = torch.exp((2 * torch.rand(n, generator=gen) - 1) * np.log(intensity_gamma))[:, None, None]
        x = torch.stack([x[:, 0], x[:, 1] ** level], dim=1)
    return x ** gamma, y


def _soft_dice(p: torch.Tensor, t: torch.Tensor, per_image: bool = False) -> torch.Tensor:
    """Soft Dice of probabilities ``p`` against targets ``t`` (N, H, W): over the whole batch, or
    with ``per_image`` the mean over the images whose target is not empty (1 when none is)."""
    if not per_image:
        return (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
    present = t.flatten(1).sum(1) > 0
    if not present.any():
        return torch.ones((), dtype=p.dtype)
    p, t = p[present].flatten(1), t[present].flatten(1)
    return ((2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)).mean()


def loss_fn(
    logits: torch.Tensor, target: torch.Tensor, class_weights: Sequence[float] = CLASS_WEIGHTS,
    dice_per_image: bool = False,
) -> torch.Tensor:
    """Weighted cross-entropy (untyped infection: -log(p_gg + p_cons)) plus soft Dice of infection
    and, on fully typed images, of each type; the Dice terms over the batch, or with
    ``dice_per_image`` averaged over the images that show the class (as the per-image Dice that
    Inf-Net reports weighs every image alike; false positives on the others are the
    cross-entropy's to punish)."""
    logp = F.log_softmax(logits.float(), dim=1)
    weights = torch.tensor(class_weights)
    typed = target < UNTYPED
    known = target.clamp(max=2)
    nll = torch.where(
        typed,
        -logp.gather(1, known[:, None])[:, 0] * weights[known],
        -torch.logsumexp(logp[:, 1:], dim=1) * weights[1],
    )
    p = logp.exp()
    loss = nll.mean() + 1 - _soft_dice(p[:, 1] + p[:, 2], (target > 0).float(), dice_per_image)
    typed_images = typed.flatten(1).all(dim=1)
    if typed_images.any():
        pt, tt = p[typed_images], target[typed_images]
        loss = loss + sum(1 - _soft_dice(pt[:, c], (tt == c).float(), dice_per_image) for c in (1, 2)) / 2
    return loss


def split_medseg(
    items: list[TypedSlice], val: Sequence[str] = MEDSEG_VAL, guard: Sequence[str] = MEDSEG_GUARD
) -> tuple[list[TypedSlice], list[TypedSlice]]:
    """(train, val) MedSeg slices by name; the guard slices are in neither."""
    train = [s for s in items if s.name not in (*val, *guard)]
    return train, [s for s in items if s.name in val]


def medseg_folds(names: Sequence[str], k: int = 5) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """``k`` cross-validation folds of MedSeg slices by contiguous blocks of their indices.

    Neighbouring indices tend to come from one patient, so each fold validates a block of
    consecutive names (in numeric order) and guards it with the training slice on either side
    of the block, which is then left out of training as well.

    Returns
    -------
    (val names, guard names) per fold.
    """
    ordered = sorted(names, key=int)
    bounds = np.linspace(0, len(ordered), k + 1).round().astype(int)
    folds = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        guard = tuple(ordered[i] for i in (a - 1, b) if 0 <= i < len(ordered))
        folds.append((tuple(ordered[a:b]), guard))
    return folds


def epoch_items(n_zenodo: int, n_medseg: int, medseg_repeats: int) -> torch.Tensor:
    """Indices of one epoch's items: every zenodo20 slice once, then every MedSeg slice
    ``medseg_repeats`` times (the training tensors hold zenodo20's slices first).

    MedSeg's few typed slices would otherwise be outnumbered by zenodo20's untyped ones.
    """
    if medseg_repeats < 1:
        raise ValueError(f"medseg_repeats must be at least 1, got {medseg_repeats}")
    return torch.cat([torch.arange(n_zenodo), torch.arange(n_zenodo, n_zenodo + n_medseg).repeat(medseg_repeats)])


def train(
    data_dir: str | os.PathLike[str],
    out_stem: str | os.PathLike[str],
    architecture: str = "UNet",
    width: str = "compact",
    epochs: int = EPOCHS,
    batch_size: int = 16,
    lr: float = 3e-3,
    crop: int = 192,
    seed: int = 0,
    max_minutes: float | None = None,
    bf16: bool | None = None,
    medseg_val: Sequence[str] = MEDSEG_VAL,
    medseg_guard: Sequence[str] = MEDSEG_GUARD,
    class_weights: Sequence[float] = CLASS_WEIGHTS,
    dice_per_image: bool = False,
    intensity_gamma: float = 1.0,
    zenodo_intensity: bool = True,
    medseg_repeats: int = MEDSEG_REPEATS,
    warp_interpolation: str = WARP_INTERPOLATION,
    init_from_lungs: str | None = INIT_FROM_LUNGS,
    members: int = 1,
    pseudo_teacher: str | None = None,
    copy_paste: float = 0.0,
) -> dict[str, Any]:
    """Train on the training slices and save weights + model card at ``out_stem``.

    Validation Dice (MedSeg ``medseg_val``, zenodo20 ``val`` cases) is measured once, after
    training, as :func:`covidct.segment_infection` predicts (test-time flip as
    :data:`covidct.infection.TEST_TIME_FLIP`), and written into the card; it picks nothing. ``medseg_guard`` slices are in neither
    split. With ``medseg_val=()`` and ``medseg_guard=()`` all MedSeg slices train (the estimate of
    that recipe is the cross-validation of benchmarks/infection_cv.py).

    ``width`` is a key of :data:`WIDTHS`. ``bf16`` (bfloat16 autocast) defaults to where the CPU
    has native bf16 (:func:`covidct.models.weights.bf16_inference`).

    Recipe variants compared by the cross-validation (benchmarks/README.md, "Infection
    segmentation"; the defaults are the shipped recipe): ``class_weights`` of the cross-entropy,
    ``dice_per_image`` (:func:`loss_fn`), ``intensity_gamma`` (:func:`augment`),
    ``zenodo_intensity`` (False: zenodo20's intensity channel is set to 0 after augmentation, as
    its pictures exist only after CLAHE), ``medseg_repeats`` (times each MedSeg slice is seen
    per epoch), ``warp_interpolation`` (:func:`augment`) and ``init_from_lungs`` (a lung model
    card or shipped name to start from, :func:`init_from_lung_model`; None: random weights,
    the recipe before 2026-12-07).

    ``pseudo_teacher`` (a model card or shipped name; None: none, the shipped recipe) adds
    self-training: that model's labels on UCSD's COVID-19 pictures (:func:`pseudo_labelled_pictures`)
    join the typed training slices, each once per epoch.

    ``copy_paste`` is the probability that a MedSeg training item gets another's lesions pasted
    into its lung first (:func:`paste_lesions`; 0: never, the shipped recipe).

    ``members`` > 1 trains that many networks on the same data, with seeds ``seed``, ``seed + 1``,
    ..., and saves their average (:class:`~covidct.models.unet.UNetEnsemble`); member ``i`` is
    the network a single run with seed ``seed + i`` trains.

    Returns
    -------
    The model card.
    """
    if architecture != "UNet":
        raise ValueError(f"unknown infection architecture {architecture!r}; known: UNet")
    if members < 1:
        raise ValueError(f"members must be at least 1, got {members}")
    bf16 = model_weights.bf16_inference() if bf16 is None else bf16
    medseg_train, medseg_val_slices = split_medseg(load_medseg(data_dir), medseg_val, medseg_guard)
    zenodo_train, zenodo_val = load_zenodo20(data_dir, ("train",)), load_zenodo20(data_dir, ("val",))
    x_all, y_all = to_tensors(zenodo_train, medseg_train)
    n_zenodo = sum(len(c.images) for c in zenodo_train)
    n_medseg = len(x_all) - n_zenodo
    items = epoch_items(n_zenodo, n_medseg, medseg_repeats)
    medseg_lung = medseg_lung_input(medseg_train) if copy_paste > 0 else None
    n_pseudo = 0
    if pseudo_teacher is not None:
        x_pseudo, y_pseudo = pseudo_labelled_pictures(pseudo_teacher, data_dir)
        n_pseudo = len(x_pseudo)
        items = torch.cat([items, torch.arange(len(x_all), len(x_all) + n_pseudo)])
        x_all, y_all = torch.cat([x_all, x_pseudo]), torch.cat([y_all, y_pseudo])
    args = {"in_channels": infection.CHANNELS, "out_channels": 3, "features": WIDTHS[width]}
    networks, done, member_seconds = [], [], []
    for i in range(members):
        gen = seed_everything(seed + i)
        network = UNet(**args)
        if init_from_lungs is not None:
            init_from_lung_model(network, init_from_lungs)

        def batch(idx: torch.Tensor, gen: torch.Generator = gen) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
            xb, yb = x_all[idx], y_all[idx]
            if medseg_lung is not None:
                typed = torch.nonzero((idx >= n_zenodo) & (idx < n_zenodo + n_medseg)).flatten()
                if len(typed):  # xb, yb are copies (indexed by a tensor); paste_lesions returns new ones
                    donors = slice(n_zenodo, n_zenodo + n_medseg)
                    xb[typed], yb[typed] = paste_lesions(xb[typed], yb[typed], medseg_lung[idx[typed] - n_zenodo],
                                                         x_all[donors], y_all[donors], gen, copy_paste)
            xb, yb = augment(xb, yb, gen, crop, intensity_gamma, warp_interpolation)
            if not zenodo_intensity:
                xb[idx < n_zenodo, 1] = 0.0
            return xb, lambda logits: loss_fn(logits, yb, class_weights, dice_per_image)

        desc = f"train infection {i + 1}/{members}" if members > 1 else "train infection"
        epochs_done, seconds = fit(network, items, batch, gen, epochs, batch_size, lr, bf16, max_minutes, desc=desc)
        networks.append(network)
        done.append(epochs_done)
        member_seconds.append(round(seconds, 1))
    if members == 1:
        model: torch.nn.Module = networks[0]
    else:
        architecture, args = "UNetEnsemble", {"n_members": members, **args}
        model = ensemble(networks)
    metrics = {**evaluate(model, medseg_val_slices, zenodo_val, infection.TEST_TIME_FLIP),
               "test_time_flip": infection.TEST_TIME_FLIP}
    card = {
        "name": Path(out_stem).name,
        "task": "infection segmentation: 0 none, 1 ground-glass, 2 consolidation",
        "architecture": architecture,
        "architecture_args": args,
        "input": {
            "domain": infection.DOMAIN,
            "size": infection.INPUT_SIZE,
            "channels": infection.CHANNELS,
            "description": "square crop around the study's lungs (8 % margin), resized to 256x256; channel 0: "
            "HU through the lung window W1500/L-600, per-slice min-max and CLAHE; channel 1: HU through the "
            "medseg window [-1100, 150], per-slice min-max. 8-bit training pictures are taken as they are.",
        },
        "output": "3 logit channels: none, ground-glass, consolidation (softmax, most probable class)",
        "training": {
            "data": "medseg_infnet/train (MedSeg via Inf-Net, non-commercial) typed labels; zenodo20_slices "
            "(Zenodo 3757476, CC BY-NC-SA 4.0) infection without type",
            "split": {
                "medseg_train": [s.name for s in medseg_train], "medseg_val": list(medseg_val),
                "medseg_guard_unused": list(medseg_guard),
                "zenodo20_train": [c.case_id for c in zenodo_train], "zenodo20_val": [c.case_id for c in zenodo_val],
            },
            "n_train_slices": {"medseg": len(medseg_train), "zenodo20": n_zenodo,
                               **({"ucsd_pseudo_labelled": n_pseudo} if pseudo_teacher is not None else {})},
            **({"pseudo_teacher": pseudo_teacher} if pseudo_teacher is not None else {}),
            "medseg_repeats_per_epoch": medseg_repeats,
            "warp_interpolation": warp_interpolation,
            "init_from_lungs": init_from_lungs,
            "class_weights": list(class_weights),
            "dice_per_image": dice_per_image,
            **({"copy_paste": copy_paste} if copy_paste > 0 else {}),
            "intensity_gamma": intensity_gamma,
            "zenodo_intensity_channel": zenodo_intensity,
            "epochs": done[0] if members == 1 else done,
            "batch_size": batch_size,
            "lr": lr,
            "crop": crop,
            "seed": seed,
            **({} if members == 1 else {"members": members, "seeds": [seed + i for i in range(members)],
                                        "member_train_seconds": member_seconds}),
            "bf16_autocast": bf16,
            "train_seconds": round(sum(member_seconds), 1),
            "torch": torch.__version__,
        },
        "metrics": {"val": metrics},
    }
    model_weights.save(model, card, out_stem)
    return card


def pseudo_labelled_pictures(teacher: str, data_dir: str | os.PathLike[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (n, 2, 256, 256) and a teacher's labels (n, 256, 256) for UCSD's COVID-19 pictures
    of the official train and val splits (self-training, as Semi-Inf-Net; tried, benchmarks/README.md).

    Each picture is shown whole, as :func:`covidct.segment_infection` shows a 2-D picture; its
    labels are the teacher's most probable class with the test-time flip, in the input's pixels,
    with no confidence filter.
    """
    model = infection.load_infection_model(teacher).model
    xs, ys = [], []
    for item in load_ucsd(data_dir):
        if not item.covid:
            continue
        image = load_image(item.file).array.astype(np.float32)
        x = infection.model_input(image, False, infection.picture_box(image.shape[1:]))
        xs.append(x)
        ys.append(torch.max(infection.predict_probabilities(model, x, flip=True), dim=1).indices.long())
    return torch.cat(xs), torch.cat(ys)


def ensemble(networks: Sequence[UNet]) -> UNetEnsemble:
    """The :class:`~covidct.models.unet.UNetEnsemble` of trained U-Nets of one architecture
    (their weights copied; each must be unfused, as trained or as built from a card)."""
    first = networks[0]
    model = UNetEnsemble(len(networks), first.encoder[0][0].in_channels, first.head.out_channels,
                         [block[0].out_channels for block in first.encoder])
    for member, network in zip(model.members, networks):
        member.load_state_dict(network.state_dict(), strict=True)
    return model.eval()


def init_from_lung_model(model: UNet, name_or_path: str = "lungs") -> int:
    """Start the infection U-Net from a lung U-Net's weights (transfer learning from lung
    segmentation on CT slices).

    Every tensor of the same name and shape is copied. The first convolution's one input
    channel goes to channel 0 (the CLAHE channel, the lung model's own kind of input); the
    intensity channel's weights start at zero. The head (one output there, three here) keeps
    its random weights.

    Returns
    -------
    The number of tensors copied.
    """
    _, lung_state = model_weights.read_weights(name_or_path)
    own = model.state_dict()
    copied = {}
    for name, tensor in lung_state.items():
        if name not in own:
            continue
        if own[name].shape == tensor.shape:
            copied[name] = tensor
        elif name == "encoder.0.0.weight" and own[name].shape[:1] + own[name].shape[2:] == tensor.shape[:1] + tensor.shape[2:]:
            first = torch.zeros_like(own[name])
            first[:, :1] = tensor
            copied[name] = first
    if not any(name.startswith("encoder.") and tensor.is_floating_point() for name, tensor in copied.items()):
        raise ValueError(f"{name_or_path}: no tensor fits the infection U-Net (is it a lung U-Net of the same widths?)")
    model.load_state_dict(copied, strict=False)
    return len(copied)


def picture_probabilities(model: torch.nn.Module, images: np.ndarray, box: classify.Box, flip: bool = False) -> torch.Tensor:
    """Softmax (n, 3, 256, 256) for 8-bit slices (n, y, x) cropped with ``box``, in the model's
    input pixels (``flip``: see :func:`covidct.infection.predict_probabilities`)."""
    return infection.predict_probabilities(model, infection.model_input(images, False, box), flip=flip)


def predict_labels(model: torch.nn.Module, images: np.ndarray, box: classify.Box, flip: bool = False) -> np.ndarray:
    """Labels (n, y, x) for 8-bit slices cropped with ``box``, in the slices' own pixels
    (``flip``: see :func:`covidct.infection.predict_probabilities`)."""
    return infection.labels_in_slices(picture_probabilities(model, images, box, flip), box, images.shape[1:])


#: The Dice figures: binary infection and each type, as a test on a label array.
DICE_CLASSES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "infection": lambda labels: labels > 0,
    "ground_glass": lambda labels: labels == 1,
    "consolidation": lambda labels: labels == 2,
}


def medseg_counts(
    model: torch.nn.Module, medseg: list[TypedSlice], flip: bool = False
) -> dict[str, dict[str, tuple[int, int, int]]]:
    """Per MedSeg slice and class of :data:`DICE_CLASSES`: (|P ∩ T|, |P| + |T|, |T|) in pixels,
    predicting on the whole picture (no lung masks exist for them)."""
    return {item.name: class_counts(predict_labels(model, item.image[None], medseg_box(item), flip)[0], item.mask)
            for item in medseg}


def typing_counts(
    model: torch.nn.Module, medseg: list[TypedSlice], flip: bool = False
) -> dict[str, dict[str, tuple[int, int, int]]]:
    """:func:`medseg_counts` of the model's typing alone: inside the radiologists' infection each
    pixel gets the more probable of the model's two types (ground-glass or consolidation), even
    where the model says none, and outside it none. Its ground-glass and consolidation Dice say
    how well the model types the true extent; the gap to :func:`medseg_counts`' is what its
    extent costs them."""
    out = {}
    for item in medseg:
        box = medseg_box(item)
        prob = picture_probabilities(model, item.image[None], box, flip)
        consolidation = (prob[:, 2:3] > prob[:, 1:2]).float()  # (1, 1, 256, 256), else ground-glass
        scores = torch.cat([torch.zeros_like(consolidation), 1 - consolidation, consolidation], dim=1)
        labels = infection.labels_in_slices(scores, box, item.mask.shape)[0]
        out[item.name] = class_counts(np.where(item.mask > 0, labels, 0), item.mask)
    return out


def class_counts(pred: np.ndarray, truth: np.ndarray) -> dict[str, tuple[int, int, int]]:
    """Per class of :data:`DICE_CLASSES`: (|P ∩ T|, |P| + |T|, |T|) in pixels of label maps
    ``pred`` and ``truth`` (0 none, 1 ground-glass, 2 consolidation)."""
    counts = {}
    for name, test in DICE_CLASSES.items():
        p, t = test(pred), test(truth)
        counts[name] = (int((p & t).sum()), int(p.sum() + t.sum()), int(t.sum()))
    return counts


def dice_per_image(rows: Sequence[tuple[int, int, int]]) -> np.ndarray:
    """The Dice of each image whose ground truth has the class, from its (|P ∩ T|, |P| + |T|, |T|)
    counts (:func:`class_counts`); images without the class are left out (as Inf-Net reports)."""
    return np.array([2 * i / s for i, s, t in rows if t], dtype=np.float64)


def summarize_medseg(counts: dict[str, dict[str, tuple[int, int, int]]]) -> dict[str, Any]:
    """Dice per class from :func:`medseg_counts`: per image, then the mean over the images whose
    ground truth has that class (as Inf-Net reports), with a 95 % bootstrap interval of that
    mean, and pooled over all pixels of all images.

    The interval resamples images as if independent (MedSeg names no patients, and neighbouring
    slices often share one), so it is if anything too narrow."""
    per_image, pooled, intervals = {}, {}, {}
    for name in DICE_CLASSES:
        rows = [c[name] for c in counts.values()]
        dices = dice_per_image(rows)
        per_image[name] = (len(dices), round(float(np.mean(dices)), 4) if len(dices) else None)
        interval = bootstrap_interval(lambda r: float(dices[r].mean()), np.arange(len(dices)))
        intervals[name] = rounded_interval(interval)
        both = sum(s for _, s, _ in rows)
        pooled[name] = round(2 * sum(i for i, _, _ in rows) / both, 4) if both else None
    return {
        "n_slices": len(counts),
        "slices": list(counts),
        "dice_mean_per_image": {k: v[1] for k, v in per_image.items()},
        "dice_mean_per_image_ci95": intervals,
        "n_images_with_class": {k: v[0] for k, v in per_image.items()},
        "dice_pooled": pooled,
    }


def evaluate(
    model: torch.nn.Module, medseg: list[TypedSlice], zenodo: list[SliceCase], flip: bool = False
) -> dict[str, Any]:
    """Dice of infection (binary), ground-glass and consolidation (``flip``: with test-time flip).

    MedSeg: :func:`summarize_medseg` of :func:`medseg_counts`. zenodo20: binary Dice per case (its
    slices pooled), inside the case's lung masks, and the mean over cases.
    """
    start = time.monotonic()
    medseg_result = summarize_medseg(medseg_counts(model, medseg, flip))
    zenodo_dice = {}
    for case in zenodo:
        pred = predict_labels(model, case.images, zenodo_box(case), flip) * (case.lungs > 0)
        zenodo_dice[case.case_id] = round(dice(pred > 0, case.infection > 0), 4)
    n_slices = len(medseg) + sum(len(c.images) for c in zenodo)
    return {
        "medseg": medseg_result,
        "zenodo20": {
            "dice_infection_per_case": zenodo_dice,
            "dice_infection_mean": round(float(np.mean(list(zenodo_dice.values()))), 4) if zenodo_dice else None,
        },
        "slices_per_s": round(n_slices / (time.monotonic() - start), 1),
    }
