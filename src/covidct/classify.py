"""Slice classification: Normal / COVID-19 / CAP probabilities for every axial slice.

Model input domain ("lungcrop-lungwindow-clahe-224")
-----------------------------------------------------
Two of the three training sources are 8-bit images without HU (UCSD COVID-CT cut from papers,
mostly shown in a lung window; zenodo20_slices, min-max + CLAHE), so every input is mapped into
one grayscale domain by :func:`model_input`:

* crop the lung region: a square box around the lung mask (the union over the volume's slices,
  so neighbouring slices share one crop), 8 % margin, padded with the image minimum where the
  box leaves the image; the whole image when no lung is found;
* HU only: the radiological lung window W1500/L-600 (the 8-bit sources are lung-window pictures);
* resize to 224 x 224 (area averaging when shrinking);
* per-slice min-max and CLAHE (:func:`covidct.windowing.minmax_clahe`), as the zenodo20 slices
  were made: the CLAHE look then says nothing about which source (and label) an image came from;
* lung masking (when the model card says ``lung_masked``): zero outside the lung mask, cropped and
  resized like the image and dilated by 4 pixels so pleural lesions stay in view. Without it the
  model learnt the sources' anatomy and framing instead of the lungs: with P001 held out, its
  slice AUC there was 0.51 unmasked and 0.85 masked (README, "Slice classifier"). Where the lung
  model finds no lung (a tightly cropped 2-D picture), the whole crop is shown, as in training.

One channel; the ResNet-50 takes it repeated to three (ImageNet weights expect RGB). A
multi-window stack (lung / mediastinum / wide) would exist only for the HU source and would let
the model tell sources apart, so it is not used.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from covidct.lungs import LungMasks, resize_slices, segment_lungs
from covidct.models import weights as model_weights
from covidct.volume import Volume
from covidct.windowing import apply_window, minmax_clahe

#: Class order everywhere in covidct.
CLASSES = ("Normal", "COVID-19", "CAP")
INPUT_SIZE = 224
DOMAIN = "lungcrop-lungwindow-clahe-224"
#: Margin added on every side of the lung box, as a fraction of its larger side.
BOX_MARGIN = 0.08
#: The lung mask limiting what the model sees grows by this much (pixels at 224) first.
LUNG_MASK_DILATION_PX = 4
#: Below this fraction of the image, a lung mask is not trusted for cropping.
MIN_LUNG_FRACTION = 0.01

Box = tuple[int, int, int, int]


def lung_box(lung_mask: np.ndarray, margin: float = BOX_MARGIN) -> Box:
    """Square crop box ``(y0, y1, x0, x1)`` around a lung mask.

    Parameters
    ----------
    lung_mask : (z, y, x) or (y, x) array
        Nonzero where lung; the box covers the union over slices.
    margin : float
        Added on every side, as a fraction of the larger side of the lung's bounding box.

    Returns
    -------
    The box in pixel coordinates of the slice; it may extend beyond the image (crops pad). The
    whole image (made square) when the mask covers less than :data:`MIN_LUNG_FRACTION` of it.
    """
    mask = np.asarray(lung_mask)
    plane = mask.reshape(-1, *mask.shape[-2:]).any(axis=0)
    height, width = plane.shape
    if plane.sum() < MIN_LUNG_FRACTION * height * width:
        y0, y1, x0, x1 = 0, height, 0, width
    else:
        rows, cols = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        grow = margin * max(y1 - y0, x1 - x0)
        y0, y1, x0, x1 = y0 - grow, y1 + grow, x0 - grow, x1 + grow
    side = max(y1 - y0, x1 - x0)
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    top, left = int(round(cy - side / 2)), int(round(cx - side / 2))
    side = int(round(side))
    return top, top + side, left, left + side


def crop(slices: np.ndarray, box: Box) -> np.ndarray:
    """Cut ``box`` out of (n, y, x) slices, padding with each slice's minimum outside them;
    float32 (only the box is converted)."""
    y0, y1, x0, x1 = box
    n, height, width = slices.shape
    out = np.empty((n, y1 - y0, x1 - x0), dtype=np.float32)
    out[:] = slices.reshape(n, -1).min(axis=1)[:, None, None]
    sy0, sy1, sx0, sx1 = max(y0, 0), min(y1, height), max(x0, 0), min(x1, width)
    if sy1 > sy0 and sx1 > sx0:
        out[:, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = slices[:, sy0:sy1, sx0:sx1]
    return out


def uncrop(x: np.ndarray | torch.Tensor, box: Box, shape: tuple[int, int], mode: str) -> np.ndarray:
    """Put (n, s, s) model-resolution slices back into slices of ``shape`` (y, x): the inverse of
    :func:`crop` and the resize in :func:`model_input`; zero outside the box, dtype kept.

    ``mode`` is torch's interpolation: "bilinear" for maps, "nearest-exact" for labels.
    """
    y0, y1, x0, x1 = box
    side = y1 - y0
    options = {"align_corners": False} if mode == "bilinear" else {}
    resized = F.interpolate(torch.as_tensor(x)[:, None], size=(side, side), mode=mode, **options)[:, 0].numpy()
    height, width = shape
    out = np.zeros((len(resized), height, width), dtype=resized.dtype)
    sy0, sy1, sx0, sx1 = max(y0, 0), min(y1, height), max(x0, 0), min(x1, width)
    if sy1 > sy0 and sx1 > sx0:
        out[:, sy0:sy1, sx0:sx1] = resized[:, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0]
    return out


def model_input(slices: np.ndarray, is_hu: bool, box: Box, size: int = INPUT_SIZE) -> torch.Tensor:
    """Map slices into the classifier's input domain (see module docstring).

    Parameters
    ----------
    slices : (n, y, x) ndarray
        HU when ``is_hu``, 8-bit (or other) intensities otherwise.
    is_hu : bool
    box : crop box from :func:`lung_box`
    size : int
        Side of the output (224 for the classifier; the infection model uses the same domain at
        256).

    Returns
    -------
    (n, 1, size, size) float32 tensor in [0, 1].
    """
    x = crop(np.asarray(slices), box)
    if is_hu:
        x = apply_window(x, "lung")
    t = resize_slices(torch.from_numpy(x)[:, None], (size, size))
    return torch.from_numpy(minmax_clahe(t[:, 0].numpy()))[:, None]


def lung_input_mask(lung_mask: np.ndarray, box: Box, dilate_px: int = LUNG_MASK_DILATION_PX) -> torch.Tensor:
    """The lung mask of (n, y, x) slices in model-input coordinates: cropped like the image,
    resized to 224 x 224 and dilated by ``dilate_px`` (in-plane, 4-connected: a diamond of that
    radius); (n, 1, 224, 224) float32 of 0/1."""
    m = crop(np.asarray(lung_mask) > 0, box)
    t = (resize_slices(torch.from_numpy(m)[:, None], (INPUT_SIZE, INPUT_SIZE)) > 0.25).float()
    for _ in range(dilate_px):  # one step of a 3 x 3 cross: the max of a 1 x 3 and a 3 x 1 window
        t = torch.maximum(F.max_pool2d(t, (1, 3), stride=1, padding=(0, 1)),
                          F.max_pool2d(t, (3, 1), stride=1, padding=(1, 0)))
    return t


def predict_probabilities(
    model: torch.nn.Module, x: torch.Tensor, batch_size: int = 32, bf16: bool | None = None
) -> np.ndarray:
    """Softmax class probabilities (n, 3) for prepared inputs (n, 1, 224, 224); ``bf16`` as for
    :func:`covidct.models.weights.inference`."""
    if len(x) == 0:
        return np.zeros((0, len(CLASSES)), dtype=np.float32)
    return model_weights.predict_softmax(model, x, batch_size, bf16).numpy()


def slice_inputs(volume: Volume, lungs: LungMasks, indices: np.ndarray, lung_masked: bool) -> torch.Tensor:
    """Classifier inputs (n, 1, 224, 224) for the slices ``indices`` of a volume.

    The crop box comes from the whole study's lungs, so every slice shares it. With
    ``lung_masked`` (the model card's ``input.lung_masked``) everything outside the dilated lung
    mask is zero, unless the lung model found (almost) no lung: a tightly cropped 2-D picture
    it fails on is then shown whole, as in training.
    """
    box = lung_box(lungs.footprint)
    x = model_input(volume.array[indices], volume.is_hu, box)
    if lung_masked and lungs.footprint.mean() >= MIN_LUNG_FRACTION:
        x = x * lung_input_mask(lungs.labels[indices], box)
    return x


def classify_slices(
    volume: Volume,
    lungs: LungMasks | None = None,
    model: model_weights.LoadedModel | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """Probabilities of Normal, COVID-19 and CAP for every slice of a volume.

    Parameters
    ----------
    volume : Volume
        HU volume or a 2-D image (``is_hu=False``, one slice).
    lungs : LungMasks, optional
        Lung masks for the crop; segmented when not given.
    model : LoadedModel, optional
        Defaults to the shipped ``classifier`` weights.
    batch_size : int
        Slices per forward pass (memory stays bounded by one batch).

    Returns
    -------
    (z, 3) float32 array, rows summing to 1, columns in :data:`CLASSES` order;
    p_abnormal = 1 - column 0.
    """
    model = model or load_classifier()
    lungs = lungs if lungs is not None else segment_lungs(volume)
    masked = bool(model.card["input"].get("lung_masked", False))
    out = np.empty((volume.shape[0], len(CLASSES)), dtype=np.float32)
    starts = range(0, volume.shape[0], batch_size)
    for start in tqdm(starts, desc="classify", unit="batch", disable=None, leave=False):
        idx = np.arange(start, min(start + batch_size, volume.shape[0]))
        out[idx] = predict_probabilities(model.model, slice_inputs(volume, lungs, idx, masked), batch_size)
    return out


def load_classifier(name_or_path: str = "classifier") -> model_weights.LoadedModel:
    """The slice classifier (shipped by default), checked against this module's input domain."""
    return model_weights.load(name_or_path, expect_input={"domain": DOMAIN, "size": INPUT_SIZE})


def slice_threshold(card: dict[str, Any], is_hu: bool) -> float:
    """The card's operating threshold on p_abnormal: ``threshold`` for CT in Hounsfield units,
    ``picture_threshold`` for 8-bit pictures when the card has one (the two input paths are
    calibrated differently; each threshold is chosen on validation data of its own kind)."""
    if not is_hu and card.get("picture_threshold") is not None:
        return float(card["picture_threshold"])
    return float(card["threshold"])
