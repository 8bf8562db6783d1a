"""Write arrays on a Volume's grid as NIfTI, in the input's own voxel order."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from covidct.volume import Geometry, to_source_order

#: covidct works in DICOM's LPS; NIfTI affines are RAS.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def current_umask() -> int:
    """The process umask (read without changing it for longer than the call)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_nifti(array: np.ndarray, geometry: Geometry, path: str | os.PathLike[str]) -> Path:
    """Save a canonical (z, y, x) array as NIfTI with the exact affine of ``geometry``.

    The array is put back into the voxel order the input came in (``geometry.source_ornt``),
    so a mask lines up voxel for voxel with the NIfTI it was computed from. The file is written
    to a temporary name and renamed, so an existing file is never half-overwritten.

    Parameters
    ----------
    array : (z, y, x) ndarray
        Values on the Volume's grid (HU, labels, maps).
    geometry : Geometry
        The Volume's geometry.
    path : path-like
        ``.nii`` or ``.nii.gz``.

    Returns
    -------
    Path of the written file.
    """
    import nibabel as nib

    source_array, source_affine = to_source_order(array, geometry)
    # covidct (z, y, x) -> NIfTI (i, j, k) = (x, y, z). NIfTI stores i fastest, which is the
    # memory order of a C-ordered (z, y, x) array: the transposed view is written without a copy.
    data = np.transpose(source_array, (2, 1, 0))
    affine = LPS_TO_RAS @ source_affine[:, [2, 1, 0, 3]]
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm")

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if out.name.endswith(".gz") else ".nii"
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".covidct-", suffix=suffix)
    os.close(fd)
    try:
        nib.save(img, tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out

