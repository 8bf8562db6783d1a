"""`covidct analyze` on the shared COVID-CT-MD studies: decision, scores and seconds per stage.

    python benchmarks/analyze.py

One study per class (COVID-19 P001, CAP cap001, Normal normal001). The shipped classifier was
trained on cap001 and normal001 and never saw P001, so only P001's row is a held-out result;
the other two show the pipeline end to end. Reports go to a temporary folder; the figures
are written to results/analyze.json.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from _common import DATA, SHARED_STUDIES, record

import covidct
from covidct.report.outputs import write_report



def main() -> None:
    torch.set_num_threads(2)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for folder, study in SHARED_STUDIES:
            start = time.perf_counter()
            volume = covidct.load(DATA / "covid_ct_md" / folder / study)
            load_s = time.perf_counter() - start
            report = write_report(covidct.analyze(volume), Path(tmp) / study, load_s=load_s)
            rows[study] = {
                "class": folder,
                "decision": report["decision"],
                "scores": report["scores"],
                "timing_s": report["timing_s"],
            }
    covid = rows["P001"]["scores"]["corona_score_cm3"]
    normal = rows["normal001"]["scores"]["corona_score_cm3"]
    record("analyze", {
        "held_out": ["P001"],
        "studies": rows,
        "normal_over_covid_corona_score": round(normal / covid, 4) if covid else None,
    })


if __name__ == "__main__":
    main()
