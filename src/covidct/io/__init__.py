"""Input: DICOM series, NIfTI volumes and 2-D slice images, read into a :class:`Volume`.

This package is the only place covidct reads files.
"""

from __future__ import annotations

import os
from pathlib import Path

from covidct.errors import InputError
from covidct.io.dicom import GapPolicy, load_dicom
from covidct.io.image import IMAGE_SUFFIXES, load_image
from covidct.io.nifti import load_nifti
from covidct.volume import Volume

__all__ = ["load", "load_dicom", "load_nifti", "load_image"]


def load(path: str | os.PathLike[str], on_gap: GapPolicy = "reject") -> Volume:
    """Read a chest CT from a DICOM folder or file, a NIfTI file, or a 2-D slice image.

    The format is chosen by what ``path`` is: a folder is searched for DICOM series;
    ``.nii``/``.nii.gz`` is NIfTI; ``.png``/``.jpg``/``.jpeg``/``.tif``/``.tiff``/``.bmp`` is a 2-D
    image; any other file is read as DICOM.

    Parameters
    ----------
    path : path-like
    on_gap : {"reject", "resample"}
        DICOM only: refuse a series with uneven slice spacing (default) or resample it.

    Raises
    ------
    InputError
        Missing path or unreadable / unsupported input; the message says what to do.
    """
    source = Path(path)
    if not source.exists():
        raise InputError(f"{source}: no such file or folder.")
    if source.is_dir():
        return load_dicom(source, on_gap=on_gap)
    name = source.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return load_nifti(source)
    if source.suffix.lower() in IMAGE_SUFFIXES:
        return load_image(source)
    return load_dicom(source, on_gap=on_gap)
