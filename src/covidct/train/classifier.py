"""Train and evaluate the slice classifier (Normal / COVID-19 / CAP).

Data (all from ../shared/data), split by patient / case / study, never by slice:

* ucsd_covid_ct: official train split for training, official val split for validation (the
  official lists share no patient); COVID -> "COVID-19", NonCOVID -> "Normal" (NonCOVID images
  show no COVID-19; a few show other disease, which this label cannot say);
* zenodo20_slices: every slice shows COVID-19 infection -> "COVID-19"; cases.csv split;
* covid_ct_md: slices inside the lungs, labelled by the radiologists' per-slice infection
  column: infected slices of P001 -> "COVID-19", of cap001 -> "CAP", all others "Normal".
  With one study per class, a covid_ct_md study is either trained on or validated on
  (``val_studies``): the shipped model holds out P001 (``--val-study P001``), so that its
  figure for an unseen study of that source is a measurement, and trains on cap001 and
  normal001. cap001 is the only CAP study there is: CAP is learnt from 30 slices of one
  patient, and an estimate for it could only come from a model that saw no CAP at all.
* zenodo20's training slices are not labelled for the shipped model
  (``exclude_train_sources``); their infection masks serve the lesion pretraining.

With ``pretrain_lesions`` (the shipped recipe), each network's encoder first learns to segment
infection on zenodo20's masks and the Normal slices (:func:`pretrain_on_lesions`), and the
stages through ``layer2`` stay frozen while the labels are learnt: that is what puts the
Grad-CAM evidence on the infection.

Classes are weighted by inverse frequency in the loss. Augmentation follows the published
pipeline: rotation ±10° (p 0.8), zoom (p 0.5), horizontal flip, random crop (shift), plus a
random gamma; ``quality_augment`` adds a loss of resolution and a narrower display window
(:func:`degrade_quality`; tried, not shipped).

The operating thresholds on p_abnormal = 1 - p(Normal) are chosen on the validation split and
stored in the model card: ``threshold`` (Youden's J over all its slices; used for CT in HU) and
``picture_threshold`` (Youden's J over its 8-bit pictures; used for 2-D pictures, whose input path
is calibrated differently). AUCs do not depend on them, but sensitivity and specificity on the
same split are optimistic for that reason.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F
from tqdm import tqdm

import covidct
from covidct import classify, localize, lungs
from covidct.models import ARCHITECTURES
from covidct.models.resnet import LesionHead
from covidct.models import weights as model_weights
from covidct.train import metrics
from covidct.train.augment import random_affine_grid, warp
from covidct.train.data import COVID_CT_MD_STUDIES, SliceCase, load_ucsd, load_zenodo20, read_slice_labels
from covidct.train.loop import fit, seed_everything

log = logging.getLogger(__name__)

NORMAL, COVID, CAP = range(3)
ARCHITECTURE_ARGS: dict[str, dict[str, Any]] = {
    "CompactResNet": {"num_classes": 3, "in_channels": 1, "widths": [24, 48, 96, 192], "blocks": [2, 2, 2, 2]},
    "ResNet50": {"num_classes": 3, "in_channels": 3},
}


FIELDS = ("images", "masks", "infection", "labels", "source", "group", "split")
#: The one source read in Hounsfield units; the others are 8-bit pictures.
HU_SOURCE = "covid_ct_md"


@dataclass(frozen=True, eq=False)
class SliceSet:
    """Prepared classifier inputs with labels and provenance, one row per slice/image."""

    images: np.ndarray  # (n, 224, 224) float16 in [0, 1], classify.model_input output
    masks: np.ndarray  # (n, 224, 224) bool, classify.lung_input_mask output (all True: no lung found)
    infection: np.ndarray  # (n, 224, 224) bool, radiologists' infection mask where the source has one (zenodo20)
    labels: np.ndarray  # (n,) int64 class index into classify.CLASSES
    source: np.ndarray  # (n,) "ucsd" | "zenodo20" | "covid_ct_md"
    group: np.ndarray  # (n,) patient / case / study id
    split: np.ndarray  # (n,) "train" | "val"

    def subset(self, keep: np.ndarray) -> SliceSet:
        return SliceSet(*(getattr(self, f)[keep] for f in FIELDS))

    def __len__(self) -> int:
        return len(self.labels)


def _ucsd_rows(data_dir: Path, lung_model: model_weights.LoadedModel) -> list[tuple]:
    rows = []
    for item in tqdm(load_ucsd(data_dir), desc="prepare ucsd", unit="image", disable=None, leave=False):
        image = np.asarray(Image.open(item.file).convert("L"), dtype=np.float32)[None]
        mask = lungs.picture_lung_labels(lung_model.model, image)
        box = classify.lung_box(mask)
        x = classify.model_input(image, is_hu=False, box=box)
        m = classify.lung_input_mask(mask, box)
        if m.mean() < classify.MIN_LUNG_FRACTION:
            m = torch.ones_like(m)
        group = item.patient_id or f"ucsd-unknown:{item.file.name}"
        rows.append((x, m, None, COVID if item.covid else NORMAL, "ucsd", group, item.split))
    return rows


def _zenodo_rows(data_dir: Path) -> list[tuple]:
    rows = []
    for case in load_zenodo20(data_dir):
        box = classify.lung_box(case.lungs)
        x = classify.model_input(case.images, is_hu=False, box=box)
        m = classify.lung_input_mask(case.lungs, box)
        inf = classify.lung_input_mask(case.infection * (case.lungs > 0), box, dilate_px=0)
        for xi, mi, ii in zip(x, m, inf):
            rows.append((xi[None], mi[None], ii[None], COVID, "zenodo20", case.case_id, case.split))
    return rows


def _covid_ct_md_rows(data_dir: Path, lung_model: model_weights.LoadedModel) -> list[tuple]:
    rows = []
    root = data_dir / "covid_ct_md"
    for folder, study, infected_class in COVID_CT_MD_STUDIES:
        volume = covidct.load(root / folder / study)
        labels = read_slice_labels(root / folder / f"{study}_slice_labels.csv")
        masks = lungs.segment_lungs(volume, lung_model)
        box = classify.lung_box(masks.labels)
        for start in range(0, volume.shape[0], 32):
            idx = [i for i in masks.lung_slices if start <= i < start + 32]
            if not idx:
                continue
            x = classify.model_input(volume.array[idx], volume.is_hu, box)
            m = classify.lung_input_mask(masks.labels[idx], box)
            for xi, mi, i in zip(x, m, idx):
                infected = labels[round(volume.meta.slice_z_mm[i], 1)]
                rows.append((xi[None], mi[None], None, infected_class if infected else "Normal", "covid_ct_md", study,
                             "train"))
    return [(x, m, i, classify.CLASSES.index(c), *rest) for x, m, i, c, *rest in rows]


def build_slice_set(
    data_dir: str | os.PathLike[str],
    cache: str | os.PathLike[str] | None = None,
    val_studies: tuple[str, ...] = (),
    ucsd_val_patients: tuple[str, ...] | None = None,
    ucsd_unused_patients: tuple[str, ...] = (),
) -> SliceSet:
    """Prepare every labelled slice of the shared data through :func:`covidct.classify.model_input`.

    Lung crops come from the shipped lung model (zenodo20: its own lung masks). ucsd and
    zenodo20 keep their published splits; covid_ct_md studies named in ``val_studies`` are
    validation, the others training. With ``ucsd_val_patients`` (a cross-validation fold,
    :func:`ucsd_patient_folds`), ucsd's train and val images are pooled and those patients'
    images validate instead of the official val split; ``ucsd_unused_patients`` (a learning
    curve's left-out folds) are in neither split. With ``cache``, the prepared arrays are
    read from / written to that ``.npz`` file (about 130 MB).
    """
    return assign_splits(_prepare(data_dir, cache), val_studies, ucsd_val_patients, ucsd_unused_patients)


def assign_splits(
    data: SliceSet, val_studies: tuple[str, ...] = (), ucsd_val_patients: tuple[str, ...] | None = None,
    ucsd_unused_patients: tuple[str, ...] = (),
) -> SliceSet:
    """``data`` with its split column set as :func:`build_slice_set` describes: covid_ct_md
    studies in ``val_studies`` validate, the others train; ucsd keeps the official split unless
    ``ucsd_val_patients`` is given (then those patients validate, every other ucsd image trains);
    ``ucsd_unused_patients``' images get the split "unused" (neither trained on nor validated);
    zenodo20 keeps its published split."""
    split = data.split.astype("U6")  # room for "unused"
    is_md = data.source == HU_SOURCE
    split[is_md] = np.where(np.isin(data.group[is_md], list(val_studies)), "val", "train")
    if ucsd_val_patients is not None:
        is_ucsd = data.source == "ucsd"
        split[is_ucsd] = np.where(np.isin(data.group[is_ucsd], list(ucsd_val_patients)), "val", "train")
    split[(data.source == "ucsd") & np.isin(data.group, list(ucsd_unused_patients))] = "unused"
    return SliceSet(data.images, data.masks, data.infection, data.labels, data.source, data.group, split)


def ucsd_patient_folds(data: SliceSet, n_folds: int = 5, seed: int = 0) -> list[tuple[str, ...]]:
    """ucsd's patients (official train and val pooled) dealt into ``n_folds`` folds for
    cross-validation by patient: each class's patients shuffled (``seed``) and dealt in turn, so
    every fold holds about the same share of COVID-19 patients. Images without a patient id are
    their own patient (``ucsd-unknown:FILE``; 143 of 543). Returns each fold's patient ids."""
    is_ucsd = data.source == "ucsd"
    groups, labels = data.group[is_ucsd], data.labels[is_ucsd]
    rng = np.random.default_rng(seed)
    folds: list[list[str]] = [[] for _ in range(n_folds)]
    turn = 0
    for covid in (False, True):
        patients = np.unique(groups[(labels == COVID) == covid])
        for patient in rng.permutation(patients):
            folds[turn % n_folds].append(str(patient))
            turn += 1
    return [tuple(sorted(f)) for f in folds]


def _prepare(data_dir: str | os.PathLike[str], cache: str | os.PathLike[str] | None) -> SliceSet:
    if cache is not None and Path(cache).is_file():
        with np.load(cache, allow_pickle=False) as z:
            if set(FIELDS) <= set(z.files):  # else a cache of an older layout: prepared again
                return SliceSet(*(z[f] for f in FIELDS))
    data_dir = Path(data_dir)
    lung_model = lungs.load_lung_model()
    rows = _ucsd_rows(data_dir, lung_model) + _zenodo_rows(data_dir) + _covid_ct_md_rows(data_dir, lung_model)
    out = SliceSet(
        images=torch.cat([r[0] for r in rows])[:, 0].numpy().astype(np.float16),
        masks=torch.cat([r[1] for r in rows])[:, 0].numpy() > 0,
        infection=np.stack([np.zeros(r[0].shape[-2:], bool) if r[2] is None else r[2][0, 0].numpy() > 0 for r in rows]),
        labels=np.array([r[3] for r in rows], dtype=np.int64),
        source=np.array([r[4] for r in rows]),
        group=np.array([r[5] for r in rows]),
        split=np.array([r[6] for r in rows]),
    )
    if cache is not None:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **{f: getattr(out, f) for f in FIELDS})
    return out


