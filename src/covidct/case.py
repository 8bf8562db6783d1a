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
  lung's own extent along z) in percent. :func:`typed_involvement` gives the same figures for
  the typed infection segmentation (any type, ground-glass, consolidation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from covidct.classify import CLASSES

#: Localization map value from which a voxel counts as infected (involvement, infection volume,
#: 3-D overview, DICOM SEG). The map is the product of two per-layer maps, each scaled to a
#: maximum of 1 (:func:`covidct.localize.gradcam`), so 0.25 is their geometric mean at 0.5: both
#: layers at half strength. (At 0.5 on the product, both would have to peak at the same place,
#: which they seldom do: P001's map volume was 0.1 mL; benchmarks/README.md.)
MAP_THRESHOLD = 0.25
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


def slice_zones(lung_slices_by_side: np.ndarray) -> np.ndarray:
    """Zone code of every slice for each lung.

    Parameters
    ----------
    lung_slices_by_side : (2, z) bool
        Whether the right (row 0) and the left (row 1) lung appear on each slice.

    Returns
    -------
    (2, z) uint8: 1..3 for the right lung's lower, middle and upper third, 4..6 for the left
    lung's, 0 where that lung is absent; thirds split each lung's own slice range along z.
    """
    present = np.asarray(lung_slices_by_side, bool)
    codes = np.zeros(present.shape, dtype=np.uint8)
    for row, offset in ((0, 0), (1, 3)):
        slices = np.flatnonzero(present[row])
        if not len(slices):
            continue
        edges = np.linspace(slices[0], slices[-1] + 1, 4)
        third = np.clip(np.searchsorted(edges, np.arange(present.shape[1]), side="right") - 1, 0, 2)
        codes[row] = np.where(present[row], offset + 1 + third, 0)
    return codes


def lung_zones(labels: np.ndarray) -> np.ndarray:
    """Zone of every lung voxel: 1..3 for the right lung's lower, middle and upper third, 4..6
    for the left lung's, 0 outside (:func:`slice_zones` per voxel)."""
    flat = labels.reshape(labels.shape[0], -1)
    codes = slice_zones(np.stack([(flat == side).any(axis=1) for side in LUNG_SIDES]))
    return np.select([labels == 1, labels == 2], [codes[0][:, None, None], codes[1][:, None, None]], 0).astype(np.uint8)


@dataclass(frozen=True)
class Involvement:
    """Infection volume and lung involvement (fields as in report.json ``scores``)."""

    infection_volume_ml: float
    lung_volume_ml: dict[str, float]
    involvement_pct: dict[str, float]
    zones_pct: dict[str, float]


def involvement(infected: np.ndarray, labels: np.ndarray, spacing_mm: tuple[float, float, float]) -> Involvement:
    """Infection volume and the percent of each lung (and zone, :func:`lung_zones`) it covers.

    Parameters
    ----------
    infected : (z, y, x) bool
        Infection mask (e.g. localization maps >= :data:`MAP_THRESHOLD`); voxels outside the
        lungs are ignored.
    labels : (z, y, x) lung labels, 1 right and 2 left
    spacing_mm : (z, y, x) voxel size
    """
    counts = _zone_counts(labels, np.asarray(infected, bool).view(np.uint8), 2)
    return _involvement(counts.sum(axis=1), counts[:, 1], spacing_mm)


def typed_involvement(
    infection: np.ndarray, labels: np.ndarray, spacing_mm: tuple[float, float, float]
) -> dict[str, Involvement]:
    """:func:`involvement` of a typed infection mask, for any infection and for each type.

    Parameters
    ----------
    infection : (z, y, x) uint8: 0 none, 1 ground-glass, 2 consolidation
    labels, spacing_mm : as for :func:`involvement`

    Returns
    -------
    ``{"infection": ..., "ground_glass": ..., "consolidation": ...}``
    """
    counts = _zone_counts(labels, np.asarray(infection, np.uint8), 3)
    total = counts.sum(axis=1)
    return {
        "infection": _involvement(total, counts[:, 1] + counts[:, 2], spacing_mm),
        "ground_glass": _involvement(total, counts[:, 1], spacing_mm),
        "consolidation": _involvement(total, counts[:, 2], spacing_mm),
    }


def _zone_counts(labels: np.ndarray, values: np.ndarray, n_values: int) -> np.ndarray:
    """(7, n_values) voxel counts per zone code (0 outside, 1..3 right, 4..6 left) and value.

    A zone is a lung's share of a range of slices, so the volume is counted slice by slice
    (one uint8 code per voxel, a few vectorized counts) and the slice counts are summed by zone.
    """
    combined = labels.astype(np.uint8) * np.uint8(n_values) + np.minimum(values, n_values - 1).astype(np.uint8)
    per_slice = np.stack([  # (side, value, z)
        np.stack([np.count_nonzero(combined == side * n_values + v, axis=(1, 2)) for v in range(n_values)])
        for side in LUNG_SIDES
    ])
    codes = slice_zones(per_slice.sum(axis=1) > 0)
    counts = np.zeros((7, n_values), dtype=np.int64)
    for row in range(2):
        for v in range(n_values):
            np.add.at(counts[:, v], codes[row], per_slice[row, v])
    counts[0] = 0
    return counts


def _involvement(total: np.ndarray, hit: np.ndarray, spacing_mm: tuple[float, float, float]) -> Involvement:
    """Involvement from voxel counts per zone code: all voxels (``total``) and infected ones
    (``hit``); code 0 (outside the lungs) is ignored."""
    voxel_ml = float(np.prod(spacing_mm)) / 1000.0

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
        infection_volume_ml=round(int(hit[1:].sum()) * voxel_ml, 2),
        lung_volume_ml=lung_ml,
        involvement_pct=inv,
        zones_pct=zones_pct,
    )
