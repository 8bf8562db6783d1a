import numpy as np
import pytest

from covidct.volume import CANONICAL_ORNT, Geometry, Volume, spacing_from_affine, to_canonical


def test_to_canonical_undoes_flips_and_permutations():
    rng = np.random.default_rng(0)
    canon = rng.normal(size=(4, 5, 6))
    affine = np.eye(4)  # canonical (z, y, x) index -> LPS mm
    affine[:3, :3] = [[0, 0, 0.7], [0, 0.5, 0], [2.0, 0, 0]]
    # Store the same voxels as (x, y, z) with x and z reversed: source[i, j, k] = canon[3 - k, j, 5 - i].
    source = np.transpose(canon, (2, 1, 0))[::-1, :, ::-1]
    source_to_canon = np.array([[0, 0, -1, 3], [0, 1, 0, 0], [-1, 0, 0, 5], [0, 0, 0, 1]], dtype=float)
    source_affine = affine @ source_to_canon
    out, out_affine, source_ornt = to_canonical(source, source_affine)
    np.testing.assert_array_equal(out, canon)
    np.testing.assert_allclose(out_affine, affine, atol=1e-12)
    assert not np.array_equal(source_ornt, CANONICAL_ORNT)


def test_spacing_along_normal_for_sheared_affine():
    step, tilt = 4.22, np.radians(18.5)
    affine = np.eye(4)
    affine[:3, 0] = [0, 0, step]  # the table moves along z
    affine[:3, 1] = 0.5 * np.array([0, np.cos(tilt), -np.sin(tilt)])  # tilted column direction
    affine[:3, 2] = [0.5, 0, 0]
    dz, dy, dx = spacing_from_affine(affine)
    assert dz == pytest.approx(step * np.cos(tilt))
    assert (dy, dx) == pytest.approx((0.5, 0.5))
    assert Geometry(affine=affine).tilt_deg == pytest.approx(18.5)


def test_volume_rejects_bad_shapes():
    g = Geometry(affine=np.eye(4))
    with pytest.raises(ValueError):
        Volume(array=np.zeros((4, 4)), spacing_mm=(1, 1, 1), is_hu=True, geometry=g)
    with pytest.raises(ValueError):
        Volume(array=np.zeros((2, 4, 4)), spacing_mm=(0, 1, 1), is_hu=True, geometry=g)
    v = Volume(array=np.zeros((2, 4, 4)), spacing_mm=(2.0, 0.5, 0.5), is_hu=True, geometry=g)
    assert v.shape == (2, 4, 4)
    assert v.voxel_volume_ml == pytest.approx(0.0005)
