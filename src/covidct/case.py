"""Case-level results: the decision, the diagnosis and the Corona score with lung involvement.

Plain functions over the arrays the earlier stages return (slice probabilities, localization
maps, lung labels); nothing here runs a network.

* Decision (published method): a slice is positive when p_abnormal reaches the classifier's
  threshold; the case is "abnormal" (suspected pneumonia) when positive slices / lung slices
  exceeds the case threshold, otherwise "normal".
* Diagnosis: "Normal" for a normal case; otherwise COVID-19 or CAP, whichever has the larger
  mean probability over the positive slices.
* Corona score (published method): the localization maps of the positive slices summed, times
  the pixel area and the slice spacing, in cm^3. The maps are graded (0..1), so it is a
  weighted volume, not the volume of a segmentation.
* Involvement: the maps thresholded at :data:`MAP_THRESHOLD` give an infection mask; its volume
  in mL and its share of each lung and of each lung's upper / middle / lower third (by the
  lung's own extent along z) in percent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from covidct.classify import CLASSES

#: Localization map value from which a voxel counts as infected (involvement, infection volume).
MAP_THRESHOLD = 0.5
LUNG_SIDES = {1: "right", 2: "left"}
ZONES = ("lower", "middle", "upper")  # thirds along z, inferior to superior


@dataclass(frozen=True)
class CaseDecision:
    """The case-level call (fields as in report.json ``decision``)."""

    label: str  # "abnormal" | "normal"
    diagnosis: str  # one of CLASSES
    probabilities: dict[str, float]
    positive_slices: int
    lung_slices: int
    positive_slice_ratio: float
    threshold: float  # on positive_slice_ratio
    slice_threshold: float  # on p_abnormal


def positive_slices(probabilities: np.ndarray, lung_slices: np.ndarray, slice_threshold: float) -> np.ndarray:
    """Indices of the lung slices whose p_abnormal = 1 - p(Normal) reaches ``slice_threshold``."""
    lung_slices = np.asarray(lung_slices, dtype=np.int64)
    return lung_slices[(1.0 - probabilities[lung_slices, 0]) >= slice_threshold]


def decide(
    probabilities: np.ndarray, lung_slices: np.ndarray, slice_threshold: float, case_threshold: float
) -> CaseDecision:
    """Case decision and diagnosis from slice probabilities.

    Parameters
    ----------
    probabilities : (z, 3) array in :data:`covidct.classify.CLASSES` order
    lung_slices : indices of the slices that contain lung
    slice_threshold : p_abnormal from which a slice is positive
    case_threshold : positive-slice ratio above which the case is abnormal

    Returns
    -------
    CaseDecision. Its ``probabilities`` are the mean slice probabilities over the positive
    slices of an abnormal case, over all lung slices of a normal one.
    """
    lung_slices = np.asarray(lung_slices, dtype=np.int64)
    positive = positive_slices(probabilities, lung_slices, slice_threshold)
    ratio = len(positive) / len(lung_slices) if len(lung_slices) else 0.0
    abnormal = ratio > case_threshold
    rows = probabilities[positive] if abnormal else probabilities[lung_slices]
    mean = rows.mean(axis=0) if len(rows) else np.array([1.0, 0.0, 0.0])
    diagnosis = CLASSES[1 + int(np.argmax(mean[1:]))] if abnormal else CLASSES[0]
    return CaseDecision(
        label="abnormal" if abnormal else "normal",
        diagnosis=diagnosis,
        probabilities={c: round(float(p), 4) for c, p in zip(CLASSES, mean)},
        positive_slices=int(len(positive)),
        lung_slices=int(len(lung_slices)),
        positive_slice_ratio=round(float(ratio), 4),
        threshold=float(case_threshold),
        slice_threshold=float(slice_threshold),
    )


def corona_score_cm3(maps: np.ndarray, spacing_mm: tuple[float, float, float]) -> float:
    """Sum of the localization maps (zero off the positive slices) x voxel volume, in cm^3."""
    dz, dy, dx = spacing_mm
    return float(np.sum(maps, dtype=np.float64) * dz * dy * dx / 1000.0)


def lung_zones(labels: np.ndarray) -> np.ndarray:
    """Zone of every lung voxel: 1..3 for the right lung's lower, middle and upper third, 4..6
    for the left lung's, 0 outside; thirds split the lung's own slice range along z."""
    zones = np.zeros(labels.shape, dtype=np.uint8)
    for side, offset in ((1, 0), (2, 3)):
        slices = np.flatnonzero((labels == side).reshape(labels.shape[0], -1).any(axis=1))
        if not len(slices):
            continue
        edges = np.linspace(slices[0], slices[-1] + 1, 4)
        third = np.clip(np.searchsorted(edges, np.arange(labels.shape[0]), side="right") - 1, 0, 2)
        zones += ((labels == side) * (offset + 1 + third)[:, None, None]).astype(np.uint8)
    return zones


@dataclass(frozen=True)
class Involvement:
    """Infection volume and lung involvement (fields as in report.json ``scores``)."""

    infection_volume_ml: float
    lung_volume_ml: dict[str, float]
    involvement_pct: dict[str, float]
    zones_pct: dict[str, float]


def involvement(infected: np.ndarray, labels: np.ndarray, spacing_mm: tuple[float, float, float]) -> Involvement:
    """Infection volume and the percent of each lung (and zone) it covers.

    Parameters
    ----------
    infected : (z, y, x) bool
        Infection mask (e.g. localization maps >= :data:`MAP_THRESHOLD`); voxels outside the
        lungs are ignored.
    labels : (z, y, x) lung labels, 1 right and 2 left
    spacing_mm : (z, y, x) voxel size
    """
    voxel_ml = float(np.prod(spacing_mm)) / 1000.0
    infected = np.asarray(infected, bool) & (labels > 0)
    # One pass each: voxels per zone code (0 outside, 1..3 right, 4..6 left), and infected ones.
    zones = lung_zones(labels)
    total = np.bincount(zones.ravel(), minlength=7)
    hit = np.bincount(zones[infected], minlength=7)

    def pct(part: int, whole: int) -> float:
        return round(100.0 * part / whole, 2) if whole else 0.0

    lung_ml, inv, zones_pct = {}, {}, {}
    for side, name in LUNG_SIDES.items():
        codes = slice(3 * (side - 1) + 1, 3 * side + 1)
        lung_ml[name] = round(int(total[codes].sum()) * voxel_ml, 1)
        inv[name] = pct(int(hit[codes].sum()), int(total[codes].sum()))
        for k, zone in enumerate(ZONES):  # lower, middle, upper
            code = 3 * (side - 1) + 1 + k
            zones_pct[f"{name}_{zone}"] = pct(int(hit[code]), int(total[code]))
    lung_ml["total"] = round(int(total[1:].sum()) * voxel_ml, 1)
    inv["total"] = pct(int(hit[1:].sum()), int(total[1:].sum()))
    zones_pct = {f"{name}_{zone}": zones_pct[f"{name}_{zone}"] for name in LUNG_SIDES.values() for zone in ZONES[::-1]}
    return Involvement(
        infection_volume_ml=round(int(infected.sum()) * voxel_ml, 2),
        lung_volume_ml=lung_ml,
        involvement_pct=inv,
        zones_pct=zones_pct,
    )
