"""covidct serve behind a real PACS: Orthanc (Debian package `orthanc`) on loopback.

The shared COVID-19 study is uploaded to Orthanc, Orthanc forwards it to `covidct serve`, and
covidct's SEG, SR and key-slice secondary captures must appear in Orthanc, in the same study,
within 90 s; the SEG must equal `covidct analyze`'s lungs voxel for voxel and the SR's Corona
score report.json's. Skips with the reason where Orthanc is not installed."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from dicomnet import ServeProcess, free_port

import covidct
from covidct.cli import main
from covidct.io.dicom import read_source_headers

#: The Done-when budget from the moment Orthanc is told to forward the study.
RESULTS_WITHIN_S = 90.0


class Orthanc:
    """An Orthanc server with a temporary configuration and storage, on loopback ports."""

    def __init__(self, folder: Path, covidct_port: int, **settings) -> None:
        self.http_port, self.dicom_port = free_port(), free_port()
        config = settings | {
            "Name": "covidct-test", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
            "HttpPort": self.http_port, "DicomPort": self.dicom_port, "DicomAet": "ORTHANC",
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "Plugins": [],
            "DicomAlwaysAllowFind": True, "DicomModalities": {"covidct": ["COVIDCT", "127.0.0.1", covidct_port]},
        }
        (folder / "orthanc.json").write_text(json.dumps(config))
        self.log = open(folder / "orthanc.log", "w")
        self.proc = subprocess.Popen(["Orthanc", str(folder / "orthanc.json")], stdout=self.log,
                                     stderr=subprocess.STDOUT, cwd=folder)
        end = time.monotonic() + 30
        while True:
            try:
                self.get("/system")
                return
            except OSError:
                if time.monotonic() > end or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"Orthanc did not start: {(folder / 'orthanc.log').read_text()[-2000:]}")
                time.sleep(0.2)

    def request(self, method: str, path: str, body: bytes | None = None) -> bytes:
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=body, method=method)
        with urllib.request.urlopen(req, timeout=120) as response:
            return response.read()

    def get(self, path: str):
        return json.loads(self.request("GET", path))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


REPO = Path(__file__).resolve().parents[1]
#: The README's example: Orthanc forwards every stable study to covidct once.
FORWARD_LUA = REPO / "examples" / "orthanc" / "forward-to-covidct.lua"


@pytest.fixture()
def pacs(tmp_path, request):
    """Orthanc and a covidct node that sends results back to it; ``"by the Lua example"``
    (indirect parameter) also installs examples/orthanc/forward-to-covidct.lua."""
    if shutil.which("Orthanc") is None:
        pytest.skip("Orthanc not installed (Debian package orthanc; .ci/run installs it where apt-get is allowed)")
    covidct_port = free_port()
    lua = getattr(request, "param", "by hand") == "by the Lua example"
    settings = {"LuaScripts": [str(FORWARD_LUA)], "StableAge": 2} if lua else {}
    orthanc = Orthanc(tmp_path, covidct_port, **settings)
    node = ServeProcess(tmp_path / "covidct", covidct_port, "--allow", "ORTHANC", "--idle-s", "2",
                        "--destination", f"127.0.0.1:{orthanc.dicom_port}:ORTHANC")
    yield orthanc, node
    node.stop()
    orthanc.stop()


@pytest.fixture()
def studies_dir(tmp_path) -> Path:
    """A small phantom study written as DICOM."""
    from covidct import phantom

    ph = phantom.make_phantom(shape=(32, 128, 128), spacing_mm=(5.0, 2.8, 2.8), seed=0)
    phantom.write_dicom_series(ph.volume, tmp_path / "phantom")
    return tmp_path / "phantom"


def c_find_series_modalities(orthanc: Orthanc, study_uid: str) -> set[str]:
    """Modalities of the study's series, by a C-FIND at series level."""
    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

    ae = AE(ae_title="FINDSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    query = pydicom.Dataset()
    query.QueryRetrieveLevel, query.StudyInstanceUID, query.SeriesInstanceUID, query.Modality = "SERIES", study_uid, "", ""
    assoc = ae.associate("127.0.0.1", orthanc.dicom_port, ae_title="ORTHANC")
    assert assoc.is_established
    try:
        return {str(ds.Modality) for status, ds in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
                if ds is not None and status.Status in (0xFF00, 0xFF01)}
    finally:
        assoc.release()


def test_orthanc_forwards_a_study_and_gets_seg_sr_and_key_slices_back(pacs, shared_data, tmp_path):
    orthanc, node = pacs
    study = shared_data / "covid_ct_md" / "COVID" / "P001"
    files = sorted(p for p in study.rglob("*") if p.is_file())
    for path in files:  # the scanner's send, through Orthanc's REST API
        answer = json.loads(orthanc.request("POST", "/instances", path.read_bytes()))
    study_id = answer["ParentStudy"]
    study_uid = orthanc.get(f"/studies/{study_id}")["MainDicomTags"]["StudyInstanceUID"]

    start = time.monotonic()
    orthanc.request("POST", "/modalities/covidct/store", study_id.encode())  # Orthanc -> covidct serve
    found: dict[str, list[str]] = {}
    while time.monotonic() - start < RESULTS_WITHIN_S:
        series = orthanc.get(f"/studies/{study_id}/series")
        found = {s["MainDicomTags"].get("Modality", ""): s["Instances"] for s in series}
        if {"SEG", "SR", "OT"} <= set(found):
            break
        time.sleep(1)
    elapsed = time.monotonic() - start
    assert {"SEG", "SR", "OT"} <= set(found), f"after {elapsed:.0f} s Orthanc holds {sorted(found)}:\n{node.log()}"
    print(f"results in Orthanc {elapsed:.1f} s after the forward")
    assert elapsed < RESULTS_WITHIN_S
    assert {"CT", "SEG", "SR", "OT"} <= c_find_series_modalities(orthanc, study_uid)
    node.wait_for_log("objects sent to", 30)

    # covidct analyze on the same study, straight from the files
    assert main(["analyze", str(study), "-o", str(tmp_path / "direct")]) == 0
    report = json.loads((tmp_path / "direct" / "report.json").read_text())
    lungs = np.transpose(np.asarray(nib.load(tmp_path / "direct" / "lungs.nii.gz").dataobj), (2, 1, 0))
    uids = [h.SOPInstanceUID for h in read_source_headers(covidct.load(study))]

    (tmp_path / "seg.dcm").write_bytes(orthanc.request("GET", f"/instances/{found['SEG'][0]}/file"))
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    assert seg.StudyInstanceUID == study_uid
    decoded = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1, 2],
                                                combine_segments=True, skip_overlap_checks=True)
    assert decoded.shape == lungs.shape and np.array_equal(decoded, lungs)

    sr = pydicom.dcmread(pydicom.filebase.DicomBytesIO(orthanc.request("GET", f"/instances/{found['SR'][0]}/file")))
    corona = [float(item.MeasuredValueSequence[0].NumericValue)
              for group in sr.ContentSequence[-1].ContentSequence for item in group.ContentSequence
              if item.ValueType == "NUM" and item.ConceptNameCodeSequence[0].CodeMeaning == "Corona score"]
    assert corona == [report["scores"]["corona_score_cm3"]]


@pytest.mark.parametrize("pacs", ["by the Lua example"], indirect=True)
def test_the_lua_example_forwards_each_study_once(pacs, studies_dir):
    """examples/orthanc/forward-to-covidct.lua: a stable study goes to covidct by itself, the
    results come back into it, and their arrival does not send the study again."""
    orthanc, node = pacs
    for path in sorted(p for p in studies_dir.rglob("*") if p.is_file()):
        answer = json.loads(orthanc.request("POST", "/instances", path.read_bytes()))
    study_id = answer["ParentStudy"]
    node.wait_for_log("objects sent to", 120)
    time.sleep(8)  # the results made the study stable again (StableAge 2 s): no second forward
    modalities = sorted(s["MainDicomTags"]["Modality"] for s in orthanc.get(f"/studies/{study_id}/series"))
    assert modalities == ["CT", "OT", "SEG", "SR"]
    assert node.log().count("complete:") == 1