def describe(data: SliceSet) -> dict[str, Any]:
    """Slice counts per split, source and class (what the model card reports)."""
    out: dict[str, Any] = {}
    for split in ("train", "val"):
        for source in np.unique(data.source):
            keep = (data.split == split) & (data.source == source)
            if keep.any():
                counts = np.bincount(data.labels[keep], minlength=3)
                out.setdefault(split, {})[str(source)] = {
                    "slices": int(keep.sum()),
                    "groups": int(len(np.unique(data.group[keep]))),
                    **{c: int(n) for c, n in zip(classify.CLASSES, counts)},
                }
    return out


def inputs(data: SliceSet, lung_masked: bool) -> torch.Tensor:
    """Model inputs (n, 1, 224, 224) float32 of a slice set, zero outside the lungs if asked."""
    x = data.images.astype(np.float32)
    if lung_masked:
        x *= data.masks
    return torch.from_numpy(x)[:, None]


def augment(x: torch.Tensor, gen: torch.Generator, masks: torch.Tensor | None = None,
            interpolation: str = "bilinear", quality: bool = False) -> torch.Tensor:
    """Rotation ±10° (p 0.8), zoom 0.85-1.15 (p 0.5), horizontal flip (p 0.5) and a random
    shift of up to 8 % (the published random crop), then a random gamma 0.8-1.25 (p 0.5).

    ``interpolation`` resamples the images in the warp: "bilinear" or "bicubic" (sharper: a
    warp moves the grid by a fraction of a pixel, and bilinear interpolation smooths every
    training image, which inference never does). With ``quality``, :func:`degrade_quality` comes
    between the warp and the gamma (its draws only then: without it, the draws are as before).
    With ``masks`` (N, 1, H, W), they are warped (bilinear) by the same draws and returned after
    the images (as a tuple); the draws do not depend on them.
    """
    grid = random_affine_grid(x.shape, gen, max_shift=0.08)
    x = warp(x, grid, mode=interpolation)
    if quality:
        x = degrade_quality(x, gen)
    n = x.shape[0]
    gamma = torch.where(torch.rand(n, generator=gen) < 0.5, 0.8 + 0.45 * torch.rand(n, generator=gen), torch.ones(n))
    x = x.clamp(0, 1) ** gamma[:, None, None, None]
    return x if masks is None else (x, warp(masks, grid))


