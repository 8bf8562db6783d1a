"""Two classifiers and the average of their probabilities, on the official validation split.

    python benchmarks/classifier_average.py CARD_A.json CARD_B.json --cache /tmp/cls/slices.npz [--name NAME]

An ensemble's output is the mean of its networks' probabilities
(:class:`covidct.models.resnet.CompactResNetEnsemble`), so averaging two classifiers' outputs is
exactly what one ensemble of all their networks (weighted by their numbers of networks) would
give. This measures, before such an ensemble is built, whether it classifies better than either:
the AUC of p_abnormal on UCSD val (72 patients) and on COVID-CT-MD P001 for A, B and the
average, with the paired difference average - A and its 95 % bootstrap interval (UCSD patients
or blocks of 10 consecutive P001 slices resampled, :func:`covidct.train.classifier.resampling_units`).
Both classifiers must have been trained on the official UCSD train split with P001 held out
(``--val-study P001``), so that neither has seen these images. Writes results/NAME.json
(default classifier_average).
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from _common import DATA, record
from classifier_cv_compare import paired

from covidct import classify
from covidct.models import weights as model_weights
from covidct.train import classifier as train_classifier
from covidct.train import metrics


def networks_of(card: dict[str, Any]) -> int:
    """How many networks a classifier averages."""
    return int(card["architecture_args"].get("n_members", 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", help="model card of classifier A (or 'classifier': the shipped one)")
    parser.add_argument("b", help="model card of classifier B")
    parser.add_argument("--cache", help="prepared slices (.npz, as for `covidct train classifier --cache`)")
    parser.add_argument("--name", default="classifier_average", help="results file stem (default classifier_average)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    models = [model_weights.load(ref) for ref in (args.a, args.b)]
    for ref, model in zip((args.a, args.b), models):
        training = model.card["training"]
        if training.get("ucsd_val_patients") is not None or "P001" not in training.get("val_studies", []):
            raise SystemExit(f"{ref}: not trained on the official UCSD split with P001 held out")
    data = train_classifier.build_slice_set(DATA, args.cache, ("P001",))
    val = data.subset(data.split == "val")
    probs = [classify.predict_probabilities(
        m.model, train_classifier.inputs(val, bool(m.card["input"].get("lung_masked", False))), bf16=False)
        for m in models]
    na, nb = (networks_of(m.card) for m in models)
    scores = {"a": 1 - probs[0][:, train_classifier.NORMAL], "b": 1 - probs[1][:, train_classifier.NORMAL]}
    scores["average"] = (na * scores["a"] + nb * scores["b"]) / (na + nb)
    sources: dict[str, Any] = {}
    for source in ("ucsd", train_classifier.HU_SOURCE):
        keep = val.source == source
        truth, units = val.labels[keep] != train_classifier.NORMAL, train_classifier.resampling_units(val.subset(keep))
        row: dict[str, Any] = {"slices": int(keep.sum()), "positives": int(truth.sum())}
        for name, s in scores.items():
            row[name] = {"auc": round(metrics.roc_auc(s[keep], truth), 4),
                         "ci95": train_classifier.auc_interval(s[keep], truth, units)}
        gain = paired(scores["a"][keep], scores["average"][keep], truth, units)
        row["average_minus_a"], row["average_minus_a_ci95"] = gain["b_minus_a"], gain["ci95"]
        sources[source] = row
        print(source, {k: row[k]["auc"] for k in scores}, "average - A", row["average_minus_a"],
              row["average_minus_a_ci95"], flush=True)
    record(args.name, {
        "a": {"card": args.a, "networks": na, "sha256": models[0].sha256},
        "b": {"card": args.b, "networks": nb, "sha256": models[1].sha256},
        "average": f"probabilities averaged {na} : {nb} (one ensemble of all {na + nb} networks)",
        "sources": sources,
    })


if __name__ == "__main__":
    main()
