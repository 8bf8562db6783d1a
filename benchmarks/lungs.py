"""Lung segmentation benchmark: Dice per validation case, speed on 512x512 slices, overlays.

    python benchmarks/lungs.py [--weights CARD.json]

Writes results/lungs.json and results/lungs_overlays/*.png (five slices of each shared
COVID-CT-MD study, with right lung red and left lung blue).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _common import DATA, RESULTS, record

import covidct
from covidct import lungs
from covidct.report import figures
from covidct.train import lungs as train_lungs
from covidct.train.data import load_zenodo20

STUDIES = ["COVID/P001", "CAP/cap001", "Normal/normal001"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", help="model card; default the shipped lung model")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = lungs.load_lung_model(args.weights) if args.weights else lungs.load_lung_model()

    dice = train_lungs.evaluate(model.model, load_zenodo20(DATA, ("val",)))

    studies = {}
    out_dir = RESULTS / "lungs_overlays"
    for study in STUDIES:
        volume = covidct.load(DATA / "covid_ct_md" / study)
        lungs.predict_mask(model.model, volume.array[:8], volume.is_hu, progress=False)  # warm-up
        t0 = time.perf_counter()
        result = lungs.segment_lungs(volume, model)
        t2 = time.perf_counter()
        labels = result.labels
        n = volume.shape[0]
        vol_ml = result.volume_ml
        name = study.split("/")[1]
        for k in figures.overlay_slices(np.flatnonzero(labels.reshape(n, -1).any(1))):
            figures.save_png(figures.lung_overlay(volume.array[k], labels[k], True), out_dir / f"{name}_slice{k:03d}.png")
        studies[study] = {
            "shape_zyx": list(volume.shape),
            "seconds": round(t2 - t0, 2),
            "slices_per_s": round(n / (t2 - t0), 1),
            "lung_volume_ml": {k: round(v) for k, v in vol_ml.items()},
        }
    record(
        "lungs",
        {
            "model": {"name": model.name, "sha256": model.sha256, "architecture": model.card["architecture"],
                      "n_parameters": model.card["n_parameters"]},
            "validation_dice": dice,
            "hu_studies": studies,
            "overlays": str(out_dir.relative_to(RESULTS.parent)),
        },
    )


if __name__ == "__main__":
    main()
