"""covidct: COVID-19 chest CT analysis. Research software, not a medical device.

Public API (more stages join as they are built)::

    import covidct
    vol = covidct.load("study/")          # DICOM folder/file, NIfTI or 2-D image -> Volume (HU)
    lung = covidct.apply_window(vol.array, "lung")
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from covidct.errors import InputError
from covidct.io import load
from covidct.volume import Geometry, Volume, VolumeMeta
from covidct.windowing import WINDOWS, Window, apply_window, stack_windows, window

try:
    __version__ = version("covidct")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

DISCLAIMER = "Research software, not a medical device."

__all__ = [
    "DISCLAIMER",
    "Geometry",
    "InputError",
    "Volume",
    "VolumeMeta",
    "WINDOWS",
    "Window",
    "__version__",
    "apply_window",
    "load",
    "stack_windows",
    "window",
]
