"""Compact U-Net vs VGG16-U-Net for the lungs: validation Dice, CPU speed, weight size.

    python benchmarks/lung_architectures.py OTHER_CARD.json [OTHER_CARD.json ...]

The shipped lung model is always included. Other cards come from
``covidct train lungs --arch VGG16UNet --out STEM``; their weights are not committed (the
VGG16-U-Net's exceed the 30 MB limit). Writes results/lung_architectures.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from _common import DATA, network_slices_per_s, record

from covidct import lungs
from covidct.train import lungs as train_lungs
from covidct.train.data import load_zenodo20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("cards", nargs="*", help="further model cards to compare")
    args = parser.parse_args()
    torch.set_num_threads(2)
    val = load_zenodo20(DATA, ("val",))
    rows = {}
    for ref in ["lungs", *args.cards]:
        model = lungs.load_lung_model(ref)
        card = model.card
        card_path = lungs.model_weights.SHIPPED / "lungs.json" if ref == "lungs" else Path(ref)
        weights_mb = (card_path.parent / card["weights_file"]).stat().st_size / 1e6
        metrics = train_lungs.evaluate(model.model, val)
        speed = network_slices_per_s(model.model, (16, 1, lungs.MODEL_SIZE, lungs.MODEL_SIZE))
        rows[card["architecture"] + ("" if ref == "lungs" else f" ({Path(ref).stem})")] = {
            "card": str(card_path),
            "n_parameters": card["n_parameters"],
            "weights_mb_float32": round(weights_mb, 1),
            "epochs": card["training"]["epochs"],
            "train_seconds": card["training"]["train_seconds"],
            "val_dice_per_case": metrics["dice_per_case"],
            "val_dice_mean": metrics["dice_mean"],
            "network_slices_per_s_256": round(speed, 1),
        }
    record("lung_architectures", {"validation": "zenodo20_slices val split (3 cases)", "models": rows})


if __name__ == "__main__":
    main()
