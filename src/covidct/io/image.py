"""Read a 2-D slice image (PNG, JPEG, TIFF, BMP) as a one-slice Volume.

Such images come from papers and public datasets: they carry no Hounsfield units and no pixel
spacing, so the Volume has ``is_hu=False`` and unit spacing, and a warning says so.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from covidct.errors import InputError
from covidct.volume import Geometry, Volume, VolumeMeta

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})


def load_image(path: str | os.PathLike[str]) -> Volume:
    """Load a 2-D grayscale image as a Volume of shape (1, y, x).

    Colour images are converted to luminance (ITU-R 601-2); 8-bit and 16-bit values are kept as
    stored. Spacing is set to 1 mm (unknown).

    Raises
    ------
    InputError
        The file cannot be decoded as an image, or holds several frames.
    """
    from PIL import Image, UnidentifiedImageError

    source = Path(path)
    try:
        with Image.open(source) as img:
            if getattr(img, "n_frames", 1) > 1:
                raise InputError(f"{source}: image holds {img.n_frames} frames; give one 2-D slice per file.")
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                array = np.asarray(img)
            else:
                array = np.asarray(img.convert("L"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{source}: cannot read as an image ({exc}); give a PNG, JPEG or TIFF slice.") from exc
    if array.ndim != 2:
        raise InputError(f"{source}: image has shape {array.shape}; covidct needs a 2-D grayscale slice.")
    warning = "2-D image: values are not Hounsfield units and pixel spacing is unknown (1 mm assumed)"
    return Volume(
        array=np.ascontiguousarray(array[None]),
        spacing_mm=(1.0, 1.0, 1.0),
        is_hu=False,
        geometry=Geometry(affine=np.eye(4), source_shape=(1,) + array.shape),
        meta=VolumeMeta(
            source_path=str(source), source_format="image", slice_z_mm=(0.0,), warnings=(warning,)
        ),
    )
