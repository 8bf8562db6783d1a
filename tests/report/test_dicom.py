"""DICOM outputs (analyze --dicom): the SEG decodes to exactly the masks, the SR holds
report.json's figures, the secondary captures carry the disclaimer, all in the source study;
dciodvfy (Debian dicom3tools) finds no error in any of them."""

from __future__ import annotations

import shutil
import subprocess

import highdicom as hd
import numpy as np
import pydicom
import pytest

from covidct import phantom
from covidct.case import MAP_THRESHOLD
from covidct.errors import InputError
from covidct.io import load
from covidct.io.dicom import read_source_headers
from covidct.pipeline import analyze
from covidct.report import dicom, outputs
from covidct.volume import to_source_order


@pytest.fixture(scope="module")
def written(small_phantom, tmp_path_factory):
    """The small phantom as DICOM, read back, analyzed and written with --dicom."""
    tmp = tmp_path_factory.mktemp("dicom_out")
    phantom.write_dicom_series(small_phantom.volume, tmp / "series")
    volume = load(tmp / "series")
    analysis = analyze(volume)
    sources = read_source_headers(volume)
    report = outputs.write_report(analysis, tmp / "out", dicom_sources=sources)
    return analysis, sources, report, tmp / "out"


def sr_numbers(ds: pydicom.Dataset) -> list[tuple[str, str, float]]:
    """(concept name, finding site, value) of every NUM item of a TID 1500 report."""
    found = []

    def walk(items, group_site=""):
        for item in items:
            if item.ValueType == "NUM":
                sites = [c.ConceptCodeSequence[0].CodeMeaning for c in item.get("ContentSequence", [])
                         if c.ConceptNameCodeSequence[0].CodeMeaning == "Finding Site"]
                found.append((item.ConceptNameCodeSequence[0].CodeMeaning, sites[0] if sites else "",
                              float(item.MeasuredValueSequence[0].NumericValue)))
            walk(item.get("ContentSequence", []))

    walk(ds.ContentSequence)
    return found


def test_segmentation_decodes_to_the_masks_voxel_for_voxel(written):
    analysis, sources, report, out = written
    assert report["outputs"]["dicom"]["segmentation"] == "dicom/seg.dcm"
    seg = hd.seg.segread(out / "dicom" / "seg.dcm")
    uids = [s.SOPInstanceUID for s in sources]
    expected = {1: analysis.lungs.labels == 1, 2: analysis.lungs.labels == 2, 3: analysis.infection == 1,
                4: analysis.infection == 2, 5: analysis.maps >= MAP_THRESHOLD}
    for number, mask in expected.items():
        got = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[number],
                                                combine_segments=True)
        assert np.array_equal(got > 0, to_source_order(mask, analysis.volume.geometry)[0]), number
    assert expected[1].any() and expected[2].any() and (expected[3] | expected[4]).any()
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    assert seg.SeriesInstanceUID != sources[0].SeriesInstanceUID
    assert [d.SegmentLabel for d in seg.SegmentSequence] == list(dicom.SEGMENTS.values())


def test_report_holds_the_figures_of_report_json(written):
    _, sources, report, out = written
    sr = pydicom.dcmread(out / "dicom" / "sr.dcm")
    assert sr.StudyInstanceUID == sources[0].StudyInstanceUID and sr.Modality == "SR"
    numbers = sr_numbers(sr)
    scores = report["scores"]
    assert ("Corona score", "Lung", scores["corona_score_cm3"]) in numbers
    assert ("Volume", "Right lung", scores["lung_volume_ml"]["right"]) in numbers
    assert ("Volume", "Left lung", scores["lung_volume_ml"]["left"]) in numbers
    assert ("Percent of lung involved", "Right lung", scores["involvement_pct"]["right"]) in numbers
    assert ("Volume", "Lung", scores["infection_by_type_ml"]["ground_glass"]) in numbers
    codes = [item.ConceptCodeSequence[0].CodeMeaning for item in sr.ContentSequence[-1].ContentSequence[0].ContentSequence
             if item.ValueType == "CODE"]
    assert ("Abnormal" if report["decision"]["label"] == "abnormal" else "Normal") in codes
    texts = []

    def walk(items):
        for item in items:
            texts.append(str(item.get("TextValue", "")))
            walk(item.get("ContentSequence", []))

    walk(sr.ContentSequence)
    for model in ("lungs", "classifier", "infection"):
        assert f"weights sha256 {report['models'][model]['sha256']}" in texts, model


def test_key_slices_are_secondary_captures_with_the_disclaimer_burned_in(written):
    analysis, sources, report, out = written
    names = report["outputs"]["dicom"]["key_slices"]
    assert 1 <= len(names) <= outputs.MAX_KEY_SLICES
    series = set()
    for name in names:
        sc = pydicom.dcmread(out / name)
        assert sc.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage and sc.BurnedInAnnotation == "YES"
        assert sc.StudyInstanceUID == sources[0].StudyInstanceUID and sc.PatientID == sources[0].PatientID
        band = sc.pixel_array[:10]
        assert band.max() > 150 and band.mean() < 60  # light letters on a black band
        assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID in {s.SOPInstanceUID for s in sources}
        series.add(sc.SeriesInstanceUID)
    assert len(series) == 1


def test_burn_in_adds_a_band_and_keeps_the_picture():
    rgb = np.full((100, 120, 3), 128, np.uint8)
    out = dicom.burn_in(rgb)
    assert out.shape[1:] == (120, 3) and out.shape[0] > 100
    assert np.array_equal(out[out.shape[0] - 100:], rgb)
    assert out[: out.shape[0] - 100].max() > 150


def test_missing_type2_attributes_are_added_empty_not_invented():
    ds = pydicom.Dataset()
    ds.PatientID = "X"
    (filled,) = dicom.complete_type2([ds])
    assert filled.PatientName == "" and filled.PatientID == "X" and "PatientName" not in ds


def test_dicom_outputs_need_dicom_input(small_phantom, tmp_path):
    with pytest.raises(InputError, match="single-frame DICOM"):
        read_source_headers(small_phantom.volume)  # made in memory, like a NIfTI input


def test_analyze_dicom_refuses_nifti_input_before_any_work(small_phantom, tmp_path, capsys):
    from covidct.cli import main
    from covidct.report.nifti import write_nifti

    write_nifti(small_phantom.volume.array, small_phantom.volume.geometry, tmp_path / "ct.nii.gz")
    assert main(["analyze", str(tmp_path / "ct.nii.gz"), "-o", str(tmp_path / "out"), "--dicom"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "DICOM outputs need" in err[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(shutil.which("dciodvfy") is None,
                    reason="dciodvfy not installed (Debian package dicom3tools; .ci/run installs it)")
def test_dciodvfy_finds_no_error(written):
    _, _, report, out = written
    names = [report["outputs"]["dicom"]["segmentation"], report["outputs"]["dicom"]["report"],
             report["outputs"]["dicom"]["key_slices"][0]]
    for name in names:
        result = subprocess.run(["dciodvfy", str(out / name)], capture_output=True, text=True)
        lines = (result.stdout + result.stderr).splitlines()
        errors = [line for line in lines if line.startswith("Error")]
        assert not errors, (name, errors)
        assert lines, name  # it printed the IOD it checked
