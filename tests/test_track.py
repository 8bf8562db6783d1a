import json

import pytest

from covidct.cli import main
from covidct.errors import InputError
from covidct.track import follow_up


def _report(date, score, pct, patient="P1", uid=None):
    return {
        "schema": "covidct.report/1",
        "input": {"study_date": date, "study_uid": uid or f"1.2.{date}", "patient_id": patient},
        "decision": {"label": "abnormal", "diagnosis": "COVID-19"},
        "scores": {"corona_score_cm3": score, "infection_volume_ml": score / 2,
                   "lung_volume_ml": {"total": 5000.0}, "involvement_pct": {"right": pct, "left": pct, "total": pct}},
    }


def test_follow_up_orders_by_date_and_warns_about_mixed_patients():
    track = follow_up([("b", _report("2020-03-10", 120.0, 8.0)), ("a", _report("2020-03-01", 40.0, 2.0)),
                       ("c", _report("2020-03-20", 30.0, 1.5, patient="P2"))])
    assert [s["report"] for s in track["studies"]] == ["a", "b", "c"]
    assert [s["corona_score_cm3"] for s in track["studies"]] == [40.0, 120.0, 30.0]
    assert track["patient_id"] is None and "2 patient ids" in track["warnings"][0]


def test_follow_up_refuses_undated_or_foreign_reports():
    with pytest.raises(InputError, match="no date"):
        follow_up([("x", _report("", 1.0, 1.0))])
    with pytest.raises(InputError, match="not a covidct report"):
        follow_up([("y", {"schema": "other"})])


def test_track_command_writes_json_and_png(tmp_path, capsys):
    paths = []
    for k, (date, score) in enumerate([("2020-04-02", 80.0), ("2020-03-25", 150.0)]):
        path = tmp_path / f"r{k}.json"
        path.write_text(json.dumps(_report(date, score, score / 20)))
        paths.append(str(path))
    out = tmp_path / "track"
    assert main(["track", *paths, "-o", str(out), "--json"]) == 0
    track = json.loads(capsys.readouterr().out)
    assert [s["study_date"] for s in track["studies"]] == ["2020-03-25", "2020-04-02"]
    assert json.loads((out / "track.json").read_text()) == track
    assert (out / "track.png").stat().st_size > 1000
    assert main(["track", str(tmp_path / "nope.json"), "-o", str(tmp_path / "t2")]) == 2
    assert "no such file" in capsys.readouterr().err and not (tmp_path / "t2").exists()
