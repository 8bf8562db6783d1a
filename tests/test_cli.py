"""The command line: output, exit codes, one-line errors."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

from covidct.cli import main


def test_info_json_on_a_phantom_series(phantom_series, small_phantom, capsys):
    assert main(["info", str(phantom_series), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["shape_zyx"] == list(small_phantom.volume.shape)
    assert info["n_slices"] == small_phantom.volume.shape[0]
    assert info["spacing_mm_zyx"] == pytest.approx(list(small_phantom.volume.spacing_mm))
    assert info["hu_min"] == float(small_phantom.volume.array.min())
    assert info["is_hu"] is True and info["modality"] == "CT" and info["patient_id"] == "PHANTOM"
    assert info["z_first_mm"] < info["z_last_mm"]
    for key in ("study_uid", "series_uid", "hu_max"):
        assert info[key]


def test_info_table(phantom_series, capsys):
    assert main(["info", str(phantom_series)]) == 0
    out = capsys.readouterr().out
    assert "shape_zyx" in out and "spacing_mm_zyx" in out


def test_user_error_is_one_line_exit_2(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("covidct: error: ") and "missing" in lines[0]


def test_debug_shows_the_traceback(tmp_path):
    from covidct.errors import InputError

    with pytest.raises(InputError):
        main(["--debug", "info", str(tmp_path / "missing")])


def test_phantom_command_writes_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["phantom", "-o", str(out), "--slices", "12", "--size", "48"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["ct.nii.gz", "dicom", "infection.nii.gz", "lungs.nii.gz"]
    assert len(list((out / "dicom").iterdir())) == 12
    before = sorted(p.name for p in out.rglob("*"))
    assert main(["phantom", "-o", str(out), "--slices", "5", "--size", "48"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert sorted(p.name for p in out.rglob("*")) == before
    assert main(["phantom", "-o", str(out), "--slices", "5", "--size", "48", "--force"]) == 0
    assert len(list((out / "dicom").iterdir())) == 5
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folder left behind"


DONE_WHEN_ERRORS = [
    "missing/path",
    "dicom/empty",
    "dicom/not_dicom",
    "dicom/truncated/CT_small_truncated.dcm",
    "dicom/scout",
    "dicom/screenshot",
    "dicom/not_ct",
]


@pytest.mark.parametrize("relative", DONE_WHEN_ERRORS)
def test_console_script_rejects_bad_input_in_one_line(shared_data, relative):
    result = subprocess.run(
        [sys.executable, "-m", "covidct.cli", "info", str(shared_data / relative)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("covidct: error: "), result.stderr
    assert "Traceback" not in result.stderr


def test_console_script_rejects_unreadable_nifti(tmp_path):
    bad = tmp_path / "scan.nii.gz"
    bad.write_bytes(b"\x1f\x8b garbage")
    result = subprocess.run(
        [sys.executable, "-m", "covidct.cli", "info", str(bad)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1


def test_done_when_p001_geometry(shared_data):
    result = subprocess.run(
        [sys.executable, "-m", "covidct.cli", "info", str(shared_data / "covid_ct_md/COVID/P001"), "--json"],
        capture_output=True, text=True, timeout=120, check=True,
    )
    info = json.loads(result.stdout)
    assert info["shape_zyx"] == [148, 512, 512]
    assert info["spacing_mm_zyx"][0] == pytest.approx(2.0)
    assert info["hu_min"] == pytest.approx(-1024, abs=5)
    assert info["z_first_mm"] < info["z_last_mm"]


def test_segment_writes_mask_in_input_geometry_and_overlays(phantom_series, small_phantom, tmp_path, capsys):
    import nibabel as nib
    import numpy as np

    out = tmp_path / "lungs.nii.gz"
    assert main(["segment", str(phantom_series), "-o", str(out), "--overlays", str(tmp_path / "ov"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["lung_volume_ml"]["total"] > 0 and result["model"]["name"] == "lungs"
    assert len(result["overlays"]) >= 3 and all(p.endswith(".png") for p in result["overlays"])
    mask = nib.load(out)
    assert mask.shape == small_phantom.volume.shape[::-1]  # NIfTI (x, y, z)
    assert set(np.unique(np.asarray(mask.dataobj))) == {0, 1, 2}


def test_segment_refuses_a_non_nifti_output(phantom_series, tmp_path, capsys):
    assert main(["segment", str(phantom_series), "-o", str(tmp_path / "lungs.png")]) == 2
    assert "NIfTI" in capsys.readouterr().err
    assert not (tmp_path / "lungs.png").exists()


def test_segment_refuses_damaged_weights(phantom_series, tmp_path, capsys):
    import shutil

    from covidct.models.weights import SHIPPED

    for suffix in (".json", ".safetensors"):
        shutil.copy(SHIPPED / f"lungs{suffix}", tmp_path / f"w{suffix}")
    card = json.loads((tmp_path / "w.json").read_text())
    card["weights_file"] = "w.safetensors"
    card["sha256"] = "0" * 64
    (tmp_path / "w.json").write_text(json.dumps(card))
    assert main(["segment", str(phantom_series), "-o", str(tmp_path / "m.nii.gz"), "--weights", str(tmp_path / "w.json")]) == 2
    assert "sha256" in capsys.readouterr().err and not (tmp_path / "m.nii.gz").exists()


def test_classify_prints_one_json_line_per_slice(phantom_series, small_phantom, capsys):
    assert main(["classify", str(phantom_series), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == small_phantom.volume.shape[0]
    assert [r["index"] for r in rows] == list(range(len(rows)))
    for r in rows:
        assert list(r["probabilities"]) == ["Normal", "COVID-19", "CAP"]
        assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
        assert r["p_abnormal"] == pytest.approx(1 - r["probabilities"]["Normal"], abs=1e-3)
    assert rows[0]["z_mm"] < rows[-1]["z_mm"]


def test_classify_a_2d_image(shared_data, capsys):
    image = sorted((shared_data / "ucsd_covid_ct" / "val" / "COVID").glob("*.png"))[0]
    assert main(["classify", str(image), "--json"]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["z_mm"] is None and 0.0 <= row["p_abnormal"] <= 1.0


@pytest.fixture(scope="module")
def slices_cache(tmp_path_factory) -> Path:
    """Where the classifier evaluations of this module share their prepared slices (the first
    one writes them)."""
    return tmp_path_factory.mktemp("classifier") / "slices.npz"


def test_evaluate_classifier_writes_metrics_and_roc(shared_data, slices_cache, tmp_path, capsys):
    """The shipped classifier on its validation split (zenodo20 val cases, covid_ct_md P001): data
    it did not train on. It trained on every UCSD picture, so UCSD gets no figure. The floor sits
    below the measured P001 AUC (0.93) so that it flags a broken pipeline, not noise."""
    from PIL import Image

    out = tmp_path / "eval"
    assert main(["evaluate", "classifier", "--out", str(out), "--cache", str(slices_cache), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert json.loads((out / "classifier_metrics.json").read_text()) == result
    assert Image.open(out / "classifier_roc.png").size[0] > 300
    assert "ucsd" not in result["sources"]
    assert result["sources"]["covid_ct_md"]["groups"] == ["P001"]
    assert result["sources"]["covid_ct_md"]["auc_abnormal"] >= 0.85
    assert result["picture_threshold"] > result["threshold"]  # 8-bit pictures have their own operating point
    assert result["sources"]["zenodo20"]["slices"] == 76 and result["sources"]["zenodo20"]["positives"] == 76


def test_evaluate_classifier_scores_no_picture_the_card_trained_on(shared_data, slices_cache, tmp_path, capsys):
    """A card trained on every UCSD picture (``--all-ucsd``) gets no UCSD figure; one that held
    out a fold of patients is scored on their pictures only."""
    from covidct.models.weights import SHIPPED

    card = json.loads((SHIPPED / "classifier.json").read_text())
    (tmp_path / "classifier.safetensors").symlink_to(SHIPPED / "classifier.safetensors")
    for held_out, pictures in (([], None), (["Patient 1", "Patient 2"], 2)):
        card["training"]["ucsd_val_patients"] = held_out
        (tmp_path / "classifier.json").write_text(json.dumps(card))
        assert main(["evaluate", "classifier", "--weights", str(tmp_path / "classifier.json"), "--out",
                     str(tmp_path / "eval"), "--cache", str(slices_cache), "--json"]) == 0
        sources = json.loads(capsys.readouterr().out)["sources"]
        assert sources["covid_ct_md"]["groups"] == ["P001"]
        assert (sources["ucsd"]["groups"] if "ucsd" in sources else None) == pictures


def test_evaluate_infection_uses_the_slices_the_card_held_out(shared_data, tmp_path, capsys):
    """The shipped model held out MedSeg 50-58 and 67; a card that held out none gets no MedSeg
    figure (never one on its own training slices)."""
    from covidct.train import infection as train_infection
    from covidct.models.weights import SHIPPED

    assert main(["evaluate", "infection", "--json"]) == 0
    flip = json.loads(capsys.readouterr().out)
    assert flip["flip"] and flip["medseg"]["slices"] == list(train_infection.MEDSEG_VAL)
    assert flip["medseg"]["dice_mean_per_image"]["infection"] >= 0.6  # measured 0.70
    assert main(["evaluate", "infection", "--no-flip", "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert not plain["flip"] and plain["medseg"]["dice_pooled"] != flip["medseg"]["dice_pooled"]

    card = json.loads((SHIPPED / "infection.json").read_text())
    card["training"]["split"]["medseg_val"] = []
    (tmp_path / "infection.json").write_text(json.dumps(card))
    (tmp_path / "infection.safetensors").symlink_to(SHIPPED / "infection.safetensors")
    assert main(["evaluate", "infection", "--weights", str(tmp_path / "infection.json"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["medseg"]["n_slices"] == 0


def test_analyze_writes_a_report_and_refuses_to_overwrite(phantom_series, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["analyze", str(phantom_series), "-o", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["input"]["format"] == "dicom" and (out / "report.html").is_file()
    assert main(["analyze", str(phantom_series), "-o", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path / "missing"), "-o", str(tmp_path / "o2")]) == 2
    assert not (tmp_path / "o2").exists()


def test_train_warp_interpolation_defaults_are_the_recipes():
    """The parser's defaults (literals: the CLI does not import the training modules) follow train()."""
    from covidct.cli import build_parser
    from covidct.train import classifier as train_classifier
    from covidct.train import infection as train_infection

    parser = build_parser()
    assert parser.parse_args(["train", "infection"]).warp_interpolation == train_infection.WARP_INTERPOLATION
    assert parser.parse_args(["train", "infection"]).init_from_lungs == train_infection.INIT_FROM_LUNGS
    infection_defaults = inspect.signature(train_infection.train).parameters
    for option in ("members", "pseudo_teacher"):
        assert getattr(parser.parse_args(["train", "infection"]), option) == infection_defaults[option].default
    classifier_default = inspect.signature(train_classifier.train).parameters["warp_interpolation"].default
    assert parser.parse_args(["train", "classifier"]).warp_interpolation == classifier_default


