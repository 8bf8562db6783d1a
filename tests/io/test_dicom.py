"""DICOM ingestion: exact checks on phantom series, realistic ones on ../shared/data."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from covidct import phantom
from covidct.errors import InputError
from covidct.io import load, load_dicom
from covidct.volume import Geometry, Volume

# ---------------------------------------------------------------------------------------------
# phantom series: exact expectations


def _edit(path: Path, **values) -> None:
    ds = pydicom.dcmread(path)
    for key, value in values.items():
        setattr(ds, key, value)
    ds.save_as(path)


def test_phantom_series_loads_exactly(small_phantom, phantom_series):
    vol = load(phantom_series)
    ref = small_phantom.volume
    assert vol.shape == ref.shape
    np.testing.assert_array_equal(vol.array, ref.array)
    assert vol.array.dtype == np.int16 and vol.is_hu
    assert vol.spacing_mm == pytest.approx(ref.spacing_mm)
    np.testing.assert_allclose(vol.geometry.affine, ref.geometry.affine, atol=1e-5)
    z = np.array(vol.meta.slice_z_mm)
    assert np.all(np.diff(z) > 0), "axis 0 must run inferior -> superior"
    assert vol.meta.patient_id == "PHANTOM" and vol.meta.study_date == "2026-01-01"
    assert vol.meta.series_uid == ref.meta.series_uid and vol.meta.warnings == ()


def test_order_comes_from_positions_not_file_names(phantom_series, small_phantom):
    files = sorted(phantom_series.iterdir())
    rng = np.random.default_rng(0)
    for i, f in zip(rng.permutation(len(files)), files):
        f.rename(phantom_series / f"x{i:03d}")
    # InstanceNumber and SliceLocation lie too; only ImagePositionPatient may be trusted.
    for i, f in enumerate(sorted(phantom_series.iterdir())):
        _edit(f, InstanceNumber=i + 1, SliceLocation="0")
    np.testing.assert_array_equal(load(phantom_series).array, small_phantom.volume.array)


@pytest.mark.parametrize("intercept", [-1024.0, -2048.0, -1500.0])
def test_rescale_intercept_is_applied(tmp_path, small_phantom, intercept):
    phantom.write_dicom_series(small_phantom.volume, tmp_path, rescale_intercept=intercept)
    np.testing.assert_array_equal(load(tmp_path).array, small_phantom.volume.array)


def test_rescale_slope_is_applied_per_slice(phantom_series, small_phantom):
    files = sorted(phantom_series.iterdir())
    for f in files[::2]:  # every other slice stored at half the values with slope 2
        ds = pydicom.dcmread(f)
        hu = ds.pixel_array.astype(np.float64) - 1024
        stored = np.rint((hu + 2048) / 2).astype(np.uint16)
        ds.PixelData = stored.tobytes()
        ds.RescaleSlope, ds.RescaleIntercept = "2", "-2048"
        ds.save_as(f)
    vol = load(phantom_series)
    np.testing.assert_allclose(vol.array, small_phantom.volume.array, atol=1.0)
    assert np.abs(vol.array - small_phantom.volume.array).max() > 0  # the halved slices lost a bit


def test_largest_axial_series_is_chosen_and_scouts_are_skipped(tmp_path, small_phantom):
    vol = small_phantom.volume
    phantom.write_dicom_series(vol, tmp_path / "a", series_uid="1.2.3.4.1", series_number=2)
    short = Volume(array=vol.array[:10], spacing_mm=vol.spacing_mm, is_hu=True, geometry=vol.geometry, meta=vol.meta)
    phantom.write_dicom_series(short, tmp_path / "b", series_uid="1.2.3.4.2", series_number=3)
    scouts = phantom.write_dicom_series(
        vol, tmp_path / "c", series_uid="1.2.3.4.3", series_number=4, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER")
    )
    # Make the scout "series" the largest by count, to prove it is skipped by type.
    for i, f in enumerate(scouts[:3]):
        shutil.copy(f, tmp_path / "c" / f"copy{i}")
    loaded = load(tmp_path)
    assert loaded.meta.series_uid == "1.2.3.4.1"
    assert loaded.shape == vol.shape


def test_same_instance_twice_is_read_once_with_a_warning(phantom_series, small_phantom):
    first = sorted(phantom_series.iterdir())[5]
    shutil.copy(first, phantom_series / "copy.dcm")
    vol = load(phantom_series)
    assert vol.shape == small_phantom.volume.shape
    assert any("duplicate" in w for w in vol.meta.warnings)


def test_two_images_at_one_position_are_refused(phantom_series):
    f = sorted(phantom_series.iterdir())[5]
    other = phantom_series / "other.dcm"
    shutil.copy(f, other)
    _edit(other, SOPInstanceUID="1.2.3.999")
    with pytest.raises(InputError, match="share a slice position"):
        load(phantom_series)


def test_missing_slice_is_refused_or_resampled(phantom_series, small_phantom):
    files = sorted(phantom_series.iterdir())
    files[10].unlink()
    with pytest.raises(InputError, match="uneven slice spacing.*resample-gaps"):
        load(phantom_series)
    vol = load(phantom_series, on_gap="resample")
    ref = small_phantom.volume.array.astype(np.float32)
    assert vol.shape == small_phantom.volume.shape
    assert vol.spacing_mm == pytest.approx(small_phantom.volume.spacing_mm)
    missing = ref.shape[0] - 1 - 10  # files run head -> feet
    np.testing.assert_allclose(vol.array[missing], (ref[missing - 1] + ref[missing + 1]) / 2, atol=1e-3)
    np.testing.assert_array_equal(vol.array[missing + 1], ref[missing + 1])
    assert any("resampled" in w for w in vol.meta.warnings)


def test_flipped_orientation_is_brought_to_canonical(tmp_path, small_phantom):
    """A series stored patient-left to right and posterior to anterior (IOP -1 0 0 0 -1 0)."""
    ref = small_phantom.volume
    nz, ny, nx = ref.shape
    flip = np.eye(4)
    flip[1, 1], flip[1, 3] = -1, ny - 1
    flip[2, 2], flip[2, 3] = -1, nx - 1
    flipped = Volume(
        array=ref.array[:, ::-1, ::-1],
        spacing_mm=ref.spacing_mm,
        is_hu=True,
        geometry=Geometry(affine=ref.geometry.affine @ flip),
        meta=ref.meta,
    )
    phantom.write_dicom_series(flipped, tmp_path)
    assert pydicom.dcmread(next(tmp_path.iterdir())).ImageOrientationPatient[0] == -1
    vol = load(tmp_path)
    np.testing.assert_array_equal(vol.array, ref.array)
    np.testing.assert_allclose(vol.geometry.affine, ref.geometry.affine, atol=1e-5)


def test_gantry_tilt_keeps_planes_and_measures_spacing_along_the_normal(phantom_series, small_phantom):
    tilt = np.radians(20.0)
    col = [0.0, np.cos(tilt), -np.sin(tilt)]
    for f in phantom_series.iterdir():
        ds = pydicom.dcmread(f)
        ds.ImageOrientationPatient = [f"{v:.7f}" for v in [1.0, 0.0, 0.0, *col]]
        ds.GantryDetectorTilt = "20"
        ds.save_as(f)  # positions still step along the table (z): a sheared stack
    vol = load(phantom_series)
    step = small_phantom.volume.spacing_mm[0]
    assert vol.spacing_mm[0] == pytest.approx(step * np.cos(tilt), rel=1e-5)
    assert vol.geometry.tilt_deg == pytest.approx(20.0, abs=0.01)
    assert any("gantry tilt 20.0" in w for w in vol.meta.warnings)
    np.testing.assert_array_equal(vol.array, small_phantom.volume.array)


def test_truncated_slice_fails_the_whole_series(phantom_series):
    f = sorted(phantom_series.iterdir())[3]
    f.write_bytes(f.read_bytes()[:-2000])
    with pytest.raises(InputError, match="cannot decode pixel data"):
        load(phantom_series)


def test_non_ct_modality_is_refused(phantom_series):
    for f in phantom_series.iterdir():
        _edit(f, Modality="MR", SOPClassUID="1.2.840.10008.5.1.4.1.1.4")
    with pytest.raises(InputError, match="MR images"):
        load(phantom_series)


def test_empty_and_missing_inputs(tmp_path):
    (tmp_path / ".keep").write_text("hidden files are ignored")
    with pytest.raises(InputError, match="empty"):
        load(tmp_path)
    with pytest.raises(InputError, match="no such file"):
        load(tmp_path / "nope")


def test_single_file_loads_one_slice(phantom_series, small_phantom):
    f = sorted(phantom_series.iterdir())[0]  # the most superior slice
    vol = load_dicom(f)
    assert vol.shape == (1,) + small_phantom.volume.shape[1:]
    np.testing.assert_array_equal(vol.array[0], small_phantom.volume.array[-1])
    assert vol.spacing_mm[0] == pytest.approx(small_phantom.volume.spacing_mm[0])


# ---------------------------------------------------------------------------------------------
# ../shared/data/dicom: one expectation per folder of README.csv

LOADS = {
    # folder: (shape, spacing_mm, (hu_min, hu_max), is_hu, warning substring or None)
    "ct_series_philips": ((3, 512, 512), (5.0, 0.451171875, 0.451171875), (-1024, 777), True, None),
    "ct_series_philips_j2k": ((4, 512, 512), (1.0, 0.451171875, 0.451171875), (-1024, 788), True, None),
    "ct_series_ge_small": ((5, 16, 16), (2.5, 0.488281, 0.488281), (-888, 85), True, None),
    "duplicate": ((5, 16, 16), (2.5, 0.488281, 0.488281), (-888, 85), True, "duplicate"),
    "mixed_series": ((5, 16, 16), (2.5, 0.488281, 0.488281), (-888, 85), True, None),
    "gantry_tilt": ((3, 512, 512), (4.002, 0.4882812, 0.4882812), (-1500, 1751), True, "gantry tilt 18.5"),
    "gantry_tilt_philips": ((3, 512, 512), (2.371, 0.482421875, 0.482421875), (-1024, 789), True, "gantry tilt 18.5"),
    "multiframe": ((2, 512, 512), (10.0, 0.388672, 0.388672), None, False, "not Hounsfield"),
    "single_slice_j2k": ((1, 512, 512), (5.0, 0.431, 0.431), (-2000, 1896), True, "22.0 deg off axial"),
}
REJECTS = {
    # folder: what the one-line message must say
    "empty": "folder is empty",
    "not_dicom": "4 files that are not DICOM; 1 DICOM objects that are not images",
    "not_ct": "MR images",
    "scout": "localizers",
    "screenshot": "secondary captures",
    "truncated": "cannot decode pixel data",
    "missing_slice": "uneven slice spacing",
    "uneven_spacing": "uneven slice spacing",
}


def test_every_edge_case_folder_has_an_expectation(shared_data):
    with open(shared_data / "dicom" / "README.csv", newline="") as fh:
        folders = {row["folder"] for row in csv.DictReader(fh)}
    assert folders == set(LOADS) | set(REJECTS)


@pytest.mark.parametrize("folder", sorted(LOADS))
def test_edge_case_loads(shared_data, folder):
    shape, spacing, hu_range, is_hu, warning = LOADS[folder]
    vol = load(shared_data / "dicom" / folder)
    assert vol.shape == shape
    assert vol.spacing_mm == pytest.approx(spacing, abs=1e-3)
    assert vol.is_hu is is_hu
    if hu_range:
        assert (vol.array.min(), vol.array.max()) == hu_range
    if warning:
        assert any(warning in w for w in vol.meta.warnings), vol.meta.warnings
    else:
        assert vol.meta.warnings == ()
    assert np.all(np.diff(vol.meta.slice_z_mm) > 0)


def test_ge_series_is_sorted_by_position_not_name(shared_data):
    vol = load(shared_data / "dicom" / "ct_series_ge_small")
    np.testing.assert_allclose(vol.meta.slice_z_mm, [-1.2375, 1.2625, 3.7625, 6.2625, 8.7625], atol=1e-4)
    # File 3353 is the most inferior slice (z = -1.24): it must be slice 0.
    ds = pydicom.dcmread(shared_data / "dicom" / "ct_series_ge_small" / "3353")
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(vol.array[0], hu)


def test_missing_slice_can_be_resampled_on_request(shared_data):
    vol = load(shared_data / "dicom" / "missing_slice", on_gap="resample")
    assert vol.shape == (5, 16, 16)
    assert vol.spacing_mm[0] == pytest.approx(2.5)


@pytest.mark.parametrize("folder", sorted(REJECTS))
def test_edge_case_is_rejected_with_a_clear_message(shared_data, folder):
    with pytest.raises(InputError) as info:
        load(shared_data / "dicom" / folder)
    message = str(info.value)
    assert REJECTS[folder] in message
    assert "\n" not in message and folder in message


# ---------------------------------------------------------------------------------------------
# ../shared/data/covid_ct_md: real chest CT studies

STUDIES = {
    "COVID/P001": (148, 0.748046875),
    "CAP/cap001": (168, 0.58984375),
    "Normal/normal001": (154, 0.634765625),
}


@pytest.mark.parametrize("study", sorted(STUDIES))
def test_covid_ct_md_study(shared_data, study):
    n, pixel_mm = STUDIES[study]
    folder = shared_data / "covid_ct_md" / study
    vol = load(folder)
    assert vol.shape == (n, 512, 512)
    assert vol.spacing_mm == pytest.approx((2.0, pixel_mm, pixel_mm))
    assert vol.array.min() == -1024 and vol.is_hu
    assert vol.meta.modality == "CT" and vol.meta.warnings == ()
    z = np.array(vol.meta.slice_z_mm)
    np.testing.assert_allclose(np.diff(z), 2.0, atol=1e-3)  # inferior -> superior
    # The radiologist labels join exactly by slice location (their rows run head -> feet).
    label_file = folder.parent / f"{folder.name}_slice_labels.csv"
    with open(label_file, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(float(r["slice_location_mm"]) for r in rows) == pytest.approx(z.tolist(), abs=1e-3)
    # Air outside the body and soft tissue inside: a sane HU histogram on the middle slice.
    mid = vol.array[n // 2]
    assert np.percentile(mid, 5) < -900 and -200 < np.median(mid[200:312, 200:312]) < 200