def degrade_quality(x: torch.Tensor, gen: torch.Generator, p_resolution: float = 0.5, max_factor: float = 3.0,
                    p_window: float = 0.5) -> torch.Tensor:
    """The picture-quality augmentation (``--quality-augment``): pictures cut from papers come
    at many resolutions and display windows.

    Per image, with probability ``p_resolution`` a loss of resolution (area-downsampled by a
    factor uniform in 1-``max_factor``, then bilinearly upsampled back), and with probability
    ``p_window`` a narrower display window (values ``a``-``b`` stretched to 0-1 and clipped,
    ``a`` uniform in 0-0.15, ``b`` in 0.8-1). Pixels that were 0 (outside the lung mask) stay 0.

    Parameters
    ----------
    x : (N, 1, H, W) float in [0, 1]
    gen : all draws come from it

    Returns
    -------
    (N, 1, H, W) float in [0, 1], a new tensor.
    """
    n, size = x.shape[0], x.shape[-2:]
    u = torch.rand(n, 4, generator=gen)
    factor = 1 + (max_factor - 1) * torch.rand(n, generator=gen)
    low, high = 0.15 * u[:, 2], 0.8 + 0.2 * u[:, 3]
    out = []
    for i in range(n):
        xi = x[i : i + 1]
        if u[i, 0] < p_resolution:
            small = [max(1, round(s / float(factor[i]))) for s in size]
            xi = F.interpolate(F.interpolate(xi, size=small, mode="area"), size=size, mode="bilinear",
                               align_corners=False)
        if u[i, 1] < p_window:
            xi = ((xi - low[i]) / (high[i] - low[i])).clamp(0, 1)
        out.append(xi)
    return torch.cat(out) * (x > 0)


def attention_loss(acts: list[torch.Tensor], score: torch.Tensor, infection: torch.Tensor,
                   rows: torch.Tensor | None = None) -> torch.Tensor:
    """How much of each slice's Grad-CAM lies outside its infection: the guided-attention term.

    For every layer, the Grad-CAM of ``score`` (:func:`covidct.localize.layer_cam`, as
    :func:`covidct.localize.gradcam` uses it) is built with its graph kept, so that the loss
    trains both the activations and their weights; the infection mask is area-averaged to the
    layer's grid. The loss is 1 - (map mass inside the infection) / (map mass), averaged over
    slices and layers: 0 when every map lies inside the infection, 1 when none of it does
    (or when the map is empty, so that silencing the map does not pay).

    Parameters
    ----------
    acts : the layers' activations (N, C, h, w) in the graph of ``score``
    score : (n,) the abnormality score of the slices ``rows`` (its log-odds)
    infection : (n, 1, H, W) float in [0, 1], masks of the slices ``rows``
    rows : (N,) bool, the slices of ``acts`` that ``score`` and ``infection`` are of (default all)
    """
    grads = torch.autograd.grad(score.sum(), acts, create_graph=True)
    losses = []
    for act, grad in zip(acts, grads):
        if rows is not None:
            act, grad = act[rows], grad[rows]
        cam = localize.layer_cam(act, grad)
        inside = F.adaptive_avg_pool2d(infection, cam.shape[-2:])[:, 0]
        share = (cam * inside).flatten(1).sum(1) / cam.flatten(1).sum(1).clamp_min(1e-12)
        losses.append(1 - share.mean())
    return torch.stack(losses).mean()


#: What a lesion-pretrained encoder keeps frozen while the classifier learns: the stem and the
#: stages through ``layer2``, the finer Grad-CAM layer, so that its channels stay infection
#: features; ``layer3`` (the coarser one), ``layer4`` and the head learn the labels. Freezing
#: ``layer3`` too localizes as well and classifies worse, and so does slowing it to a tenth of the
#: learning rate (``layer3_lr_factor``; README, "Slice classifier").
LESION_FROZEN = ("conv1", "bn1", "layer1", "layer2")


#: :func:`covidct.train.loop.fit` settings of both classifier trainers (:func:`train_network`,
#: :func:`pretrain_on_lesions`); batch norm needs batches of two.
FIT_SETTINGS: dict[str, Any] = {"weight_decay": 1e-2, "warmup": 0.15, "min_batch": 2}


def lesion_rows(data: SliceSet) -> np.ndarray:
    """Training slices for lesion pretraining, (n,) bool: those with an infection mask (zenodo20)
    and those labelled Normal (an empty mask is their truth). Abnormal slices without a mask are
    left out: where their infection lies is unknown."""
    return (data.split == "train") & (data.infection.any(axis=(1, 2)) | (data.labels == NORMAL))


