import numpy as np
import pytest

from covidct.windowing import WINDOWS, apply_window, minmax, minmax_clahe, stack_windows, window


def test_window_maps_bounds_linearly_and_clips():
    hu = np.array([-2000, -1000, -500, 0, 3000], dtype=np.int16)
    out = window(hu, level=-500, width=1000)
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0])
    assert out.dtype == np.float32


def test_presets_match_their_definitions():
    assert (WINDOWS["pipeline"].low, WINDOWS["pipeline"].high) == (-1000, 0)
    assert (WINDOWS["lung"].level, WINDOWS["lung"].width) == (-600, 1500)
    assert (WINDOWS["mediastinum"].level, WINDOWS["mediastinum"].width) == (40, 400)
    assert (WINDOWS["medseg"].low, WINDOWS["medseg"].high) == (-1100, 150)
    np.testing.assert_allclose(apply_window(np.array([40.0]), "mediastinum"), [0.5])


def test_stack_windows_puts_one_channel_per_window_first():
    hu = np.linspace(-1200, 1200, 24, dtype=np.float32).reshape(2, 3, 4)
    stack = stack_windows(hu, ("lung", "mediastinum", "wide"))
    assert stack.shape == (3, 2, 3, 4)
    np.testing.assert_array_equal(stack[1], apply_window(hu, "mediastinum"))
    assert 0.0 <= stack.min() and stack.max() <= 1.0


def test_bad_window_arguments_raise():
    with pytest.raises(ValueError):
        window(np.zeros(3), level=0, width=0)
    with pytest.raises(ValueError, match="unknown window"):
        apply_window(np.zeros(3), "bone-ish")


def test_minmax_clahe_is_invariant_to_affine_intensity_changes():
    rng = np.random.default_rng(0)
    slices = rng.normal(size=(2, 64, 64)).astype(np.float32)
    out = minmax_clahe(slices)
    assert out.shape == slices.shape and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    # HU and 8-bit versions of one picture reach the same domain: scale and offset cancel.
    np.testing.assert_allclose(minmax_clahe(slices * 37.0 - 900.0), out, atol=1e-5)
    # A constant slice does not divide by zero.
    assert np.isfinite(minmax_clahe(np.full((1, 16, 16), 5.0))).all()


def test_minmax_scales_each_slice_to_the_unit_range():
    slices = np.stack([np.linspace(-1000, 200, 16).reshape(4, 4), np.linspace(3, 5, 16).reshape(4, 4)])
    out = minmax(slices)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0], out[1], atol=1e-6)
    np.testing.assert_allclose([out.min(), out.max()], [0.0, 1.0])
    assert not minmax(np.full((1, 4, 4), 7.0)).any()
