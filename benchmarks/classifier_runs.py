"""Slice classifier variants side by side: validation AUCs from their model cards, CPU speed, size.

    python benchmarks/classifier_runs.py CARD.json [CARD.json ...] [--name NAME]

Cards come from ``covidct train classifier ... --out STEM`` (the metrics in a card are computed
once, after training, on the validation split it names); the shipped classifier is always
included. Network speed is measured here: 224x224 inputs, batches of 32, 2 torch threads.
Writes results/classifier_runs.json (or results/NAME.json).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from _common import network_slices_per_s, record

from covidct import classify
from covidct.models import weights as model_weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("cards", nargs="*", help="further model cards to compare")
    parser.add_argument("--name", default="classifier_runs", help="results file stem (default classifier_runs)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = {}
    for ref in ["classifier", *args.cards]:
        loaded = model_weights.load(ref)
        card = loaded.card
        card_path = model_weights.SHIPPED / "classifier.json" if ref == "classifier" else Path(ref)
        training = card["training"]
        val = card["metrics"]["val"]["sources"]
        rows[card_path.stem if ref != "classifier" else "classifier (shipped)"] = {
            "card": str(card_path.name),
            "architecture": card["architecture"],
            "n_parameters": card["n_parameters"],
            "weights_mb": round((card_path.parent / card["weights_file"]).stat().st_size / 1e6, 1),
            "lung_masked": card["input"].get("lung_masked", False),
            "seeds": training.get("seeds", [training["seed"]]),
            "val_studies": training.get("val_studies", []),
            "epochs": training["epochs"],
            "lesion_pretraining_frozen": (training.get("lesion_pretraining") or {}).get("frozen"),
            "train_seconds": training["train_seconds"],
            "val_auc_abnormal": {s: v["auc_abnormal"] for s, v in val.items() if v["auc_abnormal"] is not None},
            "val_auc_covid_ucsd": val.get("ucsd", {}).get("auc_covid"),
            "threshold": card["threshold"],
            "network_slices_per_s_224": round(
                network_slices_per_s(loaded.model, (32, card["input"]["channels"], classify.INPUT_SIZE, classify.INPUT_SIZE)), 1
            ),
        }
    record(args.name, {"validation": "each card's own validation split (see val_studies)", "models": rows})


if __name__ == "__main__":
    main()