def lesion_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy plus soft Dice (over the batch) of infection on the head's grid.

    ``logits`` (N, 1, h, w); ``target`` (N, 1, h, w) the infected fraction of each cell."""
    logits = logits.float()
    p = torch.sigmoid(logits)
    dice = (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    return F.binary_cross_entropy_with_logits(logits, target) + 1 - dice


def pretrain_on_lesions(
    network: torch.nn.Module,
    x: torch.Tensor,
    infection: torch.Tensor,
    gen: torch.Generator,
    epochs: int = 30,
    batch_size: int = 32,
    lr: float = 2e-3,
    bf16: bool = True,
    max_minutes: float | None = None,
    desc: str = "pretrain on lesions",
    interpolation: str = "bilinear",
    quality_augment: bool = False,
) -> int:
    """Train a ResNet's stem and ``layer1``-``layer3`` in place to segment infection through a
    :class:`~covidct.models.resnet.LesionHead` (transfer learning from pixel labels), with the
    classifier's augmentation (:func:`augment`, warping with ``interpolation``, with
    :func:`degrade_quality` if ``quality_augment``) and optimizer settings.

    Parameters
    ----------
    network : a ResNet (its ``layer4`` and ``fc`` are left as they are)
    x : (N, 1, 224, 224) inputs from :func:`inputs`
    infection : (N, 1, 224, 224) float 0/1 infection masks (all zero on normal slices)

    Returns
    -------
    The number of epochs done.
    """
    head = LesionHead(network)
    channels = network.in_channels

    def batch(idx: torch.Tensor) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
        xb, mb = augment(x[idx], gen, infection[idx], interpolation, quality_augment)
        target = F.adaptive_avg_pool2d(mb, (xb.shape[-2] // 8, xb.shape[-1] // 8)).clamp(0, 1)
        return xb.expand(-1, channels, -1, -1), lambda logits: lesion_loss(logits, target)

    done, _ = fit(head, torch.arange(len(x)), batch, gen, epochs, batch_size, lr, bf16, max_minutes, desc,
                  **FIT_SETTINGS)
    return done


def class_weights(labels: np.ndarray) -> torch.Tensor:
    """Inverse-frequency class weights, normalized to mean 1 over the classes present."""
    counts = np.bincount(labels, minlength=3).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / (counts > 0).sum(), 0.0)
    return torch.tensor(w, dtype=torch.float32)


def train_network(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    gen: torch.Generator,
    epochs: int = 30,
    batch_size: int = 32,
    lr: float = 2e-3,
    bf16: bool = True,
    max_minutes: float | None = None,
    desc: str = "train classifier",
    infection: torch.Tensor | None = None,
    guided: torch.Tensor | None = None,
    attention_weight: float = 0.0,
    classified: torch.Tensor | None = None,
    frozen: tuple[str, ...] = (),
    interpolation: str = "bilinear",
    mixup_alpha: float = 0.0,
    quality_augment: bool = False,
    lr_factors: dict[str, float] | None = None,
) -> int:
    """Train one network in place: AdamW (weight decay 1e-2), one-cycle learning rate,
    class-weighted cross-entropy with label smoothing 0.05, :func:`augment` on every batch.

    Parameters
    ----------
    model : network taking (N, model.in_channels, 224, 224)
    x : (N, 1, 224, 224) inputs from :func:`inputs`
    y : (N,) class indices
    gen : augmentation and shuffling draws
    max_minutes : stop after the epoch that passes this much time
    infection : (N, 1, 224, 224) infection masks (float 0/1), where ``guided``
    guided : (N,) bool, slices whose Grad-CAM is trained to lie inside ``infection``
        (:func:`attention_loss` on :data:`covidct.localize.GRADCAM_LAYERS`, weighted by ``attention_weight``)
    classified : (N,) bool, slices the cross-entropy sees (default all); a guided slice left out
        of it still trains where the network looks, not what it answers
    frozen : names of the network's modules left as they are during this training (no gradient,
        batch norm statistics kept): :data:`LESION_FROZEN` after :func:`pretrain_on_lesions`
    interpolation : of the augmentation's warp (:func:`augment`)
    mixup_alpha : above 0, mixup (Zhang et al. 2018): each augmented batch is blended with a
        shuffled copy of itself, ``lam * x + (1 - lam) * x[shuffled]`` with one ``lam ~ Beta(alpha,
        alpha)`` per batch, and the loss is the same blend of the cross-entropies of both labels;
        not with guided attention
    quality_augment : add :func:`degrade_quality` to the augmentation
    lr_factors : module name -> factor on ``lr`` (:func:`covidct.train.loop.fit`)

    Returns
    -------
    The number of epochs done.
    """
    if mixup_alpha < 0:
        raise ValueError("mixup_alpha must not be negative")
    channels = model.in_channels
    classified = torch.ones(len(y), dtype=torch.bool) if classified is None else classified
    loss_weights = class_weights(y[classified].numpy())
    every_slice_classified = bool(classified.all())
    guiding = attention_weight > 0 and guided is not None and bool(guided.any())
    if mixup_alpha > 0 and (guiding or not every_slice_classified):
        raise ValueError("mixup needs every slice classified and no guided attention (a blend has no one mask)")
    layers = localize.GRADCAM_LAYERS if guiding else ()
    # mixup's Beta draws: a generator with ``gen``'s seed (reading the seed leaves ``gen``'s draws as they are)
    mix = np.random.default_rng(gen.initial_seed()) if mixup_alpha > 0 else None
    labels_loss = partial(F.cross_entropy, weight=loss_weights, label_smoothing=0.05)
    kept = [getattr(model, name) for name in frozen]
    for module in kept:
        module.requires_grad_(False)

    def batch(idx: torch.Tensor) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
        for module in kept:  # fit() puts the whole network in training mode every epoch
            module.eval()
        yb, cb = y[idx], classified[idx].float()
        if guiding:
            xb, mb = augment(x[idx], gen, infection[idx], interpolation, quality_augment)
            gb = guided[idx]
        else:
            xb = augment(x[idx], gen, interpolation=interpolation, quality=quality_augment)
        if mix is not None:
            lam = float(mix.beta(mixup_alpha, mixup_alpha))
            other = torch.randperm(len(idx), generator=gen)
            xb = lam * xb + (1 - lam) * xb[other]
        xb = xb.expand(-1, channels, -1, -1)

        def loss_of(logits: torch.Tensor) -> torch.Tensor:
            if mix is not None:
                return lam * labels_loss(logits, yb) + (1 - lam) * labels_loss(logits, yb[other])
            if every_slice_classified:
                loss = labels_loss(logits, yb)
            else:  # the same weighted mean over the classified slices only (the branch above stays
                # for the unguided case: its float rounding reproduces the shipped weights bit for bit)
                ce = labels_loss(logits, yb, reduction="none")
                loss = (ce * cb).sum() / (loss_weights[yb] * cb).sum().clamp_min(1e-6)
            if guiding and gb.any():
                # log-odds of abnormal: its gradient is log p_abnormal's (what localize explains) times
                # p(Normal) > 0, so the same maps, but it does not vanish once the slice is learnt
                score = torch.logsumexp(logits[gb, NORMAL + 1 :], dim=1) - logits[gb, NORMAL]
                loss = loss + attention_weight * attention_loss([acts[n] for n in layers], score, mb[gb], gb)
            return loss

        return xb, loss_of

    with localize.recorded_activations(model, layers) as acts:
        done, _ = fit(model, torch.arange(len(x)), batch, gen, epochs, batch_size, lr, bf16, max_minutes, desc,
                      lr_factors=lr_factors, **FIT_SETTINGS)
    for module in kept:  # frozen for this training only: Grad-CAM needs their activations' gradients after it
        module.requires_grad_(True)
    return done


#: With a map check, :func:`train` draws at most this many networks per member it keeps.
MAP_CHECK_DRAWS_PER_MEMBER = 3


class MapCheckFailed(RuntimeError):
    """Too few of the networks drawn passed :func:`train`'s map check."""


