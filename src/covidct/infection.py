"""Infection segmentation by type: 0 none, 1 ground-glass, 2 consolidation, inside the lungs.

A compact 2-D U-Net with three softmax outputs, trained on MedSeg slices (typed labels, Inf-Net's
training split) and zenodo20_slices (infection without type); see :mod:`covidct.train.infection`.

Model input domain ("lungcrop-clahe+medseg-256")
-------------------------------------------------
Two channels from a square crop around the study's lung footprint (8 % margin), resized to
256 x 256, without lung masking:

0. the classifier's domain (:func:`covidct.classify.model_input`): HU through the lung window
   W1500/L-600, then per-slice min-max and CLAHE. CLAHE makes the sources look alike (an 8-bit
   lung-window picture, a CLAHE slice and a lung-windowed HU slice end up with the same local
   contrast), but it equalizes away absolute intensity;
1. the intensity itself, per-slice min-max without CLAHE: HU through the "medseg" window
   [-1100, +150] (:data:`covidct.windowing.WINDOWS`), 8-bit pictures as they are. Absolute
   intensity is what tells ground-glass from consolidation: on MedSeg's typed pixels a single
   threshold on this channel (0.55) types the radiologists' infection with Dice 0.82 / 0.59
   (ground-glass / consolidation, mean per image), one on the CLAHE channel (0.65) with 0.72 /
   0.41 (``python benchmarks/infection_typing.py``). The MedSeg pictures are 8-bit in an undocumented window; the
   "medseg" window puts a CT's lung parenchyma and soft tissue at their histogram peaks, and
   training varies this channel's contrast and brightness so a window that is a little off
   matters little. zenodo20's pictures exist only after CLAHE; this channel gets them as they are.

The most probable class is mapped back into the slice's pixels (nearest neighbour) and, for CT in
HU, set to 0 outside the lung mask.

2-D pictures (``is_hu=False``) go whole
-----------------------------------------
A 2-D picture (a slice from a paper or a data set, no HU) is cropped to the whole picture made
square, as the MedSeg pictures are in training, and its labels are not cut by the lung mask. The
lung model, trained on full CT slices, misses infected lung on such pictures: on MedSeg's
chest-cropped pictures 26 % of the radiologists' infection lies outside its mask, and its crop
and cut take the cross-validated binary Dice from 0.72 to 0.58 (ground-glass 0.53 to 0.45). On
zenodo20's validation pictures (full CT slices) the whole picture also does better: 0.61 against
0.50, and 0.51 with the radiologists' own lung masks for crop and cut
(``python benchmarks/infection_pictures.py``). The report's volumes and involvement still count
the lesions inside the lung mask only.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from covidct import classify
from covidct.lungs import LungMasks, resize_slices, segment_lungs
from covidct.models import weights as model_weights
from covidct.volume import Volume
from covidct.windowing import apply_window, minmax

INPUT_SIZE = 256
DOMAIN = "lungcrop-clahe+medseg-256"
CHANNELS = 2
#: :func:`segment_infection` averages each slice's prediction with that of its mirror image
#: (benchmarks/README.md, "Infection segmentation": cross-validated Dice with and without).
TEST_TIME_FLIP = True


def model_input(slices: np.ndarray, is_hu: bool, box: classify.Box) -> torch.Tensor:
    """Slices in the infection model's input domain (see module docstring): (n, 2, 256, 256) in [0, 1].

    Parameters
    ----------
    slices : (n, y, x) ndarray
        HU when ``is_hu``, 8-bit (or other) intensities otherwise.
    is_hu : bool
    box : crop box from :func:`covidct.classify.lung_box`
    """
    clahe = classify.model_input(slices, is_hu, box, size=INPUT_SIZE)
    x = classify.crop(np.asarray(slices), box)
    if is_hu:
        x = apply_window(x, "medseg")
    x = resize_slices(torch.from_numpy(x)[:, None], (INPUT_SIZE, INPUT_SIZE))[:, 0].numpy()
    return torch.cat([clahe, torch.from_numpy(minmax(x))[:, None]], dim=1)


def predict_probabilities(
    model: torch.nn.Module, x: torch.Tensor, batch_size: int = 16, flip: bool = False
) -> torch.Tensor:
    """Softmax over (none, ground-glass, consolidation): (n, 3, 256, 256) for inputs (n, 2, 256, 256).

    With ``flip`` the softmax is averaged with that of the left-right mirrored input (mirrored
    back): test-time augmentation with the flip the model was trained with, at twice the cost.
    """
    if len(x) == 0:
        return torch.zeros((0, 3, *x.shape[-2:]))
    prob = model_weights.predict_softmax(model, x, batch_size)
    if flip:
        prob = (prob + model_weights.predict_softmax(model, x.flip(-1), batch_size).flip(-1)) / 2
    return prob


def segment_infection(
    volume: Volume,
    lungs: LungMasks | None = None,
    model: model_weights.LoadedModel | None = None,
    batch_size: int = 16,
    inside_lungs: bool = True,
) -> np.ndarray:
    """Ground-glass and consolidation in every lung slice of a volume.

    Parameters
    ----------
    volume : Volume
        HU volume or a 2-D image (``is_hu=False``).
    lungs : LungMasks, optional
        Lung masks of a CT in HU (crop box and restriction); segmented when not given. Not used
        for a 2-D picture.
    model : LoadedModel, optional
        Defaults to the shipped ``infection`` weights.
    batch_size : int
        Slices per forward pass (memory stays bounded by one batch).
    inside_lungs : bool
        For CT in HU, keep only what lies inside ``lungs`` (the default). With False the labels
        cover the whole crop around the lungs on the lung slices, for
        :func:`covidct.lungs.add_infected_lung` to find infected lung the lung masks left out.

    Returns
    -------
    (z, y, x) uint8: 0 none, 1 ground-glass, 2 consolidation. For CT in HU, 0 outside the lungs
    (with ``inside_lungs``) and on slices without lung; a 2-D picture is segmented whole (see the
    module docstring).
    Predicted with the test-time flip (:data:`TEST_TIME_FLIP`).
    """
    model = model or load_infection_model()
    out = np.zeros(volume.shape, dtype=np.uint8)
    if volume.is_hu:
        lungs = lungs if lungs is not None else segment_lungs(volume)
        box, indices = classify.lung_box(lungs.footprint), lungs.lung_slices
    else:
        box, indices = picture_box(volume.shape[1:]), np.arange(volume.shape[0])
    starts = range(0, len(indices), batch_size)
    for start in tqdm(starts, desc="infection", unit="batch", disable=None, leave=False):
        idx = indices[start : start + batch_size]
        x = model_input(volume.array[idx], volume.is_hu, box)
        prob = predict_probabilities(model.model, x, batch_size, flip=TEST_TIME_FLIP)
        out[idx] = labels_in_slices(prob, box, volume.shape[1:])
        if volume.is_hu and inside_lungs:
            out[idx] *= lungs.labels[idx] > 0
    return out


def picture_box(shape: tuple[int, int]) -> classify.Box:
    """The crop box of a 2-D picture of ``shape`` (y, x): the whole picture, made square."""
    return classify.lung_box(np.zeros(shape, dtype=bool))


def labels_in_slices(probabilities: torch.Tensor, box: classify.Box, shape: tuple[int, int]) -> np.ndarray:
    """The most probable class per pixel, put back into the original slices.

    Parameters
    ----------
    probabilities : (n, 3, 256, 256) from :func:`predict_probabilities`
    box : the crop box the inputs were cut with
    shape : (y, x) of the original slices

    Returns
    -------
    (n, y, x) uint8 labels (the 256 x 256 labels resized to the box by nearest neighbour); 0
    outside the box.
    """
    labels = torch.max(probabilities, dim=1).indices.to(torch.uint8)  # argmax(dim=1) is ~80x slower on CPU
    return classify.uncrop(labels, box, shape, "nearest-exact")


def load_infection_model(name_or_path: str = "infection") -> model_weights.LoadedModel:
    """The infection segmentation model (shipped by default), checked against this input domain."""
    return model_weights.load(name_or_path, expect_input={"domain": DOMAIN, "size": INPUT_SIZE, "channels": CHANNELS})
