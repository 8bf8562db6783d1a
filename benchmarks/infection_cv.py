"""Infection U-Net: 5-fold cross-validation over the 50 MedSeg training slices.

    python benchmarks/infection_cv.py [--epochs N] [--width compact|wide] [--class-weights W W W] [--seed S]
        [--warp-interpolation bicubic|bilinear] [--train-folds N] [--keep DIR [--reuse]] [--name NAME]
    python benchmarks/infection_cv.py --ensemble-of DIR DIR [...] [--name NAME]

(more recipe flags: ``--help``)

The shipped validation split has 10 MedSeg slices, too few to tell two recipes apart or to
estimate the held-out Dice. Here every MedSeg slice is validated once: each fold trains the
shipped recipe (``covidct.train.infection.train``) on the other slices, less a guard slice on
either side of the validated block (:func:`covidct.train.infection.medseg_folds`), plus zenodo20's
training cases, and is evaluated with and without the test-time flip. The per-slice counts of
all folds are pooled into one Dice table (per image, mean over the images with the class, as
Inf-Net reports, with a 95 % bootstrap interval over the images; and over all pixels), and the
per-slice counts are written too, so that two recipes can be compared slice by slice
(benchmarks/infection_cv_compare.py), beside the Dice of each fold model on the MedSeg slices it
trained on (how well the recipe fits its own data). zenodo20 val is evaluated by every fold's model; its mean
over folds is given. Fold 5 is the shipped split. Writes results/infection_cv.json.

``--train-folds N`` (a learning curve) trains each fold model on only the N folds that follow
its own (cyclically; default all the others): the slices of the folds left out are unused, like
the guard slices, so the same slices are validated by models trained on less typed data.

With ``--keep DIR --reuse``, fold models already in DIR (from an earlier run of the same recipe:
their cards are checked against the command line) are evaluated instead of trained again.

``--ensemble-of DIR DIR ...`` trains nothing: each fold's model is the average of the fold
models kept in those folders (:class:`covidct.models.unet.UNetEnsemble`; each folder the
``--keep`` of an earlier run of this recipe with another ``--seed``; their cards are checked
against the command line, seed aside), so a several-seed ensemble is validated on the same
slices by networks that never saw them.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from _common import DATA, parse_cross_validation_arguments, record, unused_folds

from covidct.infection import load_infection_model
from covidct.models import weights as model_weights
from covidct.train import infection as train_infection
from covidct.train.data import load_medseg, load_zenodo20


#: How cards written before a recipe option existed were trained (the option's key is missing).
BEFORE_OPTION = {"dice_per_image": False, "intensity_gamma": 1.0, "zenodo_intensity_channel": True,
                 "warp_interpolation": "bilinear", "init_from_lungs": None,
                 "pseudo_teacher": None, "copy_paste": 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=train_infection.EPOCHS,
                        help="training epochs of every fold (default: the shipped recipe's)")
    parser.add_argument("--width", choices=sorted(train_infection.WIDTHS), default="compact")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="training seed of every fold (default 0, the shipped recipe's)")
    parser.add_argument("--class-weights", type=float, nargs=3, default=list(train_infection.CLASS_WEIGHTS),
                        metavar=("NONE", "GG", "CONS"), help="cross-entropy weights (default: the shipped recipe's)")
    parser.add_argument("--dice-per-image", action="store_true",
                        help="Dice loss terms averaged per image instead of over the batch")
    parser.add_argument("--intensity-gamma", type=float, default=1.0,
                        help="augmentation: the intensity channel's own gamma, log-uniform in [1/G, G] (default 1: none)")
    parser.add_argument("--no-zenodo-intensity", action="store_true",
                        help="zenodo20's intensity channel set to 0 in training (its pictures exist only after CLAHE)")
    parser.add_argument("--medseg-repeats", type=int, default=train_infection.MEDSEG_REPEATS,
                        help="times each MedSeg slice is seen per epoch (default: the shipped recipe's)")
    parser.add_argument("--warp-interpolation", choices=("bilinear", "bicubic"),
                        default=train_infection.WARP_INTERPOLATION,
                        help="how the augmentation warp resamples the images (default: the shipped recipe's, "
                        "bicubic since 2026-12-06; bilinear before)")
    parser.add_argument("--init-from-lungs", metavar="CARD", default=train_infection.INIT_FROM_LUNGS,
                        help="start every fold model from this lung model's weights (default: the shipped one, as "
                        "the recipe does since 2026-12-07)")
    parser.add_argument("--random-init", action="store_true",
                        help="start every fold model from random weights (the recipe before 2026-12-07)")
    parser.add_argument("--pseudo-teachers", metavar="DIR",
                        help="self-training: fold k adds the labels of DIR/infection_fold{k}.json (a kept run's fold "
                        "model, which never saw fold k) on UCSD's COVID-19 pictures (tried, not shipped)")
    parser.add_argument("--copy-paste", type=float, default=0.0, metavar="P",
                        help="lesion copy-paste: each MedSeg training item gets another's lesions pasted into its lung "
                        "with probability P (default 0: never; tried, not shipped)")
    parser.add_argument("--ensemble-of", nargs="+", metavar="DIR", default=[],
                        help="train nothing: validate each fold's average of the fold models kept in these folders "
                        "(--keep of earlier runs of this recipe with other seeds)")
    args = parse_cross_validation_arguments(parser, "infection_cv")
    if args.random_init:
        args.init_from_lungs = None
    if args.ensemble_of and (args.reuse or len(args.ensemble_of) < 2):
        parser.error("--ensemble-of takes two or more folders and no --reuse")
    medseg = load_medseg(DATA)
    zenodo_val = load_zenodo20(DATA, ("val",))
    folds = unused_folds_as_guard(train_infection.medseg_folds([s.name for s in medseg], args.folds),
                                  args.train_folds)
    counts: dict[bool, dict] = {False: {}, True: {}}
    zenodo: dict[bool, list[float]] = {False: [], True: []}
    fit_counts: dict[str, dict] = {}  # each fold model on its own MedSeg training slices
    typing: dict[str, dict] = {}  # each fold model's types inside the true extent of its validation slices
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(args.keep or tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        for k, (val, guard) in enumerate(folds, 1):
            stem = out_dir / f"infection_fold{k}"
            if args.ensemble_of:
                card = save_fold_ensemble(args, k, val, guard, stem, parser)
            elif args.reuse and stem.with_suffix(".json").is_file():
                card = json.loads(stem.with_suffix(".json").read_text())
                mismatch = recipe_mismatch(card, args, k, val, guard)
                if mismatch:
                    parser.error(f"{stem}.json is not of this recipe: {mismatch}")
            else:
                card = train_infection.train(DATA, stem, width=args.width, epochs=args.epochs,
                                             medseg_val=val, medseg_guard=guard, class_weights=args.class_weights,
                                             seed=args.seed, dice_per_image=args.dice_per_image,
                                             intensity_gamma=args.intensity_gamma,
                                             zenodo_intensity=not args.no_zenodo_intensity,
                                             medseg_repeats=args.medseg_repeats,
                                             warp_interpolation=args.warp_interpolation,
                                             init_from_lungs=args.init_from_lungs,
                                             pseudo_teacher=pseudo_teacher(args, k), copy_paste=args.copy_paste)
            model = load_infection_model(str(stem) + ".json").model
            train_slices, val_slices = train_infection.split_medseg(medseg, val, guard)
            fit_counts.update({f"fold{k}:{name}": c for name, c in
                               train_infection.medseg_counts(model, train_slices, flip=True).items()})
            typing.update(train_infection.typing_counts(model, val_slices, flip=True))
            row = {"val": list(val), "guard": list(guard), "train_seconds": card["training"]["train_seconds"]}
            for flip in (False, True):
                fold_counts = train_infection.medseg_counts(model, val_slices, flip)
                counts[flip].update(fold_counts)
                metrics = train_infection.evaluate(model, [], zenodo_val, flip)
                zenodo[flip].append(metrics["zenodo20"]["dice_infection_mean"])
                row["flip" if flip else "plain"] = {
                    "medseg": train_infection.summarize_medseg(fold_counts)["dice_mean_per_image"],
                    "zenodo20_mean": metrics["zenodo20"]["dice_infection_mean"],
                }
            rows.append(row)
    record(args.name, {
        "recipe": {"epochs": args.epochs, "width": args.width, "class_weights": args.class_weights, "seed": args.seed,
                   "dice_per_image": args.dice_per_image,
                   "intensity_gamma": args.intensity_gamma, "zenodo_intensity": not args.no_zenodo_intensity,
                   "medseg_repeats": args.medseg_repeats, "warp_interpolation": args.warp_interpolation,
                   "init_from_lungs": args.init_from_lungs, "pseudo_teachers": args.pseudo_teachers,
                   "copy_paste": args.copy_paste,
                   "train_folds": args.train_folds, "other settings": "train() defaults",
                   **({"ensemble_of": args.ensemble_of} if args.ensemble_of else {})},
        "pooled_over_folds": {
            ("flip" if flip else "plain"): {
                "medseg": train_infection.summarize_medseg(counts[flip]),
                "zenodo20_mean_over_folds": round(float(np.mean(zenodo[flip])), 4),
                "medseg_counts_per_slice": counts[flip],
            }
            for flip in (False, True)
        },
        "fit_to_own_training_slices": {
            "medseg_dice_mean_per_image": train_infection.summarize_medseg(fit_counts)["dice_mean_per_image"],
            "slices": len(fit_counts), "note": "each fold model on the MedSeg slices it trained on, with the flip",
        },
        "typing_of_the_true_extent": {
            **{key: {name: value[name] for name in ("ground_glass", "consolidation")}
               for key, value in train_infection.summarize_medseg(typing).items()
               if key in ("dice_mean_per_image", "dice_mean_per_image_ci95")},
            "note": "out of fold, with the flip: inside the radiologists' infection each pixel typed by the more "
                    "probable of the model's two types (none not allowed), outside it none; against the Dice above, "
                    "what the model's extent costs each type",
        },
        "folds": rows,
    })


def save_fold_ensemble(args: argparse.Namespace, k: int, val: tuple[str, ...], guard: tuple[str, ...],
                       stem: Path, parser: argparse.ArgumentParser) -> dict:
    """Write fold ``k``'s :class:`~covidct.models.unet.UNetEnsemble` of the fold models kept in
    ``args.ensemble_of`` to ``stem``; each member's card must be this recipe's fold ``k`` (any
    seed). Returns the ensemble's card."""
    cards, networks = [], []
    for folder in args.ensemble_of:
        member = Path(folder) / f"infection_fold{k}.json"
        card, state = model_weights.read_weights(member)
        mismatch = recipe_mismatch(card, argparse.Namespace(**{**vars(args), "seed": card["training"]["seed"]}),
                                   k, val, guard)
        if mismatch:
            parser.error(f"{member} is not of this recipe: {mismatch}")
        network = model_weights.build(card)
        network.load_state_dict(state, strict=True)
        cards.append(card)
        networks.append(network)
    model = train_infection.ensemble(networks)
    card = json.loads(json.dumps(cards[0]))
    card.update(name=stem.name, architecture="UNetEnsemble",
                architecture_args={"n_members": len(networks), **cards[0]["architecture_args"]})
    card["training"].update(seeds=[c["training"]["seed"] for c in cards], members=len(cards),
                            ensemble_of=[str(Path(f) / f"infection_fold{k}.json") for f in args.ensemble_of],
                            train_seconds=round(sum(c["training"]["train_seconds"] for c in cards), 1))
    card.pop("metrics", None)
    card.pop("sha256", None)
    model_weights.save(model, card, stem)
    return card


