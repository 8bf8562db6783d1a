"""Slice classifier: 5-fold cross-validation by patient over UCSD's train and val images.

    python benchmarks/classifier_cv.py --cache /tmp/cls/slices.npz [--epochs 30] [--members 3] [--seed S]
        [--warp-interpolation bilinear|bicubic] [--mixup-alpha A] [--quality-augment] [--layer3-lr-factor F] [--map-check P] [--test-time-flip]
        [--exclude-train-source covid_ct_md] [--no-pretrain-lesions] [--member K] [--folds 5] [--first-folds N]
        [--train-folds N] [--keep DIR [--reuse]] [--name NAME]

The official UCSD val split (118 images, 72 patients) is the shipped classifier's estimate of
the held-out UCSD test split; its 95 % interval is about 0.19 wide. Here UCSD's 543 train and
val images (369 patients) are pooled and dealt by patient into folds
(:func:`covidct.train.classifier.ucsd_patient_folds`, each class's patients in turn); each fold
trains the shipped recipe (``covidct train classifier --members 3 --val-study P001
--exclude-train-source zenodo20 --pretrain-lesions``, which makes the official val split one
of many) on the other folds and predicts its own. The out-of-fold predictions of all 543
images give one AUC with a 95 % bootstrap interval over patients, beside each fold's AUC.
The out-of-fold AUC is also given separately for the images of the official train and val
splits (is the official val split harder than a random one?), and for the images whose
patient is named (the 143 that name none are all NonCOVID). Each fold model's AUC on its own
UCSD training images (unaugmented) says how well the recipe fits what it trained on. COVID-CT-MD's P001 stays held
out of every fold model, so it is scored five times.
Writes results/NAME.json with every image's out-of-fold probabilities, so that two recipes can
be compared image by image, and their Youden point (``abnormal_youden_threshold``: the 2-D
pictures' threshold of the recipe refit on all of UCSD, ``covidct train classifier --all-ucsd``).

``--test-time-flip`` averages each fold model's probabilities over the image and its mirror
image (an evaluation option: it changes no training; the shipped classifier does not flip).
``--member K`` (with ``--reuse``) evaluates network K (0-based) of each kept fold ensemble alone:
the single network of seed ``--seed`` + K (with ``--map-check``, the card's K-th kept seed), as
``--members 1`` would have trained it.
``--train-folds N`` (a learning curve) trains each fold model on the UCSD images of only the N
folds that follow its own (cyclically; default all the others); the other folds' images are
unused, so the same images are predicted by models trained on fewer UCSD images.
``--map-check P`` trains each fold model as ``covidct train classifier --map-check P`` does: a
network whose Grad-CAM fails the training-slice map check is replaced by the next seed's.
``--first-folds N`` runs folds 1-N only: a recipe stopped after N folds is compared with the
shipped one over the same images by re-evaluating both runs' kept models with it.

With ``--keep DIR --reuse``, fold models already in DIR are evaluated instead of trained again
(their cards are checked against the recipe and fold asked for); folds missing there are
trained (so a run stopped after some folds can be completed), as in infection_cv.py.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from _common import DATA, parse_cross_validation_arguments, record, unused_folds

from covidct import classify
from covidct.models import weights as model_weights
from covidct.train import classifier as train_classifier
from covidct.train import metrics

#: The shipped recipe's options that every fold model shares.
RECIPE: dict[str, Any] = {"val_studies": ("P001",), "exclude_train_sources": ("zenodo20",), "pretrain_lesions": True}

#: How cards written before a recipe option existed were trained (the option's key is missing).
BEFORE_OPTION: dict[str, Any] = {"mixup_alpha": 0.0, "quality_augment": False, "ucsd_unused_patients": [],
                                 "layer3_lr_factor": 1.0}


def fold_recipe(args: argparse.Namespace) -> dict[str, Any]:
    """:func:`covidct.train.classifier.train`'s arguments of every fold model but the fold: the
    shipped recipe's (:data:`RECIPE`) with the command line's changes."""
    return {**RECIPE, "epochs": args.epochs, "members": args.members, "seed": args.seed,
            "warp_interpolation": args.warp_interpolation, "mixup_alpha": args.mixup_alpha,
            "quality_augment": args.quality_augment, "pretrain_lesions": not args.no_pretrain_lesions,
            "layer3_lr_factor": args.layer3_lr_factor, "map_check": args.map_check,
            "exclude_train_sources": RECIPE["exclude_train_sources"] + tuple(args.exclude_train_source)}


def unused_patients(folds: list[tuple[str, ...]], k: int, train_folds: int) -> tuple[str, ...]:
    """The UCSD patients fold ``k`` (0-based) leaves unused when only ``train_folds`` of the other
    folds train (:func:`_common.unused_folds`)."""
    return tuple(sorted(p for i in unused_folds(len(folds), k, train_folds) for p in folds[i]))


def recipe_mismatch(card: dict[str, Any], recipe: dict[str, Any], patients: tuple[str, ...],
                    unused: tuple[str, ...] = ()) -> str | None:
    """Why a kept fold model's card is not of ``recipe`` (:func:`fold_recipe`) and fold (None when it is)."""
    training = card["training"]
    wanted = {key: recipe[key] for key in ("epochs", "members", "seed", "warp_interpolation", "mixup_alpha",
                                           "quality_augment", "layer3_lr_factor")}
    wanted.update(ucsd_val_patients=sorted(patients), ucsd_unused_patients=sorted(unused),
                  val_studies=list(recipe["val_studies"]),
                  excluded_train_sources=list(recipe["exclude_train_sources"]))
    for key, value in wanted.items():
        found = training.get(key, BEFORE_OPTION.get(key))
        if found != value:
            return f"{key} {found!r} (wanted {value!r})"
    map_check = (training.get("map_check") or {}).get("min_pointing")  # a card without the option: none
    if map_check != recipe["map_check"]:
        return f"map check {map_check!r} (wanted {recipe['map_check']!r})"
    if (training.get("lesion_pretraining") is not None) != recipe["pretrain_lesions"]:
        return "lesion pretraining " + ("missing" if recipe["pretrain_lesions"] else "done (wanted none)")
    return None


