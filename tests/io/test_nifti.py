import gzip

import nibabel as nib
import numpy as np
import pytest

from covidct.errors import InputError
from covidct.io import load
from covidct.report.nifti import write_nifti


def test_round_trip_is_exact(tmp_path, small_phantom):
    ref = small_phantom.volume
    path = write_nifti(ref.array, ref.geometry, tmp_path / "ct.nii.gz")
    vol = load(path)
    np.testing.assert_array_equal(vol.array, ref.array)
    np.testing.assert_allclose(vol.geometry.affine, ref.geometry.affine, atol=1e-5)
    assert vol.spacing_mm == pytest.approx(ref.spacing_mm)
    assert vol.is_hu and vol.meta.source_format == "nifti"


def test_any_stored_orientation_reads_to_the_same_canonical_volume(tmp_path, small_phantom):
    ref = small_phantom.volume
    path = write_nifti(ref.array, ref.geometry, tmp_path / "ct.nii")
    img = nib.load(path)
    # Re-store the voxels as RAS+ (the usual NIfTI convention): x and y axes flip.
    ras = nib.as_closest_canonical(img)
    assert not np.array_equal(np.asarray(ras.dataobj), np.asarray(img.dataobj))
    nib.save(ras, tmp_path / "ras.nii.gz")
    vol = load(tmp_path / "ras.nii.gz")
    np.testing.assert_array_equal(vol.array, ref.array)
    np.testing.assert_allclose(vol.geometry.affine, ref.geometry.affine, atol=1e-5)


def test_masks_are_written_back_in_the_inputs_voxel_order(tmp_path, small_phantom):
    ref = small_phantom.volume
    nib.save(nib.as_closest_canonical(nib.load(write_nifti(ref.array, ref.geometry, tmp_path / "a.nii"))),
             tmp_path / "ras.nii.gz")
    vol = load(tmp_path / "ras.nii.gz")
    out = nib.load(write_nifti(small_phantom.lungs, vol.geometry, tmp_path / "lungs.nii.gz"))
    src = nib.load(tmp_path / "ras.nii.gz")
    assert out.shape == src.shape
    np.testing.assert_allclose(out.affine, src.affine, atol=1e-5)
    # The mask's lung voxels are the CT's lung-density voxels in the input's own order.
    ct = np.asarray(src.dataobj)
    assert np.median(ct[np.asarray(out.dataobj) > 0]) < -700


def test_non_hu_volume_is_flagged(tmp_path, small_phantom):
    ref = small_phantom.volume
    scaled = ((ref.array.astype(np.float32) + 1024) / 16).astype(np.uint8)
    vol = load(write_nifti(scaled, ref.geometry, tmp_path / "u8.nii.gz"))
    assert not vol.is_hu
    assert any("Hounsfield" in w for w in vol.meta.warnings)


def test_unreadable_and_wrong_dimensional_nifti_are_refused(tmp_path):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(gzip.compress(b"not a nifti header at all"))
    with pytest.raises(InputError, match="cannot read NIfTI"):
        load(bad)
    half = tmp_path / "half.nii"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.int16), np.eye(4)), half)
    half.write_bytes(half.read_bytes()[:600])
    with pytest.raises(InputError, match="cannot read NIfTI"):
        load(half)
    four_d = tmp_path / "4d.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 3), np.int16), np.eye(4)), four_d)
    with pytest.raises(InputError, match="3-D"):
        load(four_d)