def pseudo_teacher(args: argparse.Namespace, k: int) -> str | None:
    """Fold ``k``'s teacher for self-training (``--pseudo-teachers``), or None."""
    return str(Path(args.pseudo_teachers) / f"infection_fold{k}.json") if args.pseudo_teachers else None


def unused_folds_as_guard(
    folds: list[tuple[tuple[str, ...], tuple[str, ...]]], train_folds: int
) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """``folds`` (:func:`covidct.train.infection.medseg_folds`) with each fold's guard grown by the
    slices of the folds it does not train on when only ``train_folds`` of the others train
    (:func:`_common.unused_folds`); unchanged when all the others train."""
    out = []
    for k, (val, guard) in enumerate(folds):
        unused = {name for i in unused_folds(len(folds), k, train_folds) for name in folds[i][0]}
        out.append((val, tuple(sorted(set(guard) | unused, key=int)) if unused else guard))
    return out


def recipe_mismatch(card: dict, args: argparse.Namespace, k: int, val: tuple[str, ...], guard: tuple[str, ...]) -> str:
    """What differs between fold ``k``'s kept model's card and the recipe on the command line ("" if nothing)."""
    training = card["training"]
    wanted = {
        "seed": args.seed, "epochs": args.epochs, "class_weights": list(args.class_weights),
        "dice_per_image": args.dice_per_image, "intensity_gamma": args.intensity_gamma,
        "zenodo_intensity_channel": not args.no_zenodo_intensity,
        "medseg_repeats_per_epoch": args.medseg_repeats, "warp_interpolation": args.warp_interpolation,
        "init_from_lungs": args.init_from_lungs, "pseudo_teacher": pseudo_teacher(args, k),
        "copy_paste": args.copy_paste,
    }
    found = {key: training.get(key, BEFORE_OPTION.get(key)) for key in wanted}
    found["features"], wanted["features"] = card["architecture_args"]["features"], train_infection.WIDTHS[args.width]
    found["medseg_val"], wanted["medseg_val"] = training["split"]["medseg_val"], list(val)
    found["medseg_guard"], wanted["medseg_guard"] = training["split"]["medseg_guard_unused"], list(guard)
    return ", ".join(f"{key} {found[key]!r} (wanted {wanted[key]!r})" for key in wanted if found[key] != wanted[key])


if __name__ == "__main__":
    main()
