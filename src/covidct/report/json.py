"""report.json: the machine-readable result, schema "covidct.report/1" (../shared/DESIGN.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

import covidct
from covidct.classify import CLASSES

if TYPE_CHECKING:
    from covidct.pipeline import Analysis

SCHEMA = "covidct.report/1"


def report_dict(
    analysis: Analysis, outputs: dict[str, str | None], timing_s: dict[str, float | None]
) -> dict[str, Any]:
    """The report as a JSON-ready dict.

    Parameters
    ----------
    analysis : from :func:`covidct.pipeline.analyze`
    outputs : file names written beside report.json (``html``, ``lungs``, ...; None if absent;
        ``dicom``: the DICOM objects' names, or None when not asked for)
    timing_s : seconds per stage, including ``load``, ``report`` and ``total`` (None: stage not built)

    ``scores`` holds the DESIGN fields plus, from the typed segmentation,
    ``segmentation_volume_ml`` (ground-glass + consolidation), ``segmentation_involvement_pct``
    and ``segmentation_zones_pct`` (any type), and ``infection_by_type_pct`` (each type, per
    lung); ``infection_volume_ml``, ``involvement_pct`` and ``zones_pct`` stay the Grad-CAM
    ones (maps >= :data:`covidct.case.MAP_THRESHOLD`), next to the Corona score.
    """
    vol, d, inv = analysis.volume, analysis.decision, analysis.involvement
    typed = analysis.infection_involvement
    meta = vol.meta
    area_mm2 = lung_area_mm2(analysis.lungs.labels, vol.spacing_mm)
    positive = set(analysis.positive.tolist())
    slices = [
        {
            "index": k,
            "z_mm": None if z is None else round(float(z), 2),
            "lung_area_mm2": round(float(area_mm2[k]), 1),
            "p_abnormal": round(float(1.0 - p[0]), 4),
            "probabilities": {c: round(float(v), 4) for c, v in zip(CLASSES, p)},
            "positive": k in positive,
        }
        for k, (p, z) in enumerate(zip(analysis.probabilities, vol.slice_z_mm))
    ]
    return {
        "schema": SCHEMA,
        "covidct_version": covidct.__version__,
        "disclaimer": covidct.DISCLAIMER,
        "input": {
            "path": meta.source_path,
            "format": meta.source_format,
            "patient_id": meta.patient_id,
            "study_uid": meta.study_uid,
            "series_uid": meta.series_uid,
            "study_date": meta.study_date,
            "shape_zyx": list(vol.shape),
            "spacing_mm_zyx": [round(float(s), 6) for s in vol.spacing_mm],
        },
        "models": analysis.models,
        "decision": {
            "label": d.label,
            "diagnosis": d.diagnosis,
            "probabilities": d.probabilities,
            "positive_slices": d.positive_slices,
            "lung_slices": d.lung_slices,
            "positive_slice_ratio": d.positive_slice_ratio,
            "threshold": d.threshold,
        },
        "scores": {
            "corona_score_cm3": analysis.corona_score_cm3,
            "infection_volume_ml": inv.infection_volume_ml,
            "infection_by_type_ml": {k: typed[k].infection_volume_ml for k in ("ground_glass", "consolidation")},
            "lung_volume_ml": inv.lung_volume_ml,
            "involvement_pct": inv.involvement_pct,
            "zones_pct": inv.zones_pct,
            "segmentation_volume_ml": typed["infection"].infection_volume_ml,
            "segmentation_involvement_pct": typed["infection"].involvement_pct,
            "segmentation_zones_pct": typed["infection"].zones_pct,
            "infection_by_type_pct": {k: typed[k].involvement_pct for k in ("ground_glass", "consolidation")},
        },
        "slices": slices,
        "outputs": outputs,
        "timing_s": {k: None if v is None else round(float(v), 3) for k, v in timing_s.items()},
        "warnings": list(analysis.warnings),
    }


def lung_area_mm2(labels: np.ndarray, spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """Lung area of every slice in mm^2."""
    return (labels > 0).reshape(labels.shape[0], -1).sum(axis=1) * spacing_mm[1] * spacing_mm[2]
