import numpy as np
import pytest

from covidct import phantom


def test_lesions_lie_inside_their_lung_with_their_density(small_phantom):
    ph = small_phantom
    assert ph.infection.shape == ph.lungs.shape == ph.volume.shape
    assert set(np.unique(ph.infection)) == {0, 1, 2}
    assert np.all(ph.lungs[ph.infection > 0] > 0), "lesion voxels outside the lungs"
    hu = ph.volume.array
    ggo = hu[ph.infection == 1]
    cons = hu[ph.infection == 2]
    assert -700 < np.median(ggo) < -300
    assert -100 < np.median(cons) < 50
    lung_only = (ph.lungs > 0) & (ph.infection == 0)
    assert np.median(hu[lung_only]) == pytest.approx(phantom.LUNG_HU, abs=20)


def test_right_lung_is_on_the_patient_right_image_left(small_phantom):
    cols = np.argwhere(small_phantom.lungs == 1)[:, 2]
    cols_left = np.argwhere(small_phantom.lungs == 2)[:, 2]
    assert cols.mean() < small_phantom.lungs.shape[2] / 2 < cols_left.mean()


def test_trachea_is_air_and_not_lung(small_phantom):
    ph = small_phantom
    k = ph.volume.shape[0] - 2  # a slice near the top, above the lung apices' width
    ny, nx = ph.volume.shape[1:]
    # The trachea sits on the midline, anterior of centre.
    column = ph.volume.array[k, : ny // 2, nx // 2]
    assert column.min() < -900
    assert not ph.lungs[k, : ny // 2, nx // 2].any()


def test_plausible_adult_lung_volume_and_same_seed_same_phantom():
    ph = phantom.make_phantom(shape=(60, 96, 96), spacing_mm=(5.0, 3.75, 3.75), seed=3)
    litres = (ph.lungs > 0).sum() * ph.volume.voxel_volume_ml / 1000
    assert 2.5 < litres < 8.0
    again = phantom.make_phantom(shape=(60, 96, 96), spacing_mm=(5.0, 3.75, 3.75), seed=3)
    np.testing.assert_array_equal(ph.volume.array, again.volume.array)
    other = phantom.make_phantom(shape=(60, 96, 96), spacing_mm=(5.0, 3.75, 3.75), seed=4)
    assert not np.array_equal(ph.volume.array, other.volume.array)


def test_lesions_grow_with_radius():
    small = phantom.make_phantom(lesions=[phantom.Lesion("ground_glass", "right", (0.5, 0.5, 0.5), 10.0)], noise_hu=0)
    big = phantom.make_phantom(lesions=[phantom.Lesion("ground_glass", "right", (0.5, 0.5, 0.5), 20.0)], noise_hu=0)
    assert (big.infection == 1).sum() > 4 * (small.infection == 1).sum() > 0


def test_invalid_lesions_are_refused():
    with pytest.raises(ValueError):
        phantom.Lesion("tumour", "right", (0.5, 0.5, 0.5), 10.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        phantom.Lesion("ground_glass", "middle", (0.5, 0.5, 0.5), 10.0)  # type: ignore[arg-type]