def training_pointing(network: torch.nn.Module, cases: list[SliceCase], lung_masked: bool) -> float:
    """The pointing game of a network's Grad-CAM maps over slices with infection masks, pooled.

    The map check of :func:`train` on zenodo20's training slices
    (:func:`covidct.localize.picture_maps` with the given lung masks,
    :func:`covidct.localize.map_scores`; slices whose map is empty do not count), the figure
    ``zenodo20_train.pointing`` of ``benchmarks/localization.py --training-masks``.

    Parameters
    ----------
    network : the classifier network, in eval mode
    cases : :class:`~covidct.train.data.SliceCase` list (images, lung and infection masks)
    lung_masked : the network's input shows only the lungs

    Returns
    -------
    The share of the scored slices whose map peaks inside the infection (0 when none is scored).
    """
    hits: list[float] = []
    for c in cases:
        maps = localize.picture_maps(network, c.images, c.lungs, lung_masked)
        hits += localize.map_scores(maps, c.lungs, c.infection)["pointing"]
    return float(np.mean(hits)) if hits else 0.0


def train(
    data_dir: str | os.PathLike[str],
    out_stem: str | os.PathLike[str],
    architecture: str = "CompactResNet",
    epochs: int = 30,
    batch_size: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
    weights: str | None = None,
    max_minutes: float | None = None,
    bf16: bool | None = None,
    cache: str | os.PathLike[str] | None = None,
    val_studies: tuple[str, ...] = (),
    lung_masked: bool = True,
    members: int = 1,
    exclude_train_sources: tuple[str, ...] = (),
    attention_weight: float = 0.0,
    attention_only_sources: tuple[str, ...] = (),
    pretrain_lesions: bool = False,
    warp_interpolation: str = "bilinear",
    ucsd_val_patients: tuple[str, ...] | None = None,
    ucsd_unused_patients: tuple[str, ...] = (),
    picture_threshold: float | None = None,
    mixup_alpha: float = 0.0,
    quality_augment: bool = False,
    layer3_lr_factor: float = 1.0,
    map_check: float | None = None,
) -> dict[str, Any]:
    """Train on the train split and save weights + model card at ``out_stem``.

    The validation split is used once, after training: metrics and the operating threshold.

    Parameters
    ----------
    data_dir : the shared data folder
    out_stem : output path without suffix
    architecture : "CompactResNet" or "ResNet50"
    epochs, batch_size, lr, seed : training settings
    weights : torchvision ResNet-50 weights for the backbone (``--arch ResNet50`` only)
    max_minutes : stop after this much training time (the card records the epochs done)
    bf16 : bfloat16 autocast (weights stay float32); default: where the CPU has native bf16
        (:func:`covidct.models.weights.bf16_inference`)
    cache : optional ``.npz`` of the prepared slices (see :func:`build_slice_set`)
    val_studies : covid_ct_md studies to validate on instead of training on
    lung_masked : show the model only the (dilated) lungs, zero elsewhere
    members : CompactResNet only: train this many networks, with seeds ``seed``, ``seed + 1``,
        ..., and save their average (:class:`~covidct.models.resnet.CompactResNetEnsemble`)
    exclude_train_sources : sources whose train split is not trained on (their validation split
        is still evaluated). The shipped classifier leaves out zenodo20, whose slices are all
        infected: trained on, its look alone meant "abnormal" (a source shortcut)
    attention_weight : weight of the guided-attention term (:func:`attention_loss`) on the
        training slices with infection masks (zenodo20); 0 trains on the labels alone
    attention_only_sources : sources whose training slices train the guided-attention term only,
        not the cross-entropy (where the network looks on them, not what it answers)
    pretrain_lesions : CompactResNet only: first train each network's encoder to segment
        infection (:func:`pretrain_on_lesions` on :func:`lesion_rows`: zenodo20's masks and
        Normal slices as empty masks; zenodo20 whether or not it is excluded from the class
        labels), then train the classifier on top with
        :data:`LESION_FROZEN` frozen
    warp_interpolation : how the augmentation's warp resamples the images (:func:`augment`):
        "bilinear" or "bicubic"
    ucsd_val_patients : ucsd patients to validate on instead of the official val split (a fold of
        :func:`ucsd_patient_folds`; the other patients of train and val train); None: official splits;
        ``()``: every ucsd image trains (a refit on all of UCSD, whose estimate for pictures is the
        cross-validation of benchmarks/classifier_cv.py)
    ucsd_unused_patients : ucsd patients neither trained on nor validated (a learning curve: the
        recipe trained on less data); none as shipped
    picture_threshold : the 8-bit pictures' operating threshold when no validation picture is
        left to choose it on (``ucsd_val_patients=()``): the Youden point of the recipe's
        cross-validated out-of-fold probabilities (benchmarks/classifier_cv.py); None: chosen on
        the validation pictures
    mixup_alpha : mixup of the label training (:func:`train_network`); 0: none (as shipped)
    quality_augment : add the picture-quality augmentation (:func:`degrade_quality`) to the
        lesion pretraining and the label training; False as shipped
    layer3_lr_factor : with ``pretrain_lesions``: the lesion-pretrained ``layer3`` (the coarser
        Grad-CAM layer, which the label training does not freeze) learns the labels at this
        factor of ``lr`` (0 < factor <= 1; 1 as shipped)
    map_check : keep only networks whose Grad-CAM maps point at the infection on zenodo20's
        training slices at least this often (:func:`training_pointing`, 0 < value <= 1); a network
        below it is set aside and the next seed drawn, at most
        :data:`MAP_CHECK_DRAWS_PER_MEMBER` draws per member (else :class:`MapCheckFailed`, nothing
        written). Whether a network's maps localize varies with its seed and its training data
        (benchmarks/README.md: in two of five cross-validation folds no network of three passed);
        these masks are no held-out measure (the lesion pretraining trained on them, the label
        training never saw them) but rank the networks' held-out pointing. None: no check

    Returns
    -------
    The model card.
    """
    if weights and architecture != "ResNet50":
        raise ValueError("--weights (torchvision ImageNet weights) applies to --arch ResNet50 only")
    if members > 1 and architecture != "CompactResNet":
        raise ValueError("--members applies to --arch CompactResNet only")
    if attention_weight < 0:
        raise ValueError("--attention-weight must not be negative")
    if attention_only_sources and attention_weight == 0:
        raise ValueError("--attention-only-source needs --attention-weight above 0")
    if set(attention_only_sources) & set(exclude_train_sources):
        raise ValueError("a source cannot be both excluded and trained for attention only")
    if mixup_alpha < 0:
        raise ValueError("--mixup-alpha must not be negative")
    if mixup_alpha > 0 and attention_weight > 0:
        raise ValueError("--mixup-alpha does not go with --attention-weight (a blended slice has no one infection mask)")
    if pretrain_lesions and architecture != "CompactResNet":
        raise ValueError("--pretrain-lesions applies to --arch CompactResNet only")
    if not 0 < layer3_lr_factor <= 1:
        raise ValueError("--layer3-lr-factor must lie in (0, 1]")
    if layer3_lr_factor != 1 and not pretrain_lesions:
        raise ValueError("--layer3-lr-factor needs --pretrain-lesions (it slows the pretrained layer3)")
    if map_check is not None and not 0 < map_check <= 1:
        raise ValueError("--map-check must lie in (0, 1]")
    bf16 = model_weights.bf16_inference() if bf16 is None else bf16
    if set(ucsd_unused_patients) & set(ucsd_val_patients or ()):
        raise ValueError("a ucsd patient cannot both validate and be unused")
    all_ucsd = ucsd_val_patients is not None and not ucsd_val_patients
    if (picture_threshold is not None) != all_ucsd:
        raise ValueError("--picture-threshold goes with --all-ucsd, and --all-ucsd needs it: "
                         "no validation picture is left to choose the pictures' threshold on")
    if picture_threshold is not None and not 0 < picture_threshold < 1:
        raise ValueError("--picture-threshold must lie between 0 and 1")
    data = build_slice_set(data_dir, cache, val_studies, ucsd_val_patients, ucsd_unused_patients)
    if pretrain_lesions:  # before the exclusion: zenodo20's masks serve even when its labels do not
        lesion_set = data.subset(lesion_rows(data))
        lesion_x = inputs(lesion_set, lung_masked)
        lesion_masks = torch.from_numpy(lesion_set.infection[:, None].astype(np.float32))
    if exclude_train_sources:
        data = data.subset(~(np.isin(data.source, list(exclude_train_sources)) & (data.split == "train")))
    train_set, val_set = data.subset(data.split == "train"), data.subset(data.split == "val")
    args = ARCHITECTURE_ARGS[architecture]
    x_all = inputs(train_set, lung_masked)
    y_all = torch.from_numpy(train_set.labels)
    guidance: dict[str, Any] = {}
    if attention_weight > 0:
        guidance = {
            "attention_weight": attention_weight,
            "guided": torch.from_numpy(train_set.infection.any(axis=(1, 2))),
            "infection": torch.from_numpy(train_set.infection[:, None].astype(np.float32)),
            "classified": torch.from_numpy(~np.isin(train_set.source, list(attention_only_sources))),
        }
    lr_factors = {"layer3": layer3_lr_factor} if layer3_lr_factor != 1 else None
    check_cases = load_zenodo20(data_dir, ("train",)) if map_check is not None else []
    start, done, lesion_epochs = time.monotonic(), 0, 0
    networks: list[torch.nn.Module] = []
    seeds: list[int] = []
    draws: list[dict[str, Any]] = []
    draw_seed = seed - 1
    while len(networks) < members:
        draw_seed += 1
        if len(draws) >= members * MAP_CHECK_DRAWS_PER_MEMBER:
            raise MapCheckFailed(f"{len(seeds)} of {len(draws)} networks drawn passed the map check "
                                 f"(pointing >= {map_check}): {draws}; nothing written")
        gen = seed_everything(draw_seed)
        network = ARCHITECTURES[architecture](**args)
        if weights:
            network.load_backbone(weights)
        member = f" {len(networks) + 1}/{members}" if members > 1 else ""
        frozen: tuple[str, ...] = ()
        if pretrain_lesions:
            lesion_epochs = pretrain_on_lesions(network, lesion_x, lesion_masks, gen, epochs, batch_size, lr, bf16,
                                                max_minutes, desc=f"pretrain on lesions{member}",
                                                interpolation=warp_interpolation,
                                                quality_augment=quality_augment)
            frozen = LESION_FROZEN
        desc = f"train classifier ({architecture}{member})"
        done = train_network(network, x_all, y_all, gen, epochs, batch_size, lr, bf16, max_minutes, desc,
                             frozen=frozen, interpolation=warp_interpolation, mixup_alpha=mixup_alpha,
                             quality_augment=quality_augment, lr_factors=lr_factors, **guidance)
        if map_check is not None:
            pointing = training_pointing(network, check_cases, lung_masked)
            draws.append({"seed": draw_seed, "pointing": round(pointing, 3), "kept": pointing >= map_check})
            if pointing < map_check:
                log.warning("map check: seed %d points at the infection on %.3f of zenodo20's training slices "
                            "(< %g): set aside, drawing seed %d", draw_seed, pointing, map_check, draw_seed + 1)
                continue
        networks.append(network)
        seeds.append(draw_seed)
    train_s = time.monotonic() - start
    if members > 1:
        architecture, args = "CompactResNetEnsemble", {"n_members": members, **args}
        model = ARCHITECTURES[architecture](**args)
        for member, network in zip(model.members, networks):
            member.load_state_dict(network.state_dict())
        model.eval()
    else:
        model = networks[0]
    # Operating thresholds are chosen in float32, the reference every CPU reproduces: under bf16
    # the pooled Youden point moved 0.856 -> 0.825 (a flat stretch of the ROC).
    probs = classify.predict_probabilities(model, inputs(val_set, lung_masked), bf16=False)
    threshold = metrics.youden_threshold(1 - probs[:, NORMAL], val_set.labels != NORMAL)
    if picture_threshold is None:
        picture_threshold = _picture_threshold(probs, val_set)
        picture_rule = ("Youden's J on p_abnormal over the validation 8-bit pictures with both classes "
                        "(ucsd val; used for 2-D pictures, whose input path is calibrated differently)")
    else:
        picture_rule = ("given: Youden's J on p_abnormal over the recipe's cross-validated out-of-fold ucsd "
                        "probabilities (benchmarks/classifier_cv.py), as every ucsd picture trained this model; "
                        "used for 2-D pictures")
    card = {
        "name": Path(out_stem).name,
        "task": "slice classification: Normal / COVID-19 / CAP; p_abnormal = 1 - p(Normal)",
        "classes": list(classify.CLASSES),
        "architecture": architecture,
        "architecture_args": args,
        "input": {
            "domain": classify.DOMAIN,
            "size": classify.INPUT_SIZE,
            "channels": args["in_channels"],
            "lung_masked": lung_masked,
            "description": "square lung-box crop (8% margin), HU through the lung window W1500/L-600, "
            "resized to 224x224, per-slice min-max and CLAHE; grayscale repeated to the model's channels"
            + ("; zero outside the lung mask (dilated 4 px)" if lung_masked else ""),
        },
        "threshold": round(threshold, 4),
        "threshold_rule": "Youden's J on p_abnormal over the validation split (used for CT in HU)",
        "picture_threshold": None if picture_threshold is None else round(picture_threshold, 4),
        "picture_threshold_rule": picture_rule,
        "case_threshold": case_threshold(probs, val_set, round(threshold, 4)),
        "training": {
            "data": ("ucsd_covid_ct official train/val" if ucsd_val_patients is None else
                     "ucsd_covid_ct train and val pooled, all training" if all_ucsd else
                     "ucsd_covid_ct train and val pooled, the ucsd_val_patients validating")
            + " (Zhao et al. 2020, research use); zenodo20_slices "
            "(Ma et al., CC BY-NC-SA 4.0) cases.csv split; covid_ct_md (Afshar et al. 2021, CC BY 4.0)",
            "val_studies": list(val_studies),
            "ucsd_val_patients": None if ucsd_val_patients is None else sorted(ucsd_val_patients),
            "ucsd_unused_patients": sorted(ucsd_unused_patients),
            "excluded_train_sources": list(exclude_train_sources),
            "attention_weight": attention_weight,
            "attention_only_sources": list(attention_only_sources) if attention_weight > 0 else [],
            "caveat": "CAP: one study (cap001, 30 infected slices) is all the CAP data there is; CAP is "
            "not validated and the CAP probability is weakly supported",
            "counts": describe(data),
            "class_weights": [round(float(w), 3) for w in class_weights(train_set.labels)],
            "members": members,
            "seeds": seeds,
            "map_check": {
                "min_pointing": map_check,
                "data": "zenodo20_slices train split: pointing game of the Grad-CAM maps (the lesion pretraining "
                "trained on these masks, the label training did not)",
                "draws": draws,
            } if map_check is not None else None,
            "epochs": done,
            "batch_size": batch_size,
            "lr": lr,
            "seed": seed,
            "bf16_autocast": bf16,
            "warp_interpolation": warp_interpolation,
            "mixup_alpha": mixup_alpha,
            "quality_augment": quality_augment,
            "layer3_lr_factor": layer3_lr_factor,
            "backbone_weights": os.path.basename(weights) if weights else None,
            "lesion_pretraining": {
                "slices": describe(lesion_set),
                "with_infection_mask": int(lesion_set.infection.any(axis=(1, 2)).sum()),
                "epochs": lesion_epochs,
                "frozen": list(LESION_FROZEN),
                "head": "LesionHead: 1x1 read-outs of layer2 and layer3, 28x28 grid; BCE + soft Dice",
            } if pretrain_lesions else None,
            "train_seconds": round(train_s, 1),
            "torch": torch.__version__,
        },
        "metrics": {"val": evaluate_probabilities(probs, val_set, threshold, picture_threshold)},
    }
    model_weights.save(model, card, out_stem, half=True)  # float16 on disk: half the size, same AUCs (README)
    return card