def test_demo_analyzes_the_phantom(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["phantom"]["lesion_volume_ml"] > 0
    assert report["input"]["shape_zyx"] == [96, 256, 256]
    assert report["scores"]["lung_volume_ml"]["total"] > 1000
    assert (out / "overview3d.png").stat().st_size > 1000


def one_line_error(argv: list[str], capsys) -> str:
    """Run the CLI on ``argv``; assert exit status 2 and one line on stderr, and return that line."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_train_classifier_layer3_lr_factor_without_pretraining_is_one_line_exit_2(tmp_path, capsys):
    out = tmp_path / "classifier"
    argv = ["train", "classifier", "--data", str(tmp_path), "--out", str(out), "--layer3-lr-factor", "0.1"]
    assert "--pretrain-lesions" in one_line_error(argv, capsys)
    assert not list(tmp_path.glob("classifier*"))  # nothing written


def test_train_lungs_dense_lesions_out_of_range_is_one_line_exit_2(tmp_path, capsys):
    out = tmp_path / "lungs"
    argv = ["train", "lungs", "--data", str(tmp_path), "--out", str(out), "--dense-lesions", "1.5"]
    assert "dense_lesions" in one_line_error(argv, capsys)
    assert not list(tmp_path.glob("lungs*"))  # nothing written


def test_train_classifier_map_check_out_of_range_or_failed_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    from covidct.train import classifier as train_classifier

    argv = ["train", "classifier", "--data", str(tmp_path), "--out", str(tmp_path / "classifier"), "--map-check"]
    assert "--map-check" in one_line_error(argv + ["0"], capsys)

    def no_network_passes(*args, **kwargs):
        raise train_classifier.MapCheckFailed("0 of 3 networks drawn passed the map check")

    monkeypatch.setattr(train_classifier, "train", no_network_passes)
    assert "map check" in one_line_error(argv + ["0.2"], capsys)
    assert not list(tmp_path.glob("classifier*"))