def auc_summary(scores: np.ndarray, truth: np.ndarray, units: np.ndarray) -> dict[str, Any]:
    """AUC with its 95 % bootstrap interval over ``units``."""
    return {"auc": round(metrics.roc_auc(scores, truth), 4),
            "ci95": train_classifier.auc_interval(scores, truth, units)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", help="prepared slices (.npz, as for `covidct train classifier --cache`)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--fold-seed", type=int, default=0, help="seed of the patients' deal into folds (default 0)")
    parser.add_argument("--first-folds", type=int, metavar="N",
                        help="run only folds 1-N (a run stopped early, or its kept models re-evaluated): every "
                        "figure covers those folds' images only; the folds are dealt as for all of them")
    parser.add_argument("--epochs", type=int, default=30, help="epochs of pretraining and of training (default 30, as shipped)")
    parser.add_argument("--members", type=int, default=3, help="networks per fold model (default 3, as shipped)")
    parser.add_argument("--seed", type=int, default=0, help="first training seed (default 0, as shipped)")
    parser.add_argument("--warp-interpolation", choices=("bilinear", "bicubic"), default="bilinear",
                        help="the augmentation warp's resampling (default bilinear, as shipped)")
    parser.add_argument("--mixup-alpha", type=float, default=0.0, help="mixup of the label training (default 0, as shipped)")
    parser.add_argument("--quality-augment", action="store_true",
                        help="add the picture-quality augmentation (resolution, display window; not shipped)")
    parser.add_argument("--exclude-train-source", action="append", default=[], choices=["covid_ct_md"],
                        help="also leave this source out of the label training (zenodo20 is, as shipped); "
                        "covid_ct_md: cap001 and normal001, so that UCSD alone trains the labels (not shippable: "
                        "no CAP; the lesion pretraining keeps their Normal slices)")
    parser.add_argument("--layer3-lr-factor", type=float, default=1.0,
                        help="the lesion-pretrained layer3 learns the labels at this factor of the learning rate "
                        "(default 1, as shipped)")
    parser.add_argument("--map-check", type=float, metavar="P",
                        help="keep only networks whose maps pass the training-slice map check at P "
                        "(`covidct train classifier --map-check`; default none, as shipped)")
    parser.add_argument("--no-pretrain-lesions", action="store_true",
                        help="no lesion pretraining (shipped before it; its heat maps ignore the infection)")
    parser.add_argument("--member", type=int, help="with --reuse: evaluate only this network (0-based) of each "
                        "fold ensemble, the single network of seed --seed + K")
    parser.add_argument("--test-time-flip", action="store_true",
                        help="average the probabilities of each image and its mirror image (not shipped)")
    args = parse_cross_validation_arguments(parser, "classifier_cv")
    if args.first_folds is not None and not 1 <= args.first_folds <= args.folds:
        parser.error(f"--first-folds must be 1-{args.folds}")
    if args.member is not None and not (args.reuse and 0 <= args.member < args.members):
        parser.error(f"--member needs --reuse and a network 0-{args.members - 1}")
    recipe = fold_recipe(args)
    everything = train_classifier.build_slice_set(DATA, args.cache, RECIPE["val_studies"])
    folds = train_classifier.ucsd_patient_folds(everything, args.folds, args.fold_seed)
    is_ucsd = everything.source == "ucsd"
    official = dict(zip(everything.group[is_ucsd].tolist(), everything.split[is_ucsd].tolist()))  # no patient in both
    images: list[dict[str, Any]] = []
    fold_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(args.keep or tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        for k, patients in enumerate(folds[: args.first_folds], start=1):
            stem = out_dir / f"classifier_fold{k}"
            unused = unused_patients(folds, k - 1, args.train_folds)
            if args.reuse and stem.with_suffix(".json").is_file():
                model = model_weights.load(stem.with_suffix(".json"))
                why = recipe_mismatch(model.card, recipe, patients, unused)
                if why:
                    raise SystemExit(f"{stem}.json is not this recipe's fold {k}: {why}")
                card = model.card
            else:
                card = train_classifier.train(DATA, stem, cache=args.cache, ucsd_val_patients=patients,
                                              ucsd_unused_patients=unused, **recipe)
                model = model_weights.load(stem.with_suffix(".json"))
            data = train_classifier.assign_splits(everything, RECIPE["val_studies"], patients, unused)
            val = data.subset(data.split == "val")
            masked = bool(model.card["input"].get("lung_masked", False))
            x = train_classifier.inputs(val, masked)
            network = model.model if args.member is None else model.model.members[args.member]
            fitted = data.subset((data.split == "train") & (data.source == "ucsd"))  # how well it fits its own images
            p_fitted = 1 - classify.predict_probabilities(network, train_classifier.inputs(fitted, masked))[
                :, train_classifier.NORMAL]
            probs = classify.predict_probabilities(network, x)
            if args.test_time_flip:
                probs = (probs + classify.predict_probabilities(network, x.flip(-1))) / 2
            p_abnormal = 1 - probs[:, train_classifier.NORMAL]
            ucsd, md = val.source == "ucsd", val.source == train_classifier.HU_SOURCE
            truth = val.labels != train_classifier.NORMAL
            row = {
                "fold": k,
                "patients": len(patients),
                "images": int(ucsd.sum()),
                "covid_images": int(truth[ucsd].sum()),
                "ucsd_auc_abnormal": round(metrics.roc_auc(p_abnormal[ucsd], truth[ucsd]), 4),
                "ucsd_auc_covid": round(metrics.roc_auc(probs[ucsd, train_classifier.COVID],
                                                        val.labels[ucsd] == train_classifier.COVID), 4),
                "p001_auc_abnormal": round(metrics.roc_auc(p_abnormal[md], truth[md]), 4),
                "ucsd_training_images_auc_abnormal": round(metrics.roc_auc(p_fitted, fitted.labels != train_classifier.NORMAL), 4),
                # a --member row's network was trained as part of its ensemble, whose time the card holds
                ("train_seconds" if args.member is None else "ensemble_train_seconds"):
                    card["training"]["train_seconds"],
            }
            fold_rows.append(row)
            print(row, flush=True)
            for i in np.flatnonzero(ucsd):
                images.append({"fold": k, "patient": str(val.group[i]), "official_split": official[val.group[i]],
                               "covid": bool(truth[i]),
                               "p_abnormal": round(float(p_abnormal[i]), 5),
                               "p_covid": round(float(probs[i, train_classifier.COVID]), 5)})
    p_abnormal = np.array([r["p_abnormal"] for r in images])
    p_covid = np.array([r["p_covid"] for r in images])
    covid = np.array([r["covid"] for r in images])
    patients = np.array([r["patient"] for r in images])
    named = np.array([not p.startswith("ucsd-unknown:") for p in patients])
    in_official = {split: np.array([r["official_split"] == split for r in images]) for split in ("train", "val")}
    networks = ({"members": args.members, "seed": args.seed} if args.member is None
                else {"members": 1, "seed": args.seed + args.member, "member_of": args.members})
    record(args.name, {
        "recipe": {**{k: list(v) if isinstance(v, tuple) else v for k, v in recipe.items()}, **networks,
                   "test_time_flip": args.test_time_flip, "train_folds": args.train_folds},
        "folds_dealt": {"folds": args.folds, "seed": args.fold_seed},
        "folds_run": len(fold_rows),
        "ucsd_out_of_fold": {
            "images": len(images),
            "patients": len(set(patients.tolist())),
            "covid_images": int(covid.sum()),
            "abnormal": auc_summary(p_abnormal, covid, patients),
            # the pictures' threshold of a model refit on all of UCSD (covidct train classifier --all-ucsd)
            "abnormal_youden_threshold": round(metrics.youden_threshold(p_abnormal, covid), 4),
            "covid_vs_noncovid": auc_summary(p_covid, covid, patients),
            "ci95_resampled": "patients",
            "mean_of_fold_aucs": round(float(np.mean([r["ucsd_auc_abnormal"] for r in fold_rows])), 4),
            "abnormal_named_patients_only": {
                "images": int(named.sum()), "covid_images": int(covid[named].sum()),
                **auc_summary(p_abnormal[named], covid[named], patients[named])},
            "abnormal_by_official_split": {
                split: {"images": int(keep.sum()), **auc_summary(p_abnormal[keep], covid[keep], patients[keep])}
                for split, keep in in_official.items()},
        },
        "p001_auc_abnormal_per_fold_model": [r["p001_auc_abnormal"] for r in fold_rows],
        "folds": fold_rows,
        "images": images,
    })


if __name__ == "__main__":
    main()
