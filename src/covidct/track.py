"""Follow-up: one patient's reports ordered by study date, with the Corona score and lung
involvement over time. Pure functions over report.json dicts; reading and writing happen in
the CLI and :mod:`covidct.report`."""

from __future__ import annotations

from typing import Any

from covidct.errors import InputError
from covidct.report.json import SCHEMA

TRACK_SCHEMA = "covidct.track/1"


def follow_up(reports: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Order reports by study date and collect the figures followed over time.

    Parameters
    ----------
    reports : (source name, report.json dict) pairs, in any order

    Returns
    -------
    ``{"schema", "patient_id", "studies": [...], "warnings": [...]}``; each study holds its date,
    UIDs, source, decision, diagnosis, Corona score, infection volume, lung volume and
    involvement, oldest first.

    Raises
    ------
    InputError
        A report of another schema, or without a study date (it cannot be placed in time).
    """
    if not reports:
        raise InputError("no reports given; pass the report.json files of one patient's studies.")
    studies, warnings = [], []
    for name, report in reports:
        if report.get("schema") != SCHEMA:
            raise InputError(f"{name}: not a covidct report ({SCHEMA}); pass report.json files from covidct analyze.")
        date = report["input"].get("study_date")
        if not date:
            raise InputError(f"{name}: the study has no date, so it cannot be placed in time; "
                             "leave it out or analyze the DICOM study, which carries StudyDate.")
        s = report["scores"]
        studies.append({
            "study_date": date,
            "study_uid": report["input"].get("study_uid", ""),
            "patient_id": report["input"].get("patient_id", ""),
            "report": name,
            "decision": report["decision"]["label"],
            "diagnosis": report["decision"]["diagnosis"],
            "corona_score_cm3": s["corona_score_cm3"],
            "infection_volume_ml": s["infection_volume_ml"],
            "lung_volume_ml": s["lung_volume_ml"]["total"],
            "involvement_pct": s["involvement_pct"],
        })
    studies.sort(key=lambda st: (st["study_date"], st["report"]))
    patients = sorted({st["patient_id"] for st in studies})
    if len(patients) > 1:
        warnings.append(f"reports of {len(patients)} patient ids ({', '.join(p or '?' for p in patients)}): "
                        "a follow-up compares one patient's studies")
    seen: dict[str, str] = {}
    for st in studies:
        uid = st["study_uid"]
        if uid and uid in seen:
            warnings.append(f"{st['report']} and {seen[uid]} are the same study ({uid})")
        seen[uid] = st["report"]
    return {
        "schema": TRACK_SCHEMA,
        "patient_id": patients[0] if len(patients) == 1 else None,
        "studies": studies,
        "warnings": warnings,
    }
