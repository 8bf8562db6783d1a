"""covidct serve: a DICOM node receiving studies, analyzing them and sending the results on.

The node runs as a child process (`python -m covidct serve`) on loopback; a pynetdicom SCP in the
test stands in for the PACS that receives the results (tests/test_orthanc.py uses a real one)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pydicom
import pytest
from dicomnet import ServeProcess, free_port, send_files

from covidct import phantom, serve
from covidct.cli import main

#: Objects sent back per study: SEG + SR + at least one key slice.
MIN_RESULTS = 3


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> list[Path]:
    """Two phantom studies (different UIDs) written as DICOM series."""
    tmp = tmp_path_factory.mktemp("studies")
    folders = []
    for seed in (0, 1):
        ph = phantom.make_phantom(shape=(32, 128, 128), spacing_mm=(5.0, 2.8, 2.8), seed=seed)
        phantom.write_dicom_series(ph.volume, tmp / f"study{seed}")
        folders.append(tmp / f"study{seed}")
    return folders


def files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def study_uid(folder: Path) -> str:
    return str(pydicom.dcmread(files(folder)[0], stop_before_pixels=True).StudyInstanceUID)


def results_of(receiver, uid: str) -> list:
    return [d for d in receiver.datasets if d.StudyInstanceUID == uid]


def test_settings_from_toml_with_flags_winning(tmp_path):
    toml = tmp_path / "covidct.toml"
    toml.write_text('ae_title = "NODE"\nport = 104\nworkers = 2\nidle_s = 5\nallowed_ae_titles = ["ORTHANC"]\n'
                    'storage = "/srv/covidct"\n[destination]\nhost = "pacs"\nport = 4242\nae_title = "PACS"\n')
    config = serve.load_config(toml, port=11112)
    assert config == serve.ServeConfig(
        ae_title="NODE", port=11112, workers=2, idle_s=5.0, allowed_ae_titles=("ORTHANC",),
        storage=Path("/srv/covidct"), destination=serve.Destination("pacs", 4242, "PACS"))
    assert serve.Destination.parse("10.0.0.1:104:PACS") == serve.Destination("10.0.0.1", 104, "PACS")


@pytest.mark.parametrize("text, message", [
    ("colour = 1\n", "unknown setting"), ("port = 70000\n", "0 to 65535"), ("workers = 0\n", "at least 1"),
    ('ae_title = "A_TITLE_LONGER_THAN_16"\n', "1 to 16"), ("port = [\n", "not valid TOML"),
    ('destination = "pacs-without-port"\n', "HOST:PORT:AE_TITLE"),
])
def test_bad_settings_are_one_line_errors_exit_2(tmp_path, capsys, text, message):
    toml = tmp_path / "bad.toml"
    toml.write_text(text)
    assert main(["serve", "--config", str(toml)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("covidct: error: ") and message in err[0]
    assert not (Path.cwd() / "covidct-serve").exists()


def test_analysis_children_share_the_cpus_between_workers(monkeypatch):
    from covidct import parallel

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(parallel, "available_cpus", lambda: 8)
    assert serve.DicomNode(serve.ServeConfig(workers=3))._child_environment()["OMP_NUM_THREADS"] == "2"
    assert serve.DicomNode(serve.ServeConfig(workers=1))._child_environment()["TQDM_DISABLE"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "5")  # the user's setting wins
    assert serve.DicomNode(serve.ServeConfig(workers=3))._child_environment()["OMP_NUM_THREADS"] == "5"


def test_a_port_in_use_is_a_one_line_error_and_creates_nothing(tmp_path, capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--host", "127.0.0.1", "--port", str(port), "--storage", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("covidct: error: ") and "cannot listen" in err[0]
    assert not (tmp_path / "s").exists()


def test_echo_allow_list_and_a_study_round_trip(studies, receiver, tmp_path):
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    port = free_port()
    node = ServeProcess(tmp_path / "store", port, "--allow", "SENDER", "--idle-s", "1",
                        "--destination", f"127.0.0.1:{receiver.port}:{receiver.ae_title}")
    try:
        ae = AE(ae_title="SENDER")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", port, ae_title="COVIDCT")
        assert assoc.is_established and assoc.send_c_echo().Status == 0x0000
        assoc.release()
        with pytest.raises(ConnectionRefusedError):
            send_files(files(studies[0])[:1], port, calling="INTRUDER")
        assert "refused association from INTRUDER" in node.wait_for_log("refused association", 10)

        statuses = send_files(files(studies[0]), port, calling="SENDER")
        assert statuses == [0] * len(files(studies[0]))
        # acknowledged means on disk
        uid = study_uid(studies[0])
        log = node.wait_for_log("objects sent to", 120)
        got = results_of(receiver, uid)
        assert len(got) >= MIN_RESULTS
        assert {"SEG", "SR", "OT"} == {d.Modality for d in got}
        line = next(line for line in log.splitlines() if "objects sent to" in line)
        assert uid in line and f"{len(got)} objects" in line and "Corona score" in line
        record = json.loads((tmp_path / "store" / "done" / f"{uid}.json").read_text())
        assert record["instances"] == len(files(studies[0])) and record["sent"] == len(got)
        assert not any((tmp_path / "store" / "queue").iterdir())
    finally:
        node.stop()


def test_a_truncated_study_is_rejected_and_the_next_one_succeeds(studies, receiver, tmp_path):
    port = free_port()
    node = ServeProcess(tmp_path / "store", port, "--idle-s", "1",
                        "--destination", f"127.0.0.1:{receiver.port}:{receiver.ae_title}")
    try:
        # study 0 with one file whose pixel data was cut short in transfer
        broken = tmp_path / "broken"
        broken.mkdir()
        for i, path in enumerate(files(studies[0])):
            ds = pydicom.dcmread(path)
            if i == 7:
                ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]
            ds.save_as(broken / path.name)
        send_files(files(broken), port, calling="SENDER")
        log = node.wait_for_log("rejected", 60)
        line = next(line for line in log.splitlines() if "rejected" in line)
        assert study_uid(studies[0]) in line and "cannot decode pixel data" in line
        reason = (tmp_path / "store" / "failed" / study_uid(studies[0]) / "reason.txt").read_text()
        assert "cannot decode pixel data" in reason

        send_files(files(studies[1]), port, calling="SENDER")
        node.wait_for_log("objects sent to", 120)
        assert len(results_of(receiver, study_uid(studies[1]))) >= MIN_RESULTS
        assert not results_of(receiver, study_uid(studies[0]))
        assert node.proc.poll() is None  # still serving
    finally:
        node.stop()


def test_a_node_killed_during_an_analysis_finishes_the_study_after_a_restart(studies, receiver, tmp_path):
    port = free_port()
    args = ("--idle-s", "1", "--destination", f"127.0.0.1:{receiver.port}:{receiver.ae_title}")
    node = ServeProcess(tmp_path / "store", port, *args)
    uid = study_uid(studies[1])
    try:
        send_files(files(studies[1]), port, calling="SENDER")
        node.wait_for_log("complete:", 30)  # the analysis starts now
        time.sleep(0.5)
        node.kill()
    finally:
        node.stop()
    assert (tmp_path / "store" / "queue" / uid).is_dir() and not receiver.datasets

    staging = list((tmp_path / "store" / "results").glob(".*"))  # the killed analysis's, if it got that far
    restarted = ServeProcess(tmp_path / "store", port, *args)  # nothing is sent again
    try:
        assert f"study {uid}: resuming after a restart" in restarted.log()
        restarted.wait_for_log("objects sent to", 120)
        got = results_of(receiver, uid)
        assert len(got) >= MIN_RESULTS and {"SEG", "SR", "OT"} == {d.Modality for d in got}
        assert len({d.SOPInstanceUID for d in got}) == len(got)  # each object once
        assert not any(p.exists() for p in staging)
        assert not list((tmp_path / "store" / "results").glob(".*"))
    finally:
        restarted.stop()


def test_results_wait_for_a_destination_that_is_down_and_are_sent_when_it_is_back(studies, tmp_path):
    from dicomnet import Receiver

    port, dest_port = free_port(), free_port()
    node = ServeProcess(tmp_path / "store", port, "--idle-s", "1", "--retry-s", "1",
                        "--destination", f"127.0.0.1:{dest_port}:LATE")
    uid = study_uid(studies[0])
    try:
        send_files(files(studies[0]), port, calling="SENDER")
        node.wait_for_log("sending to LATE", 120)
        assert (tmp_path / "store" / "results" / uid / "report.json").is_file()
        late = Receiver("LATE", port=dest_port)
        try:
            node.wait_for_log("objects sent to", 60)
            assert len(results_of(late, uid)) >= MIN_RESULTS
        finally:
            late.stop()
        assert node.log().count("complete:") == 1  # analyzed once, sent when it could be
    finally:
        node.stop()
