"""Pictures for people: slice overlays (PNG, written with Pillow) and plots (matplotlib)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage as ndi

from covidct.windowing import apply_window

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Outline colours per lung label (1 right, 2 left).
LUNG_COLOURS = {1: (230, 60, 60), 2: (60, 120, 240)}


def display_slice(slice_: np.ndarray, is_hu: bool) -> np.ndarray:
    """A slice as 8-bit grayscale: the lung window for HU, min-max otherwise."""
    if is_hu:
        g = apply_window(slice_, "lung")
    else:
        s = slice_.astype(np.float32)
        g = (s - s.min()) / max(float(s.max() - s.min()), 1e-6)
    return (g * 255).round().astype(np.uint8)


def _gray_rgb(slice_: np.ndarray, is_hu: bool) -> np.ndarray:
    """:func:`display_slice` as a float32 (y, x, 3) RGB canvas."""
    return np.repeat(display_slice(slice_, is_hu).astype(np.float32)[..., None], 3, axis=2)


def _tint(rgb: np.ndarray, labels: np.ndarray, colours: dict[int, tuple[int, int, int]], alpha: float) -> None:
    """Blend each label's colour into ``rgb`` where ``labels`` has it (in place)."""
    for label, colour in colours.items():
        inside = labels == label
        rgb[inside] = (1 - alpha) * rgb[inside] + alpha * np.array(colour, np.float32)


