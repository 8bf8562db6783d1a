"""covidct: COVID-19 chest CT analysis. Research software, not a medical device.

Public API (more stages join as they are built)::

    import covidct
    vol = covidct.load("study/")          # DICOM folder/file, NIfTI or 2-D image -> Volume (HU)
    lung = covidct.apply_window(vol.array, "lung")
    masks = covidct.segment_lungs(vol)     # LungMasks: labels 1 right / 2 left, volume_ml
    probs = covidct.classify_slices(vol, masks)  # (z, 3): Normal, COVID-19, CAP
    lesions = covidct.segment_infection(vol, masks)  # (z, y, x): 0 none, 1 ground-glass, 2 consolidation
    result = covidct.analyze(vol)          # Analysis: lungs, probabilities, maps, infection, scores
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from covidct.errors import InputError
from covidct.io import load
from covidct.volume import Geometry, Volume, VolumeMeta
from covidct.windowing import WINDOWS, Window, apply_window, stack_windows, window

try:
    __version__ = version("covidct")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

DISCLAIMER = "Research software, not a medical device."

#: Stages that need torch are imported on first use, so reading a CT stays fast.
_LAZY = {
    "segment_lungs": "covidct.lungs",
    "LungMasks": "covidct.lungs",
    "classify_slices": "covidct.classify",
    "CLASSES": "covidct.classify",
    "segment_infection": "covidct.infection",
    "analyze": "covidct.pipeline",
    "Analysis": "covidct.pipeline",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'covidct' has no attribute {name!r}")

__all__ = [
    "Analysis",
    "CLASSES",
    "DISCLAIMER",
    "Geometry",
    "InputError",
    "LungMasks",
    "Volume",
    "VolumeMeta",
    "WINDOWS",
    "Window",
    "__version__",
    "analyze",
    "apply_window",
    "classify_slices",
    "load",
    "segment_infection",
    "segment_lungs",
    "stack_windows",
    "window",
]
