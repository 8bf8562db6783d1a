"""Speed of `covidct analyze`, end to end, against lungmask's R231 lung step, in one run.

    pip install -e '.[bench]'          # lungmask, for the comparison
    python benchmarks/speed.py [--repeats 3]

For each input (COVID-CT-MD P001, 148 DICOM slices of 512 x 512; a 300-slice 512 x 512 phantom
with 1 mm slices written as DICOM by `covidct phantom`) the installed console script `covidct analyze IN -o OUT --force` runs in a
fresh process ``--repeats`` times, 2 torch threads (as on the 2-core target machine). Measured:
wall seconds of the whole command (interpreter start, imports, model loading, reading the DICOM
files, every stage, writing every output), peak RSS of that process (``os.wait4``), seconds per
stage from its report.json (``timing_s``), and slices per second (slices / wall). The median
run is reported.

lungmask (pip package, R231 U-Net) runs in this process on the same HU slices of P001. Its
weights cannot be downloaded here, so the network has random weights: the figure is a speed
comparison only (the network's cost does not depend on its weights; its post-processing may).
The ratio printed is lungmask's lung step alone over covidct's whole analyze wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _common import DATA, record

import covidct

P001 = DATA / "covid_ct_md" / "COVID" / "P001"
PHANTOM_SLICES = 300


def covidct_command() -> str:
    """The console script of the environment this script runs in."""
    return str(Path(sys.executable).with_name("covidct"))


def run_analyze(path: Path, out: Path) -> dict[str, Any]:
    """One `covidct analyze` in a fresh process: wall seconds, peak RSS and report timings."""
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    start = time.perf_counter()
    proc = subprocess.Popen([covidct_command(), "analyze", str(path), "-o", str(out), "--force"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"covidct analyze {path} failed:\n{stderr}")
    report = json.loads((out / "report.json").read_text())
    return {
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 0),
        "timing_s": report["timing_s"],
        "decision": report["decision"]["label"],
        "corona_score_cm3": report["scores"]["corona_score_cm3"],
    }


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median wall time, plus every run's wall time and the largest RSS."""
    chosen = sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]
    return {**chosen, "wall_s_runs": [r["wall_s"] for r in runs], "peak_rss_mb_max": max(r["peak_rss_mb"] for r in runs)}


def lungmask_seconds(hu: "numpy.ndarray") -> float:  # type: ignore[name-defined]  # noqa: F821
    """Seconds lungmask's R231 (random weights, CPU, its default batch size) takes on HU slices."""
    from lungmask.mask import LMInferer, get_model  # noqa: F401  (import errors say what to install)
    from lungmask.resunet import UNet

    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        net = UNet(n_classes=3, padding=True, depth=5, up_mode="upsample", batch_norm=True, residual=False)
        weights = Path(tmp) / "r231_random.pth"
        torch.save(net.state_dict(), weights)
        inferer = LMInferer(modelpath=str(weights), force_cpu=True, tqdm_disable=True)
        start = time.perf_counter()
        inferer.apply(hu)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="analyze runs per input (median reported)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        phantom_dir = Path(tmp) / "phantom"
        subprocess.run([covidct_command(), "phantom", "-o", str(phantom_dir), "--slices", str(PHANTOM_SLICES),
                        "--size", "512", "--slice-mm", "1.0"], check=True, stdout=subprocess.DEVNULL)
        for name, path, n in (("P001", P001, 148), (f"phantom{PHANTOM_SLICES}", phantom_dir / "dicom", PHANTOM_SLICES)):
            runs = [run_analyze(path, Path(tmp) / f"out_{name}") for _ in range(args.repeats)]
            row = median_run(runs)
            row["slices"] = n
            row["slices_per_s"] = round(n / row["wall_s"], 1)
            rows[name] = row
            print(f"{name}: {row['wall_s']} s wall ({row['wall_s_runs']}), {row['peak_rss_mb_max']:.0f} MB peak RSS, "
                  f"{row['slices_per_s']} slices/s; stages {row['timing_s']}", file=sys.stderr)
    hu = covidct.load(P001).array.astype("int16")
    lm_s = lungmask_seconds(hu)
    covidct_s = rows["P001"]["wall_s"]
    record("speed", {
        "analyze": rows,
        "lungmask_r231": {
            "study": "P001",
            "slices": int(hu.shape[0]),
            "lung_step_s": round(lm_s, 1),
            "weights": "random (speed comparison only; the published weights cannot be downloaded here)",
            "version": _version("lungmask"),
        },
        "speedup_lungmask_lung_step_over_covidct_analyze": round(lm_s / covidct_s, 1),
        "speedup_lungmask_lung_step_over_covidct_lung_step": round(lm_s / rows["P001"]["timing_s"]["lungs"], 1),
    })


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    main()