def _outline_lungs(rgb: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Draw each lung's border in its colour (in place) and return the image as uint8."""
    for label, colour in LUNG_COLOURS.items():
        inside = labels == label
        edge = inside & ~ndi.binary_erosion(inside, iterations=max(1, round(labels.shape[0] / 256)))
        rgb[edge] = colour
    return rgb.round().astype(np.uint8)


def lung_overlay(slice_: np.ndarray, labels: np.ndarray, is_hu: bool, alpha: float = 0.25) -> np.ndarray:
    """RGB image of a slice with each lung tinted and outlined in its colour.

    Parameters
    ----------
    slice_ : (y, x) HU or intensities
    labels : (y, x) uint8, 1 right lung, 2 left lung
    is_hu : bool
    alpha : tint opacity inside the lungs

    Returns
    -------
    (y, x, 3) uint8
    """
    rgb = _gray_rgb(slice_, is_hu)
    _tint(rgb, labels, LUNG_COLOURS, alpha)
    return _outline_lungs(rgb, labels)


def overlay_slices(n_lung_slices: np.ndarray, count: int = 5) -> list[int]:
    """``count`` slice indices spread evenly over the lung slices (between 10 % and 90 %)."""
    if len(n_lung_slices) == 0:
        return []
    picks = np.linspace(0.1, 0.9, count) * (len(n_lung_slices) - 1)
    return sorted({int(n_lung_slices[int(round(p))]) for p in picks})


def save_png(rgb: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write an (y, x) or (y, x, 3) uint8 image as PNG; returns the path."""
    from PIL import Image

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(out)
    return out


def roc_figure(curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str) -> Figure:
    """ROC curves (false-positive rate, true-positive rate) by name, on one square plot.

    Uses matplotlib's non-interactive Agg canvas; the caller saves the figure.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    for name, (fpr, tpr) in curves.items():
        ax.step(fpr, tpr, where="post", label=name)
    ax.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=1)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 - specificity", ylabel="sensitivity", title=title)
    ax.set_aspect("equal")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def heatmap_overlay(slice_: np.ndarray, heat: np.ndarray, labels: np.ndarray, is_hu: bool) -> np.ndarray:
    """RGB image of a slice (lung window) with a localization map over it.

    Parameters
    ----------
    slice_ : (y, x) HU or intensities
    heat : (y, x) map in [0, 1]; shown in a hot colour scale, transparent where below 0.05
    labels : (y, x) lung labels; lungs are outlined in their colours
    is_hu : bool

    Returns
    -------
    (y, x, 3) uint8
    """
    from matplotlib import colormaps

    colour = colormaps["inferno"](np.clip(heat, 0, 1))[..., :3] * 255
    alpha = np.where(heat >= 0.05, 0.25 + 0.5 * np.clip(heat, 0, 1), 0.0)[..., None]
    rgb = (1 - alpha) * _gray_rgb(slice_, is_hu) + alpha * colour
    return _outline_lungs(rgb.astype(np.float32), labels)


#: Lesion colours in :func:`lesion_overlay`: ground-glass yellow, consolidation red.
LESION_COLOURS = {1: (255, 210, 0), 2: (230, 30, 30)}


def lesion_overlay(slice_: np.ndarray, infection: np.ndarray, labels: np.ndarray, is_hu: bool, alpha: float = 0.45) -> np.ndarray:
    """RGB image of a slice (lung window) with the segmented lesions over it.

    Parameters
    ----------
    slice_ : (y, x) HU or intensities
    infection : (y, x) labels: 1 ground-glass (yellow), 2 consolidation (red)
    labels : (y, x) lung labels; lungs are outlined in their colours
    is_hu : bool
    alpha : opacity of the lesion colours

    Returns
    -------
    (y, x, 3) uint8
    """
    rgb = _gray_rgb(slice_, is_hu)
    _tint(rgb, infection, LESION_COLOURS, alpha)
    return _outline_lungs(rgb, labels)


def probability_curve(
    z_mm: np.ndarray, p_abnormal: np.ndarray, lung: np.ndarray, threshold: float
) -> Figure:
    """p_abnormal along the body axis, lung slices only, with the operating threshold.

    ``z_mm`` may hold slice indices where positions are unknown.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 2.6))
    ax = fig.add_subplot()
    z, p = np.asarray(z_mm, float)[lung], np.asarray(p_abnormal)[lung]
    ax.plot(z, p, color="0.3", linewidth=1)
    above = p >= threshold
    ax.scatter(z[above], p[above], s=10, color="tab:red", label="positive slice", zorder=3)
    ax.axhline(threshold, color="tab:red", linestyle="--", linewidth=1, label=f"threshold {threshold:.3f}")
    ax.set(ylim=(0, 1.05), xlabel="z (mm), inferior → superior", ylabel="p_abnormal")
    ax.legend(loc="lower center", fontsize=8, ncols=2, framealpha=0.9)
    fig.tight_layout()
    return fig


def overview_3d(
    labels: np.ndarray, infected: np.ndarray, spacing_mm: tuple[float, float, float], max_side: int = 128
) -> Figure:
    """3-D overview: translucent lungs, infection in red (marching cubes, matplotlib).

    Parameters
    ----------
    labels : (z, y, x) lung labels
    infected : (z, y, x) float or bool infection map; smoothed by a 3-D Gaussian (1 voxel after
        downsampling) and drawn at its 0.5 level
    spacing_mm : (z, y, x) voxel size; the picture is to scale
    max_side : in-plane size the volumes are reduced to first (speed)
    """
    from matplotlib.figure import Figure
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection
    from skimage.measure import marching_cubes

    step = max(1, int(np.ceil(max(labels.shape[1:]) / max_side)))
    spacing = (float(spacing_mm[0]), float(spacing_mm[1]) * step, float(spacing_mm[2]) * step)
    fig = Figure(figsize=(6, 6))
    ax = fig.add_subplot(projection="3d")
    # (volume, colour, opacity, marching-cubes step): the translucent lungs need no fine mesh.
    layers = [
        ((labels[:, ::step, ::step] > 0).astype(np.float32), (0.55, 0.7, 0.95), 0.12, 2),
        (np.asarray(infected, np.float32)[:, ::step, ::step], (0.9, 0.1, 0.1), 0.8, 1),
    ]
    extent = np.array(labels[:, ::step, ::step].shape) * spacing
    for volume, colour, alpha, mesh_step in layers:
        smooth = ndi.gaussian_filter(volume, sigma=1.0)
        if smooth.max() < 0.5 or smooth.shape[0] < 2:
            continue
        verts, faces, _, _ = marching_cubes(np.pad(smooth, 1), level=0.5, spacing=spacing, step_size=mesh_step)
        verts -= np.array(spacing)  # undo the padding
        # Axes: x patient right -> left, y anterior -> posterior, z inferior -> superior.
        mesh = Poly3DCollection(verts[faces][:, :, [2, 1, 0]], facecolor=colour, edgecolor="none", alpha=alpha)
        ax.add_collection3d(mesh)
    ax.set(xlim=(0, extent[2]), ylim=(extent[1], 0), zlim=(0, extent[0]))
    ax.set_box_aspect((extent[2], extent[1], extent[0]))
    ax.view_init(elev=10, azim=-90)
    ax.set_axis_off()
    fig.tight_layout()
    return fig


def follow_up_figure(track: dict[str, Any]) -> Figure:
    """Corona score (left axis) and total lung involvement (right axis) by study date."""
    from datetime import date

    from matplotlib.figure import Figure

    studies = track["studies"]
    when = [date.fromisoformat(s["study_date"]) for s in studies]
    fig = Figure(figsize=(7, 3.2))
    ax = fig.add_subplot()
    ax.plot(when, [s["corona_score_cm3"] for s in studies], "o-", color="tab:red", label="Corona score (cm³)")
    ax.set_ylabel("Corona score (cm³)", color="tab:red")
    ax.set_ylim(bottom=0)
    right = ax.twinx()
    right.plot(when, [s["involvement_pct"]["total"] for s in studies], "s--", color="tab:blue",
               label="lung involved (%)")
    right.set_ylabel("lung involved (%)", color="tab:blue")
    right.set_ylim(bottom=0)
    ax.set_title(f"follow-up{' of ' + track['patient_id'] if track.get('patient_id') else ''}")
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig
