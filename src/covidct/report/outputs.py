"""Write an analysis as a folder: report.json, report.html, lungs.nii.gz, localization.nii.gz,
infection.nii.gz, overview3d.png, and on request dicom/ (SEG, SR, secondary captures). Everything is written into a hidden staging folder beside the target and
renamed into place at the end, so a failure never leaves a half-written result."""

from __future__ import annotations

import io
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from covidct.case import MAP_THRESHOLD
from covidct.report import figures
from covidct.report.folders import check_output_dir, staged_folder
from covidct.report.html import render
from covidct.report.json import report_dict
from covidct.report.nifti import write_nifti

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from pydicom.dataset import Dataset

    from covidct.pipeline import Analysis

OUTPUTS = {
    "html": "report.html",
    "lungs": "lungs.nii.gz",
    "localization": "localization.nii.gz",
    "infection": "infection.nii.gz",
    "overview_png": "overview3d.png",
}
#: Subfolder of the DICOM outputs (``analyze --dicom``).
DICOM_FOLDER = "dicom"
#: Key slices shown with their heat maps in the HTML report.
MAX_KEY_SLICES = 6


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, pil_kwargs={"compress_level": 1})
    return buf.getvalue()


def _rgb_png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)  # fast; the page is a little larger
    return buf.getvalue()


def key_slices(analysis: Analysis, count: int = MAX_KEY_SLICES) -> list[int]:
    """The positive slices with the highest p_abnormal, at most ``count``, in z order; without a
    positive slice, the slices with the most segmented infection (if any)."""
    positive = analysis.positive
    if len(positive):
        order = np.argsort(-(1.0 - analysis.probabilities[positive, 0]), kind="stable")
        return sorted(int(k) for k in positive[order[:count]])
    area = (analysis.infection > 0).reshape(analysis.infection.shape[0], -1).sum(axis=1)
    order = np.argsort(-area, kind="stable")[:count]
    return sorted(int(k) for k in order if area[k] > 0)


def write_report(analysis: Analysis, out_dir: str | os.PathLike[str], load_s: float = 0.0, force: bool = False,
                 dicom_sources: Sequence[Dataset] | None = None) -> dict[str, Any]:
    """Write the report folder and return the report dict (as in report.json).

    Parameters
    ----------
    analysis : from :func:`covidct.pipeline.analyze`
    out_dir : the folder to create (replaced as a whole when ``force``)
    load_s : seconds spent reading the input, for ``timing_s``
    force : replace a non-empty ``out_dir``
    dicom_sources : headers of the source CT images (:func:`covidct.io.dicom.read_source_headers`);
        when given, the DICOM SEG, SR and key-slice secondary captures are written under
        ``dicom/`` (:mod:`covidct.report.dicom`) and listed in ``outputs["dicom"]``
    """
    start = time.perf_counter()
    out = check_output_dir(out_dir, force)
    with staged_folder(out) as stage, ThreadPoolExecutor(max_workers=2) as writer:
        vol = analysis.volume
        seg_job, sources = None, None
        if dicom_sources is not None:  # the DICOM Segmentation is the longest output: started first
            from covidct.report import dicom

            sources = dicom.complete_type2(dicom_sources)
            seg_job = writer.submit(dicom.write_segmentation, analysis, sources, stage / DICOM_FOLDER)
        # The masks are gzipped in other threads (zlib releases the GIL) while the figures render.
        niftis = [
            writer.submit(write_nifti, array, vol.geometry, stage / OUTPUTS[name])
            for name, array in (("lungs", analysis.lungs.labels), ("localization", analysis.maps),
                                ("infection", analysis.infection))
        ]
        overview_png = _png(figures.overview_3d(analysis.lungs.labels, analysis.maps >= MAP_THRESHOLD, vol.spacing_mm))
        (stage / OUTPUTS["overview_png"]).write_bytes(overview_png)
        z = np.array([k if z is None else z for k, z in enumerate(vol.slice_z_mm)], dtype=float)
        lung = np.zeros(vol.shape[0], bool)
        lung[analysis.lungs.lung_slices] = True
        curve_png = _png(figures.probability_curve(z, 1.0 - analysis.probabilities[:, 0], lung,
                                                   analysis.decision.slice_threshold))
        slides, pictures = [], []
        for k in key_slices(analysis):
            rgb = np.concatenate([
                figures.heatmap_overlay(vol.array[k], analysis.maps[k], analysis.lungs.labels[k], vol.is_hu),
                figures.lesion_overlay(vol.array[k], analysis.infection[k], analysis.lungs.labels[k], vol.is_hu),
            ], axis=1)
            where = "" if vol.slice_z_mm[k] is None else f", z {vol.slice_z_mm[k]:.1f} mm"
            p = analysis.probabilities[k]
            slides.append((f"slice {k}{where}: p_abnormal {1 - p[0]:.2f} (COVID-19 {p[1]:.2f}, CAP {p[2]:.2f})", _rgb_png(rgb)))
            pictures.append((k, rgb))
        dicom_outputs = None
        if seg_job is not None:
            rest = dicom.write_measurements_and_captures(analysis, report_dict(analysis, {}, {}), sources, pictures,
                                                         stage / DICOM_FOLDER)
            dicom_outputs = {"segmentation": seg_job.result(), **rest}
        for written in niftis:
            written.result()  # re-raises a failed write
        timing: dict[str, float | None] = {"load": load_s, **analysis.timing_s}
        timing["report"] = time.perf_counter() - start
        timing["total"] = sum(v for v in timing.values() if v is not None)
        report = report_dict(analysis, {**OUTPUTS, "dicom": dicom_outputs}, timing)
        (stage / OUTPUTS["html"]).write_text(render(report, slides, curve_png, overview_png), encoding="utf-8")
        (stage / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def write_track(track: dict[str, Any], out_dir: str | os.PathLike[str], force: bool = False) -> Path:
    """Write ``track.json`` and ``track.png`` (from :func:`covidct.track.follow_up`) into a folder."""
    out = check_output_dir(out_dir, force)
    with staged_folder(out) as stage:
        (stage / "track.png").write_bytes(_png(figures.follow_up_figure(track)))
        (stage / "track.json").write_text(json.dumps(track, indent=2) + "\n", encoding="utf-8")
    return out

