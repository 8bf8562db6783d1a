"""How well the Grad-CAM maps point at infection, against radiologists' masks.

    python benchmarks/localization.py                       # the shipped classifier -> results/localization.json
    python benchmarks/localization.py --weights M.json --name N   # another network -> results/N.json

Data the shipped classifier never trained on:

* zenodo20_slices validation cases (3 cases, 76 slices, every slice infected; lung masks given);
* medseg_infnet (Inf-Net's MedSeg training split, 50 slices, a source no covidct classifier
  trains on; lung masks from the shipped lung model; slices without infection in the lungs are
  skipped).

Each slice goes through the network's input path (lung-box crop, lung mask) and
:func:`covidct.localize.gradcam`; the map is put back into the slice and restricted to the lungs.
Per slice:

* enrichment: mean map value inside the infection / mean map value in the rest of the lungs
  (1 = no better than uniform);
* pointing game: the map's maximum falls inside the infection; chance level is the share of
  the lungs that is infected, reported beside it;
* Dice of the map >= :data:`covidct.case.MAP_THRESHOLD` against the infection (the infection
  volume analyze reports).

A map that is zero everywhere (the gradient-weighted activations are negative throughout) has
no maximum: such slices are counted (``empty_maps``) and enter ``pointing_all`` as misses; the
other figures are over the slices with a map.

For an ensemble the same figures are also given for each of its networks alone (``members``):
its maps are the members' maps averaged per layer, and members differ a lot.

``--training-masks`` adds zenodo20's training slices (``zenodo20_train``). The lesion pretraining
trained on their masks (the label training did not see them), so these figures are no held-out
measure; they ask whether a network's maps could be checked at training time, without held-out
data, by how well they rank the networks' held-out figures.

Writes results/localization.json.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch
from _common import DATA, record

from covidct import classify, localize, lungs
from covidct.train.data import load_medseg, load_zenodo20

METRICS = localize.MAP_SCORES
EMPTY = localize.EMPTY_MAPS


def _cases(training_masks: bool = False) -> list[tuple[str, str, np.ndarray, np.ndarray, np.ndarray]]:
    """(source, case id, images, lung masks, infection masks) of the measured data; with
    ``training_masks`` also zenodo20's training cases (source "zenodo20_train")."""
    out = [("zenodo20", c.case_id, c.images, c.lungs, c.infection) for c in load_zenodo20(DATA, ("val",))]
    lung_model = lungs.load_lung_model()
    for s in load_medseg(DATA):
        image = s.image.astype(np.float32)[None]
        mask = lungs.picture_lung_labels(lung_model.model, image)
        out.append(("medseg", s.name, image, mask, (s.mask > 0)[None]))
    if training_masks:
        out += [("zenodo20_train", c.case_id, c.images, c.lungs, c.infection) for c in load_zenodo20(DATA, ("train",))]
    return out


def _summary(values: dict[str, list[float]]) -> dict[str, float]:
    n, empty = len(values["dice"]), len(values[EMPTY])
    mean = lambda v: round(float(np.mean(v)), 3) if v else None  # noqa: E731
    return {"slices": n, EMPTY: empty, **{k: mean(values[k]) for k in METRICS},
            "pointing_all": round(float(np.sum(values["pointing"]) / max(n + empty, 1)), 3),
            "enrichment_median": round(float(np.median(values["enrichment"])), 3) if n else None}


def _localization(network: torch.nn.Module, masked: bool,
                  cases: list[tuple[str, str, np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """The summaries of one network's maps: zenodo20 val pooled and per case, MedSeg, and
    zenodo20 train pooled where ``cases`` hold it."""
    per_source: dict[str, dict[str, list[float]]] = {}
    zenodo_cases = {}
    for source, case_id, images, lung, infection in cases:
        per = localize.map_scores(localize.picture_maps(network, images, lung, masked), lung, infection)
        pooled = per_source.setdefault(source, {k: [] for k in (*METRICS, EMPTY)})
        for k, v in per.items():
            pooled[k].extend(v)
        if source == "zenodo20":
            zenodo_cases[case_id] = _summary(per)
    out = {"zenodo20_val": {"pooled": _summary(per_source["zenodo20"]), "per_case": zenodo_cases},
           "medseg": _summary(per_source["medseg"])}
    if "zenodo20_train" in per_source:
        out["zenodo20_train"] = _summary(per_source["zenodo20_train"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", help="model card of another classifier network (default: the shipped one)")
    parser.add_argument("--name", default="localization", help="results file stem (default localization)")
    parser.add_argument("--training-masks", action="store_true",
                        help="also measure zenodo20's 241 training slices (zenodo20_train), whose masks the lesion "
                        "pretraining trained on: a check that needs no held-out data")
    args = parser.parse_args()
    torch.set_num_threads(2)
    loaded = classify.load_classifier(args.weights or "classifier")
    masked = bool(loaded.card["input"].get("lung_masked", False))
    cases = _cases(args.training_masks)
    result = _localization(loaded.model, masked, cases)
    training = loaded.card.get("training", {})
    members = list(getattr(loaded.model, "members", []))
    seeds = training.get("seeds", list(range(len(members))))
    record(args.name, {
        "data": "zenodo20_slices val split (76 infected slices, lung masks given); medseg_infnet train split "
                "(lung masks from the shipped lung model)",
        "model": {"name": loaded.name, "sha256": loaded.sha256,
                  "attention_weight": training.get("attention_weight", 0.0),
                  "attention_only_sources": training.get("attention_only_sources", [])},
        **result,
        # an ensemble's map is its members' maps averaged per layer: how much each network contributes
        "members": [{"seed": seed, **_localization(member, masked, cases)} for seed, member in zip(seeds, members)],
    })


if __name__ == "__main__":
    main()
