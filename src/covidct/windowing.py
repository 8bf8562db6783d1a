"""HU windows: map Hounsfield units to [0, 1] model and display inputs.

A CT holds 12-16 bits of HU; a single 8-bit window throws most of it away. Model inputs take
their channels from deliberate windows, one channel per window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from covidct.parallel import thread_map


@dataclass(frozen=True)
class Window:
    """A display window: HU values in [level - width/2, level + width/2] map linearly to [0, 1]."""

    level: float
    width: float

    def __post_init__(self) -> None:
        if self.width <= 0:
            raise ValueError(f"window width must be positive, got {self.width}")

    @property
    def low(self) -> float:
        return self.level - self.width / 2

    @property
    def high(self) -> float:
        return self.level + self.width / 2


#: Named windows. "pipeline" is the published method's [-1000, 0] HU lung input;
#: "lung" W1500/L-600 and "mediastinum" W400/L40 are the radiological presets;
#: "wide" [-1000, +1000] keeps air, soft tissue and most bone apart; "medseg" [-1100, +150] puts a
#: CT's lung parenchyma (about -870 HU) and fat / soft tissue where the MedSeg training pictures
#: of the infection model have theirs (8-bit histogram peaks near 42 and 208 of 255; the pictures'
#: own window is undocumented; see :mod:`covidct.infection`).
WINDOWS: dict[str, Window] = {
    "pipeline": Window(level=-500.0, width=1000.0),
    "lung": Window(level=-600.0, width=1500.0),
    "mediastinum": Window(level=40.0, width=400.0),
    "wide": Window(level=0.0, width=2000.0),
    "medseg": Window(level=-475.0, width=1250.0),
}


def window(hu: np.ndarray, level: float, width: float) -> np.ndarray:
    """Clip HU to ``[level - width/2, level + width/2]`` and scale to [0, 1].

    Parameters
    ----------
    hu : ndarray
        Hounsfield units, any shape and numeric dtype.
    level, width : float
        Window centre and width in HU (width > 0).

    Returns
    -------
    ndarray of float32, same shape, values in [0, 1].
    """
    w = Window(level, width)
    out = np.asarray(hu, dtype=np.float32) - np.float32(w.low)
    out *= np.float32(1.0 / w.width)
    return np.clip(out, 0.0, 1.0, out=out)


def apply_window(hu: np.ndarray, name: str) -> np.ndarray:
    """:func:`window` with a named preset from :data:`WINDOWS`."""
    try:
        w = WINDOWS[name]
    except KeyError:
        raise ValueError(f"unknown window {name!r}; choose from {sorted(WINDOWS)}") from None
    return window(hu, w.level, w.width)


def stack_windows(hu: np.ndarray, names: Sequence[str] = ("lung", "mediastinum", "wide")) -> np.ndarray:
    """One channel per named window, stacked on a new leading axis.

    Parameters
    ----------
    hu : ndarray
        Hounsfield units, shape ``S``.
    names : sequence of str
        Presets from :data:`WINDOWS`, in channel order.

    Returns
    -------
    ndarray of float32, shape ``(len(names),) + S``, values in [0, 1].
    """
    if not names:
        raise ValueError("stack_windows needs at least one window name")
    return np.stack([apply_window(hu, n) for n in names], axis=0)


def minmax(slices: np.ndarray) -> np.ndarray:
    """Per-slice min-max of (n, y, x) intensities to [0, 1] (float32; a constant slice gives 0)."""
    x = np.asarray(slices, dtype=np.float32)
    low = x.min(axis=(1, 2), keepdims=True)
    high = x.max(axis=(1, 2), keepdims=True)
    return (x - low) / np.maximum(high - low, 1e-6)


def minmax_clahe(slices: np.ndarray, tiles: int = 8, clip_limit: float = 7.0 / 256.0) -> np.ndarray:
    """Per-slice min-max to [0, 1], then contrast-limited adaptive histogram equalization.

    This is how the 8-bit training slices of zenodo20_slices were made; the lung and slice
    models map every input (HU after clipping or windowing, or 8-bit) through it, so HU studies
    and 8-bit images reach a model in one intensity domain.

    Parameters
    ----------
    slices : (n, y, x) ndarray
        Any real intensities.
    tiles : int
        CLAHE tiles per side (kernel size = side / tiles).
    clip_limit : float
        CLAHE clip limit as a fraction (7/256 is OpenCV's clipLimit 7 with 256 bins).

    Returns
    -------
    (n, y, x) float32 in [0, 1].
    """
    from skimage.exposure import equalize_adapthist

    x = minmax(slices)
    out = np.empty(x.shape, dtype=np.float32)
    kernel = (max(1, x.shape[1] // tiles), max(1, x.shape[2] // tiles))

    def equalize(i: int) -> None:
        out[i] = equalize_adapthist(x[i], kernel_size=kernel, clip_limit=clip_limit, nbins=256)

    # skimage's CLAHE is NumPy work that releases the GIL: ~1.7x faster in threads on 2 cores.
    thread_map(equalize, range(len(x)))
    return out
