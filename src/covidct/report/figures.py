"""Pictures for people: slice overlays (PNG, written with Pillow) and plots (matplotlib)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

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
    gray = display_slice(slice_, is_hu).astype(np.float32)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    for label, colour in LUNG_COLOURS.items():
        inside = labels == label
        if not inside.any():
            continue
        rgb[inside] = (1 - alpha) * rgb[inside] + alpha * np.array(colour, np.float32)
        edge = inside & ~ndi.binary_erosion(inside, iterations=max(1, round(labels.shape[0] / 256)))
        rgb[edge] = colour
    return rgb.round().astype(np.uint8)


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
