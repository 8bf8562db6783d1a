import json

import pytest

from covidct.pipeline import analyze
from covidct.errors import InputError
from covidct.report import outputs

#: The report.json schema of ../shared/DESIGN.md, as key sets.
SCHEMA_KEYS = {
    "": {"schema", "covidct_version", "disclaimer", "input", "models", "decision", "scores", "slices", "outputs",
         "timing_s", "warnings"},
    "input": {"path", "format", "patient_id", "study_uid", "series_uid", "study_date", "shape_zyx", "spacing_mm_zyx"},
    "models": {"lungs", "classifier", "infection"},
    "decision": {"label", "diagnosis", "probabilities", "positive_slices", "lung_slices", "positive_slice_ratio",
                 "threshold"},
    "scores": {"corona_score_cm3", "infection_volume_ml", "infection_by_type_ml", "lung_volume_ml", "involvement_pct",
               "zones_pct"} | {
        # added (DESIGN: "Fields may be added"): the typed segmentation's involvement
        "segmentation_volume_ml", "segmentation_involvement_pct", "segmentation_zones_pct", "infection_by_type_pct",
    },
    "outputs": {"html", "lungs", "localization", "infection", "overview_png"} | {"dicom"},  # added: --dicom
    "timing_s": {"load", "lungs", "classify", "localize", "infection", "report", "total"},
}


@pytest.fixture(scope="module")
def analysis(small_phantom):
    return analyze(small_phantom.volume)


def test_report_folder_matches_the_design_schema(analysis, tmp_path):
    out = tmp_path / "report"
    report = outputs.write_report(analysis, out, load_s=0.5)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["report.json", "report.html", "lungs.nii.gz", "localization.nii.gz", "infection.nii.gz", "overview3d.png"]
    )
    assert report["models"]["infection"]["name"] == "infection"
    by_type = report["scores"]["infection_by_type_ml"]
    assert by_type["ground_glass"] + by_type["consolidation"] == pytest.approx(
        report["scores"]["segmentation_volume_ml"], abs=0.02)
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk == report and report["schema"] == "covidct.report/1"
    assert report["outputs"]["dicom"] is None  # not asked for
    for section, keys in SCHEMA_KEYS.items():
        assert set(report[section] if section else report) == keys, section
    assert set(report["slices"][0]) == {"index", "z_mm", "lung_area_mm2", "p_abnormal", "probabilities", "positive"}
    assert len(report["slices"]) == analysis.volume.shape[0]
    assert [s["index"] for s in report["slices"] if s["positive"]] == analysis.positive.tolist()
    z = [s["z_mm"] for s in report["slices"]]
    assert z == sorted(z)  # inferior -> superior
    assert report["scores"]["zones_pct"].keys() == {f"{s}_{p}" for s in ("right", "left") for p in ("upper", "middle", "lower")}
    assert report["timing_s"]["load"] == 0.5 and report["timing_s"]["total"] >= sum(analysis.timing_s.values())
    html = (out / "report.html").read_text()
    assert "Research software, not a medical device." in html and html.count("data:image/png;base64,") >= 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_refuses_a_non_empty_folder_and_replaces_it_with_force(analysis, tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(InputError, match="not empty"):
        outputs.write_report(analysis, out)
    assert (out / "keep.txt").exists()
    outputs.write_report(analysis, out, force=True)
    assert not (out / "keep.txt").exists() and (out / "report.json").exists()


def test_a_failure_while_writing_leaves_nothing(analysis, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(outputs.figures, "overview_3d", boom)
    with pytest.raises(RuntimeError):
        outputs.write_report(analysis, tmp_path / "r")
    assert list(tmp_path.iterdir()) == []