def _picture_threshold(probs: np.ndarray, data: SliceSet) -> float | None:
    """Youden's J over the 8-bit (non-HU) validation pictures, None without both classes."""
    pictures = data.source != HU_SOURCE
    abnormal = data.labels[pictures] != NORMAL
    if not abnormal.any() or abnormal.all():
        return None
    return metrics.youden_threshold(1 - probs[pictures, NORMAL], abnormal)


def evaluate_probabilities(probs: np.ndarray, data: SliceSet, threshold: float,
                           picture_threshold: float | None = None) -> dict[str, Any]:
    """Metrics per data source and pooled, for probabilities ``probs`` of the rows of ``data``.

    * ucsd: AUC of p(COVID-19) for COVID vs NonCOVID (the dataset's task) and of p_abnormal;
    * covid_ct_md: AUC of p_abnormal for slices with vs without infection (radiologist labels);
    * zenodo20: sensitivity only (every slice is infected);
    * sensitivity / specificity of p_abnormal >= the threshold of the row's kind: ``threshold``
      for HU slices, ``picture_threshold`` (when given) for 8-bit pictures, as at inference;
      pooled 3-class confusion matrix;
    * a 95 % bootstrap interval of every AUC (:func:`auc_interval`): patients resampled for ucsd,
      blocks of consecutive slices for the covid_ct_md studies (:func:`resampling_units`).
    """
    p_abnormal = 1 - probs[:, NORMAL]
    abnormal = data.labels != NORMAL
    row_threshold = np.where(data.source == HU_SOURCE, threshold,
                             threshold if picture_threshold is None else picture_threshold)
    units = resampling_units(data)
    out: dict[str, Any] = {"threshold": round(threshold, 4), "sources": {},
                           "picture_threshold": None if picture_threshold is None else round(picture_threshold, 4)}
    for source in np.unique(data.source):
        keep = data.source == source
        sens, spec = metrics.sensitivity_specificity(p_abnormal[keep], abnormal[keep], row_threshold[keep])
        row: dict[str, Any] = {
            "slices": int(keep.sum()),
            "groups": sorted(set(data.group[keep].tolist())) if source != "ucsd" else int(len(np.unique(data.group[keep]))),
            "positives": int(abnormal[keep].sum()),
            "auc_abnormal": _round(metrics.roc_auc(p_abnormal[keep], abnormal[keep])),
            "auc_abnormal_ci95": auc_interval(p_abnormal[keep], abnormal[keep], units[keep]),
            "sensitivity": _round(sens),
            "specificity": _round(spec),
        }
        if source == "ucsd":
            row["auc_covid"] = _round(metrics.roc_auc(probs[keep, COVID], data.labels[keep] == COVID))
            row["auc_covid_ci95"] = auc_interval(probs[keep, COVID], data.labels[keep] == COVID, units[keep])
        row["ci95_resampled"] = (f"blocks of {SLICE_BLOCK} consecutive slices of each study" if source == HU_SOURCE
                                 else "patients")
        out["sources"][str(source)] = row
    sens, spec = metrics.sensitivity_specificity(p_abnormal, abnormal, row_threshold)
    out["pooled"] = {
        "slices": len(data),
        "auc_abnormal": _round(metrics.roc_auc(p_abnormal, abnormal)),
        "sensitivity": _round(sens),
        "specificity": _round(spec),
        "confusion_matrix": {
            "rows_truth_columns_predicted": list(classify.CLASSES),
            "counts": metrics.confusion_matrix(data.labels, probs.argmax(1), 3).tolist(),
        },
    }
    return out


