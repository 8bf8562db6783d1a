"""Read a NIfTI CT volume, reoriented to covidct's canonical axes."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from covidct.errors import InputError
from covidct.volume import Geometry, Volume, VolumeMeta, spacing_from_affine, to_canonical

log = logging.getLogger(__name__)

#: nibabel affines map to RAS; covidct works in DICOM's LPS.
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: A CT in HU has air near -1000; a volume whose minimum is above this is not in HU.
HU_AIR_MAX = -500.0


def load_nifti(path: str | os.PathLike[str]) -> Volume:
    """Load a 3-D NIfTI file (``.nii`` or ``.nii.gz``) as a canonical Volume.

    The stored scaling (scl_slope/scl_inter) is applied. NIfTI has no notion of Hounsfield units,
    so ``is_hu`` is inferred: True when the darkest voxel is at most -500 (air in HU), with a
    warning otherwise.

    Raises
    ------
    InputError
        Unreadable or corrupt file, not 3-D (a singleton 4th axis is accepted), no valid affine.
    """
    import nibabel as nib

    source = Path(path)
    try:
        img = nib.load(source)
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many kinds for damaged files
        raise InputError(
            f"{source}: cannot read NIfTI ({type(exc).__name__}: {exc}); check the file is a complete .nii/.nii.gz."
        ) from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"{source}: NIfTI has shape {data.shape}; covidct needs one 3-D CT volume.")
    if not np.issubdtype(data.dtype, np.number) or np.issubdtype(data.dtype, np.complexfloating):
        raise InputError(f"{source}: NIfTI voxels are {data.dtype}; covidct needs real-valued CT numbers.")

    # nibabel index (i, j, k) ~ (x, y, z); covidct arrays are (z, y, x).
    array = np.transpose(data, (2, 1, 0))
    affine_ijk = RAS_TO_LPS @ img.affine
    affine = affine_ijk[:, [2, 1, 0, 3]]
    if abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise InputError(f"{source}: NIfTI affine is singular; the file has no usable geometry.")

    if np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32, copy=False)
    canon, canon_affine, ornt = to_canonical(array, affine)
    canon = np.ascontiguousarray(canon)
    warnings = []
    is_hu = bool(canon.min() <= HU_AIR_MAX)
    if not is_hu:
        warnings.append(
            f"darkest voxel is {float(canon.min()):.0f}: values do not look like Hounsfield units (air is -1000)"
        )
    geometry = Geometry(affine=canon_affine, source_ornt=ornt, source_shape=array.shape)
    for w in warnings:
        log.warning("%s: %s", source, w)
    return Volume(
        array=canon,
        spacing_mm=spacing_from_affine(canon_affine),
        is_hu=is_hu,
        geometry=geometry,
        meta=VolumeMeta(
            source_path=str(source),
            source_format="nifti",
            modality="CT" if is_hu else "",
            slice_z_mm=geometry.slice_z_mm(canon.shape),
            warnings=tuple(warnings),
        ),
    )
