"""Segmented infection volumes of the shared COVID-CT-MD studies, for one or more infection models.

    python benchmarks/infection_volumes.py [CARD ...] [--name NAME]

For each model card (default: the shipped ``infection`` model), :func:`covidct.segment_infection`
(with its test-time flip) after the shipped lung model on P001 (COVID-19), cap001 (CAP) and
normal001 (Normal): ground-glass and consolidation in mL, and normal001's volume as a share of
P001's (the infection issue asks for under 5 %). No infection model trains on these studies.
Several cards (e.g. the fold models kept by ``benchmarks/infection_cv.py --keep DIR``) show how
much models of one recipe differ. Writes results/NAME.json (default infection_volumes).

The radiologists' slice labels (infection 0/1 per slice; normal001 all 0) also check the
segmentation on CT in HU, where no pixel labels exist here: ``slice_auc_infected_area`` is the
ROC AUC of the segmented area per slice against them, over the lung slices of P001, of cap001,
and of the three studies pooled.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from _common import DATA, SHARED_STUDIES, record

import covidct
from covidct.infection import load_infection_model
from covidct.train.data import read_slice_labels
from covidct.train.metrics import roc_auc



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cards", nargs="*", default=["infection"], help="model cards (.json) or shipped names")
    parser.add_argument("--name", default="infection_volumes", help="results file stem (default infection_volumes)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    models = {card: load_infection_model(card) for card in args.cards}
    rows: dict[str, dict] = {card: {"sha256": m.sha256} for card, m in models.items()}
    infection_ml: dict[tuple[str, str], float] = {}  # unrounded, for the ratio
    area: dict[tuple[str, str], np.ndarray] = {}  # segmented pixels per lung slice
    truth: dict[str, np.ndarray] = {}  # radiologists' slice label per lung slice
    for folder, study in SHARED_STUDIES:
        volume = covidct.load(DATA / "covid_ct_md" / folder / study)
        lungs = covidct.segment_lungs(volume)
        label_file = DATA / "covid_ct_md" / folder / f"{study}_slice_labels.csv"
        by_location = read_slice_labels(label_file) if label_file.exists() else {}  # normal001: all 0
        truth[study] = np.array([by_location.get(round(volume.meta.slice_z_mm[i], 1), 0) == 1
                                 for i in lungs.lung_slices])
        for card, model in models.items():
            labels = covidct.segment_infection(volume, lungs, model)
            area[card, study] = (labels[lungs.lung_slices] > 0).sum(axis=(1, 2))
            gg, cons = (float((labels == c).sum()) * volume.voxel_volume_ml for c in (1, 2))
            infection_ml[card, study] = gg + cons
            rows[card][study] = {"ground_glass_ml": round(gg, 2), "consolidation_ml": round(cons, 2),
                                 "infection_ml": round(gg + cons, 2)}
    pooled_truth = np.concatenate([truth[study] for _, study in SHARED_STUDIES])
    for card, row in rows.items():
        covid = infection_ml[card, "P001"]
        row["normal001_over_P001"] = round(infection_ml[card, "normal001"] / covid, 4) if covid else None
        row["slice_auc_infected_area"] = {
            **{study: round(roc_auc(area[card, study], truth[study]), 4) for study in ("P001", "cap001")},
            "pooled": round(roc_auc(np.concatenate([area[card, study] for _, study in SHARED_STUDIES]), pooled_truth), 4),
        }
    names = [Path(card).stem if card.endswith(".json") else card for card in rows]
    if len(set(names)) < len(names):  # the same file name in two folders: keep the folders
        names = list(rows)
    record(args.name, {"models": dict(zip(names, rows.values()))})


if __name__ == "__main__":
    main()