#: A single study's slices are resampled in blocks of this many consecutive slices (2 cm at
#: COVID-CT-MD's 2 mm), since neighbouring slices look alike (:func:`auc_interval`).
SLICE_BLOCK = 10


def resampling_units(data: SliceSet) -> np.ndarray:
    """What :func:`auc_interval` resamples for each row: the patient (``group``) for the 8-bit
    sources, whose images of one patient are alike; for the CT studies, which are few (one here),
    blocks of :data:`SLICE_BLOCK` consecutive slices of a study (rows are in slice order), since
    neighbouring slices look alike. The studies' interval shows how much the AUC depends on which
    parts of them were drawn, not how it would vary from study to study."""
    units = data.group.astype(object).copy()
    for study in np.unique(data.group[data.source == HU_SOURCE]):
        rows = np.flatnonzero((data.source == HU_SOURCE) & (data.group == study))
        units[rows] = [f"{study}:{i // SLICE_BLOCK}" for i in range(len(rows))]
    return units


def auc_interval(scores: np.ndarray, truth: np.ndarray, units: np.ndarray) -> list[float] | None:
    """95 % percentile-bootstrap interval of the ROC AUC (:func:`covidct.train.metrics.bootstrap_interval`),
    resampling ``units`` (:func:`resampling_units`) whole; None when one class is missing."""
    truth = np.asarray(truth, dtype=bool)
    if truth.all() or not truth.any():
        return None
    interval = metrics.bootstrap_interval(lambda rows: metrics.roc_auc(scores[rows], truth[rows]), units)
    return metrics.rounded_interval(interval)


