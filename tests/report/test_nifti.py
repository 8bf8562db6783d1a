import os

import nibabel as nib
import numpy as np

from covidct.report.nifti import write_nifti


def test_written_file_has_affine_units_and_permissions(tmp_path, small_phantom):
    geometry = small_phantom.volume.geometry
    path = write_nifti(small_phantom.lungs, geometry, tmp_path / "sub" / "lungs.nii.gz")
    img = nib.load(path)
    # covidct's LPS affine, seen through NIfTI's RAS convention: x and y negate.
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ geometry.affine[:, [2, 1, 0, 3]]
    np.testing.assert_allclose(img.affine, ras, atol=1e-6)
    assert img.header.get_xyzt_units()[0] == "mm"
    assert np.array_equal(np.unique(np.asarray(img.dataobj)), [0, 1, 2])
    umask = os.umask(0)
    os.umask(umask)
    assert (path.stat().st_mode & 0o777) == 0o666 & ~umask
    assert [p.name for p in path.parent.iterdir()] == ["lungs.nii.gz"], "temporary file left behind"
