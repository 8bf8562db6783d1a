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


def test_inserted_lesions_are_the_phantoms_lesions_filled_into_the_scan():
    """insert_lesions places a lesion where make_phantom does, and fills lung at -850 HU to the
    lesion's density while denser voxels (vessels) keep showing through."""
    shape, spacing = (24, 64, 64), (5.0, 5.625, 5.625)
    healthy = phantom.make_phantom(shape=shape, spacing_mm=spacing, lesions=[], noise_hu=0.0, seed=3)
    with_lesions = phantom.make_phantom(shape=shape, spacing_mm=spacing, noise_hu=0.0, seed=3)
    before = healthy.volume.array.copy()
    volume, infection = phantom.insert_lesions(healthy.volume, healthy.lungs, phantom.DEFAULT_LESIONS)
    np.testing.assert_array_equal(infection, with_lesions.infection)
    np.testing.assert_array_equal(healthy.volume.array, before)  # the input is not modified
    np.testing.assert_array_equal(volume.array[infection == 0], before[infection == 0])
    parenchyma = before == phantom.LUNG_HU
    assert set(np.unique(volume.array[(infection == 1) & parenchyma])) == {-500}
    assert set(np.unique(volume.array[(infection == 2) & parenchyma])) == {-25}
    vessel = (infection > 0) & (before == phantom.SOFT_TISSUE_HU)
    assert vessel.any() and np.all(volume.array[vessel] == phantom.SOFT_TISSUE_HU)
    assert volume.spacing_mm == healthy.volume.spacing_mm and volume.meta == healthy.volume.meta


def test_lesions_are_inserted_only_into_hu_of_matching_shape(small_phantom):
    from dataclasses import replace

    lesions = phantom.DEFAULT_LESIONS
    with pytest.raises(ValueError, match="HU"):
        phantom.insert_lesions(replace(small_phantom.volume, is_hu=False), small_phantom.lungs, lesions)
    with pytest.raises(ValueError, match="do not match"):
        phantom.insert_lesions(small_phantom.volume, small_phantom.lungs[:-1], lesions)
    with pytest.raises(ValueError, match="no left lung"):
        phantom.insert_lesions(small_phantom.volume, np.where(small_phantom.lungs == 2, 0, small_phantom.lungs), lesions)


def test_scaled_lesions_multiply_the_radii_and_vanish_at_zero():
    grown = phantom.scaled_lesions(1.5)
    assert [les.radius_mm for les in grown] == [les.radius_mm * 1.5 for les in phantom.DEFAULT_LESIONS]
    assert [les.center for les in grown] == [les.center for les in phantom.DEFAULT_LESIONS]
    assert phantom.scaled_lesions(0.0) == ()
    with pytest.raises(ValueError):
        phantom.scaled_lesions(-1.0)