def case_threshold(probs: np.ndarray, data: SliceSet, slice_threshold: float) -> dict[str, Any]:
    """The positive-slice ratio above which a study is called abnormal, from validation data.

    Only the held-out HU studies (covid_ct_md in the validation split) are studies; the 8-bit
    sources are single images or infected slices only. A normal study is expected to show the
    false-positive rate of the held-out slices without infection; an abnormal study shows its
    own positive-slice ratio (the lowest over held-out abnormal studies). The threshold is the
    midpoint of the two. With one held-out study this is a rough estimate, and it says so.

    Returns
    -------
    ``{"threshold": float | None, "normal_slice_fp_rate", "abnormal_study_ratio", "studies"}``;
    threshold None when the validation split holds no abnormal HU study or the two overlap.
    """
    keep = data.source == HU_SOURCE
    positive = (1 - probs[:, NORMAL]) >= slice_threshold
    studies = sorted(set(data.group[keep].tolist()))
    normal_rows = keep & (data.labels == NORMAL)
    fp_rate = float(positive[normal_rows].mean()) if normal_rows.any() else float("nan")
    ratios = {}
    for study in studies:
        rows = keep & (data.group == study)
        if (data.labels[rows] != NORMAL).any():
            ratios[study] = float(positive[rows].mean())
    lowest = min(ratios.values()) if ratios else float("nan")
    threshold = (fp_rate + lowest) / 2 if ratios and fp_rate == fp_rate and lowest > fp_rate else None
    return {
        "threshold": None if threshold is None else round(threshold, 4),
        "normal_slice_fp_rate": _round(fp_rate),
        "abnormal_study_ratio": {k: round(v, 4) for k, v in ratios.items()},
        "studies": studies,
        "rule": "midpoint of the false-positive rate on held-out HU slices without infection and the "
        "lowest positive-slice ratio of held-out abnormal HU studies",
    }


def _round(value: float) -> float | None:
    return None if value != value else round(float(value), 4)


def evaluate(
    model: model_weights.LoadedModel, data_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str],
    cache: str | os.PathLike[str] | None = None,
    val_studies: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Evaluate a classifier on the validation split (covid_ct_md studies: ``val_studies``,
    default those the model card names as not trained on; ucsd: the card's split, so a model
    trained on every ucsd picture is evaluated on none); write ``classifier_metrics.json`` and
    ``classifier_roc.png`` into ``out_dir``. Returns the metrics."""
    import json

    from covidct.report.figures import roc_figure

    training = model.card["training"]
    if val_studies is None:
        val_studies = tuple(training.get("val_studies", ()))
    ucsd_val = training.get("ucsd_val_patients")  # never a picture the model trained on
    data = build_slice_set(data_dir, cache, val_studies, None if ucsd_val is None else tuple(ucsd_val),
                           tuple(training.get("ucsd_unused_patients", ())))
    val_set = data.subset(data.split == "val")
    x = inputs(val_set, bool(model.card["input"].get("lung_masked", False)))
    start = time.monotonic()
    probs = classify.predict_probabilities(model.model, x)
    seconds = time.monotonic() - start
    picture = model.card.get("picture_threshold")
    result = evaluate_probabilities(probs, val_set, float(model.card["threshold"]),
                                    None if picture is None else float(picture))
    result["model"] = {"name": model.name, "sha256": model.sha256}
    result["slices_per_s_224"] = round(len(val_set) / seconds, 1)
    curves = {}
    for source in np.unique(val_set.source):
        keep = val_set.source == source
        truth = val_set.labels[keep] != NORMAL
        if truth.all() or not truth.any():
            continue
        fpr, tpr, _ = metrics.roc_curve(1 - probs[keep, NORMAL], truth)
        curves[f"{source} (AUC {result['sources'][str(source)]['auc_abnormal']:.3f})"] = (fpr, tpr)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    roc_figure(curves, "p_abnormal, validation split").savefig(out / "classifier_roc.png", dpi=120)
    (out / "classifier_metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
