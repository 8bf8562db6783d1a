"""The ``covidct`` command: a thin shell over the library API.

User errors (:class:`covidct.errors.InputError`) print one line on stderr and exit with status 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

import covidct
from covidct.errors import InputError

log = logging.getLogger("covidct")


def volume_info(volume: covidct.Volume) -> dict[str, Any]:
    """The facts ``covidct info`` prints, as a JSON-ready dict."""
    meta = volume.meta
    z = meta.slice_z_mm
    return {
        "path": meta.source_path,
        "format": meta.source_format,
        "shape_zyx": list(volume.shape),
        "spacing_mm_zyx": [round(s, 6) for s in volume.spacing_mm],
        "n_slices": volume.shape[0],
        "hu_min": float(np.min(volume.array)),
        "hu_max": float(np.max(volume.array)),
        "is_hu": volume.is_hu,
        "dtype": str(volume.array.dtype),
        "modality": meta.modality,
        "manufacturer": meta.manufacturer,
        "patient_id": meta.patient_id,
        "study_uid": meta.study_uid,
        "series_uid": meta.series_uid,
        "study_date": meta.study_date,
        "z_first_mm": round(z[0], 4) if z else None,
        "z_last_mm": round(z[-1], 4) if z else None,
        "gantry_tilt_deg": round(volume.geometry.tilt_deg, 3),
        "warnings": list(meta.warnings),
    }


def cmd_info(args: argparse.Namespace) -> int:
    volume = covidct.load(args.path, on_gap="resample" if args.resample_gaps else "reject")
    info = volume_info(volume)
    if args.json:
        print(json.dumps(info))
        return 0
    # Warnings already went to stderr through logging.
    width = max(len(k) for k in info)
    for key, value in info.items():
        if key != "warnings":
            print(f"{key:<{width}}  {value}")
    return 0


def cmd_phantom(args: argparse.Namespace) -> int:
    from covidct import phantom
    from covidct.report.nifti import write_nifti
    from covidct.report.folders import check_output_dir, staged_folder

    out = check_output_dir(args.output, args.force)
    ph = phantom.make_phantom(
        shape=(args.slices, args.size, args.size),
        spacing_mm=(args.slice_mm, args.fov_mm / args.size, args.fov_mm / args.size),
        lesions=() if args.no_lesions else phantom.DEFAULT_LESIONS,
        seed=args.seed,
    )
    with staged_folder(out) as tmp:
        phantom.write_dicom_series(ph.volume, tmp / "dicom")
        write_nifti(ph.volume.array, ph.volume.geometry, tmp / "ct.nii.gz")
        write_nifti(ph.lungs, ph.volume.geometry, tmp / "lungs.nii.gz")
        write_nifti(ph.infection, ph.volume.geometry, tmp / "infection.nii.gz")
    print(f"wrote {out}/dicom ({args.slices} slices), ct.nii.gz, lungs.nii.gz, infection.nii.gz")
    return 0


def cmd_segment(args: argparse.Namespace) -> int:
    from covidct import lungs
    from covidct.report import figures
    from covidct.report.nifti import write_nifti

    out = Path(args.output)
    if not out.name.endswith((".nii", ".nii.gz")):
        raise InputError(f"{out}: the lung mask is written as NIfTI; give a .nii or .nii.gz path.")
    volume = covidct.load(args.path, on_gap="resample" if args.resample_gaps else "reject")
    model = _load_model(lungs.load_lung_model, args.weights)
    masks = lungs.segment_lungs(volume, model)
    write_nifti(masks.labels, volume.geometry, out)
    overlays = []
    if args.overlays:
        for k in figures.overlay_slices(masks.lung_slices):
            png = figures.lung_overlay(volume.array[k], masks.labels[k], volume.is_hu)
            overlays.append(str(figures.save_png(png, Path(args.overlays) / f"lungs_slice{k:04d}.png")))
    result = {
        "input": volume.meta.source_path,
        "mask": str(out),
        "lung_volume_ml": {k: round(v, 1) for k, v in masks.volume_ml.items()},
        "lung_slices": int(len(masks.lung_slices)),
        "n_slices": volume.shape[0],
        "model": masks.model,
        "overlays": overlays,
    }
    if args.json:
        print(json.dumps(result))
    else:
        v = result["lung_volume_ml"]
        print(f"lungs: right {v['right']:.0f} mL, left {v['left']:.0f} mL, total {v['total']:.0f} mL "
              f"on {result['lung_slices']} of {result['n_slices']} slices -> {out}")
        for path in overlays:
            print(f"overlay: {path}")
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    from covidct import classify, lungs

    model = _load_model(classify.load_classifier, args.weights)
    lung_model = lungs.load_lung_model()
    for path in args.paths:
        volume = covidct.load(path, on_gap="resample" if args.resample_gaps else "reject")
        threshold = classify.slice_threshold(model.card, volume.is_hu)
        masks = lungs.segment_lungs(volume, lung_model)
        probs = classify.classify_slices(volume, masks, model)
        z_mm = volume.slice_z_mm
        lung_slices = set(masks.lung_slices.tolist())
        for k, (p, z) in enumerate(zip(probs, z_mm)):
            p_abnormal = float(1.0 - p[0])
            row = {
                "path": volume.meta.source_path or str(path),
                "index": k,
                "z_mm": None if z is None else round(float(z), 2),
                "lung": k in lung_slices,
                "p_abnormal": round(p_abnormal, 4),
                "abnormal": p_abnormal >= threshold,
                "probabilities": {c: round(float(v), 4) for c, v in zip(classify.CLASSES, p)},
            }
            if args.json:
                print(json.dumps(row))
            else:
                top = classify.CLASSES[int(np.argmax(p))]
                flag = "abnormal" if row["abnormal"] else "normal"
                where = "" if z is None else f" z {z:8.1f} mm"
                print(f"{row['path']} slice {k:4d}{where}  p_abnormal {p_abnormal:.3f}  {flag:<8} {top}"
                      + ("" if row["lung"] else "  (no lung)"))
    return 0


def _print_summary(report: dict[str, Any], out: Path) -> None:
    d, s = report["decision"], report["scores"]
    print(f"{d['label']} ({d['diagnosis']}): {d['positive_slices']} of {d['lung_slices']} lung slices positive "
          f"(ratio {d['positive_slice_ratio']:.3f}, threshold {d['threshold']:.3f})")
    print(f"Corona score {s['corona_score_cm3']:.1f} cm3; infection {s['infection_volume_ml']:.1f} mL; "
          f"lungs R {s['lung_volume_ml']['right']:.0f} / L {s['lung_volume_ml']['left']:.0f} mL; involved "
          f"R {s['involvement_pct']['right']:.1f} % / L {s['involvement_pct']['left']:.1f} %")
    gg, cons = s["infection_by_type_ml"]["ground_glass"], s["infection_by_type_ml"]["consolidation"]
    print(f"segmented: ground-glass {gg:.1f} mL, consolidation {cons:.1f} mL; involved "
          f"R {s['segmentation_involvement_pct']['right']:.1f} % / L {s['segmentation_involvement_pct']['left']:.1f} %")
    dicom = report["outputs"].get("dicom")
    extra = f", dicom/ ({2 + len(dicom['key_slices'])} objects)" if dicom else ""
    print(f"wrote {out}/report.html, report.json, lungs.nii.gz, localization.nii.gz, infection.nii.gz, "
          f"overview3d.png{extra} in {report['timing_s']['total']:.1f} s")
    for warning in report["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)


def _analyze_to(path: str | Path, out: Path, force: bool, on_gap: str = "reject", dicom: bool = False) -> dict[str, Any]:
    """load -> analyze -> write, with a progress bar on stderr; returns the report dict.

    The DICOM decoding workers are forked first; torch and the report's libraries then import
    in a background thread while the input is read (about 1 s saved on a 2-core CPU)."""
    import time

    from tqdm import tqdm

    from covidct import parallel

    parallel.start_worker_processes()
    parallel.import_in_background("covidct.pipeline", "covidct.report.outputs", "matplotlib.figure",
                                  "mpl_toolkits.mplot3d", "skimage.measure", "nibabel")
    with tqdm(desc="analyze", unit="stage", file=sys.stderr, disable=None, leave=False) as bar:
        start = time.perf_counter()
        volume = covidct.load(path, on_gap=on_gap)
        sources = None
        if dicom:  # before the work: a NIfTI or resampled input cannot be referenced
            from covidct.io.dicom import read_source_headers

            sources = read_source_headers(volume)
        load_s = time.perf_counter() - start
        bar.set_postfix_str("load")
        bar.update()

        from covidct.pipeline import STAGES, analyze
        from covidct.report.outputs import write_report

        bar.total = len(STAGES) + 2  # load, the stages, writing
        bar.refresh()

        def stage_done(name: str) -> None:
            bar.set_postfix_str(name)
            bar.update()

        analysis = analyze(volume, on_stage=stage_done)
        report = write_report(analysis, out, load_s=load_s, force=force, dicom_sources=sources)
        bar.update()
    return report


def cmd_analyze(args: argparse.Namespace) -> int:
    from covidct.report.folders import check_output_dir

    out = check_output_dir(args.output, args.force)  # refuse before the work, not after
    report = _analyze_to(args.path, out, args.force, "resample" if args.resample_gaps else "reject", args.dicom)
    if args.json:
        print(json.dumps(report))
    else:
        _print_summary(report, out)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from covidct import phantom
    from covidct.report.folders import check_output_dir

    out = check_output_dir(args.output, args.force)
    ph = phantom.make_phantom(shape=(96, 256, 256), spacing_mm=(2.5, 360 / 256, 360 / 256), seed=0)
    with tempfile.TemporaryDirectory(prefix="covidct-demo-") as tmp:
        # Through a real DICOM series, as a study from a scanner would come.
        phantom.write_dicom_series(ph.volume, Path(tmp) / "dicom")
        report = _analyze_to(Path(tmp) / "dicom", out, args.force)
    lesion_ml = float(((ph.infection > 0) & (ph.lungs > 0)).sum() * ph.volume.voxel_volume_ml)
    if args.json:
        print(json.dumps({**report, "phantom": {"lesion_volume_ml": round(lesion_ml, 1)}}))
    else:
        print(f"demo: a synthetic chest CT (96 x 256 x 256) with {len(ph.lesions)} lesions, "
              f"{lesion_ml:.0f} mL of them inside the lungs")
        _print_summary(report, out)
    return 0


def cmd_track(args: argparse.Namespace) -> int:
    from covidct.report.folders import check_output_dir
    from covidct.report.outputs import write_track
    from covidct.track import follow_up

    out = check_output_dir(args.output, args.force)
    reports = []
    for path in args.reports:
        try:
            reports.append((str(path), json.loads(Path(path).read_text(encoding="utf-8"))))
        except FileNotFoundError:
            raise InputError(f"{path}: no such file; pass report.json files written by covidct analyze.") from None
        except (json.JSONDecodeError, UnicodeDecodeError, IsADirectoryError) as exc:
            raise InputError(f"{path}: not a readable JSON report ({exc.__class__.__name__}).") from None
    track = follow_up(reports)
    write_track(track, out, args.force)
    if args.json:
        print(json.dumps(track))
    else:
        for st in track["studies"]:
            print(f"{st['study_date']}  {st['decision']:<8} {st['diagnosis']:<8} Corona score "
                  f"{st['corona_score_cm3']:8.1f} cm3  involved {st['involvement_pct']['total']:5.1f} %  {st['report']}")
        print(f"wrote {out}/track.json and track.png")
    for warning in track["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from covidct import serve

    overrides = dict(ae_title=args.ae_title, host=args.host, port=args.port, destination=args.destination,
                     allowed_ae_titles=args.allow, storage=args.storage, workers=args.workers, idle_s=args.idle_s,
                     retry_s=args.retry_s)
    try:
        if args.config:
            config = serve.load_config(args.config, **overrides)
        else:
            config = serve.config_from({}, "flags", **overrides)
    except OSError as exc:
        raise InputError(f"{args.config}: cannot read the settings ({exc.strerror}).") from None
    except ValueError as exc:
        raise InputError(str(exc)) from None
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if args.debug else logging.INFO)
    for handler in root.handlers:  # a long-running node: every line with its time
        handler.setFormatter(_LowerLevelFormatter("%(asctime)s covidct: %(levelname)s: %(message)s"))
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG if args.debug else logging.WARNING)
    try:
        serve.DicomNode(config).serve_forever()
    except OSError as exc:  # the port is taken or not ours to bind, the storage not writable
        raise InputError(f"{exc}.") from None
    return 0


def cmd_train_lungs(args: argparse.Namespace) -> int:
    from covidct.train import lungs as train_lungs

    try:
        card = train_lungs.train(**_training_kwargs(args), encoder_weights=args.encoder_weights,
                                 dense_lesions=args.dense_lesions)
    except ValueError as exc:  # flags that do not go together, a probability out of range
        raise InputError(str(exc)) from None
    _print_training_result(args.out, card)
    return 0


def cmd_evaluate_lungs(args: argparse.Namespace) -> int:
    from covidct import lungs
    from covidct.train import lungs as train_lungs
    from covidct.train.data import default_data_dir, load_zenodo20

    model = _load_model(lungs.load_lung_model, args.weights)
    cases = load_zenodo20(args.data or default_data_dir(), (args.split,))
    metrics = train_lungs.evaluate(model.model, cases)
    metrics.update(model=model.name, sha256=model.sha256, split=args.split, data="zenodo20_slices")
    if args.json:
        print(json.dumps(metrics))
    else:
        for case, d in metrics["dice_per_case"].items():
            print(f"{case:<28} dice {d:.4f}")
        print(f"{'mean over ' + str(metrics['n_cases']) + ' cases':<28} dice {metrics['dice_mean']:.4f}")
    return 0


def cmd_train_classifier(args: argparse.Namespace) -> int:
    from covidct.train import classifier as train_classifier

    try:
        card = train_classifier.train(
            **_training_kwargs(args),
            weights=args.weights,
            cache=args.cache,
            val_studies=tuple(args.val_study),
            lung_masked=not args.no_lung_mask,
            members=args.members,
            exclude_train_sources=tuple(args.exclude_train_source),
            attention_weight=args.attention_weight,
            attention_only_sources=tuple(args.attention_only_source),
            pretrain_lesions=args.pretrain_lesions,
            warp_interpolation=args.warp_interpolation,
            mixup_alpha=args.mixup_alpha,
            quality_augment=args.quality_augment,
            layer3_lr_factor=args.layer3_lr_factor,
            ucsd_val_patients=() if args.all_ucsd else None,
            picture_threshold=args.picture_threshold,
            map_check=args.map_check,
        )
    except (ValueError, train_classifier.MapCheckFailed) as exc:  # flags that do not go together; maps that fail
        raise InputError(str(exc)) from None
    _print_training_result(args.out, card, threshold=card["threshold"])
    return 0


def cmd_evaluate_classifier(args: argparse.Namespace) -> int:
    from covidct import classify
    from covidct.train import classifier as train_classifier
    from covidct.train.data import default_data_dir

    model = _load_model(classify.load_classifier, args.weights)
    result = train_classifier.evaluate(model, args.data or default_data_dir(), args.out, cache=args.cache,
                                       val_studies=tuple(args.val_study) if args.val_study else None)
    if args.json:
        print(json.dumps(result))
    else:
        for source, row in result["sources"].items():
            auc = ("n/a (one class)" if row["auc_abnormal"] is None
                   else _with_interval(row["auc_abnormal"], row["auc_abnormal_ci95"]))
            extra = (f"  AUC COVID vs NonCOVID {_with_interval(row['auc_covid'], row['auc_covid_ci95'])}"
                     if "auc_covid" in row else "")
            print(f"{source:<12} {row['slices']:4d} slices  AUC abnormal {auc}  sensitivity {row['sensitivity']}"
                  f"  specificity {row['specificity']}{extra}")
        print(f"threshold {result['threshold']} (HU), {result['picture_threshold']} (8-bit pictures); "
              f"wrote {args.out}/classifier_metrics.json and classifier_roc.png")
    return 0


def _with_interval(value: float, interval: list[float] | None) -> str:
    """``0.8164 (95% CI 0.72-0.91)``; the value alone without an interval."""
    return f"{value:.4f}" + (f" (95% CI {interval[0]:.2f}-{interval[1]:.2f})" if interval else "")


def cmd_train_infection(args: argparse.Namespace) -> int:
    from covidct.train import infection as train_infection

    split = {"medseg_val": (), "medseg_guard": ()} if args.all_medseg else {}
    try:
        card = train_infection.train(**_training_kwargs(args), width=args.width,
                                     warp_interpolation=args.warp_interpolation,
                                     init_from_lungs=None if args.random_init else args.init_from_lungs,
                                     members=args.members, pseudo_teacher=args.pseudo_teacher, **split)
    except (ValueError, FileNotFoundError) as exc:  # lung weights that are missing, damaged or do not fit
        raise InputError(str(exc)) from None
    _print_training_result(args.out, card)
    return 0


def cmd_evaluate_infection(args: argparse.Namespace) -> int:
    from covidct import infection
    from covidct.train import infection as train_infection
    from covidct.train.data import default_data_dir, load_medseg, load_zenodo20

    data = args.data or default_data_dir()
    model = _load_model(infection.load_infection_model, args.weights)
    split = model.card.get("training", {}).get("split", {})
    held_out = split.get("medseg_val", train_infection.MEDSEG_VAL)  # never a slice the model trained on
    _, medseg_val = train_infection.split_medseg(load_medseg(data), held_out, split.get("medseg_guard_unused", ()))
    metrics = train_infection.evaluate(model.model, medseg_val, load_zenodo20(data, ("val",)), flip=not args.no_flip)
    metrics.update(model=model.name, sha256=model.sha256, flip=not args.no_flip)
    if args.json:
        print(json.dumps(metrics))
    else:
        m = metrics["medseg"]
        if not medseg_val:
            print("medseg: this model trained on every MedSeg slice; its estimate is the cross-validation of "
                  "benchmarks/infection_cv.py (results/infection_cv.json)")
        for name in ("infection", "ground_glass", "consolidation") if medseg_val else ():
            mean, pooled = m["dice_mean_per_image"][name], m["dice_pooled"][name]
            per_image = "n/a" if mean is None else _with_interval(mean, m["dice_mean_per_image_ci95"][name])
            print(f"medseg val ({m['n_images_with_class'][name]:2d} images) {name:<14} dice per image "
                  f"{per_image}  pooled {'n/a' if pooled is None else f'{pooled:.4f}'}")
        for case, d in metrics["zenodo20"]["dice_infection_per_case"].items():
            print(f"zenodo20 {case:<28} infection dice {d:.4f}")
        print(f"zenodo20 mean over cases{'':<13} infection dice {metrics['zenodo20']['dice_infection_mean']:.4f}")
    return 0


def _load_model(loader: Any, weights: str | None) -> Any:
    """Load weights through ``loader``, turning a missing or damaged file into an InputError."""
    try:
        return loader(weights) if weights else loader()
    except (FileNotFoundError, ValueError) as exc:
        raise InputError(f"cannot load model weights: {exc}") from exc


def _add_training_arguments(p: argparse.ArgumentParser, model: str, epochs: int, batch_size: int, lr: float) -> None:
    """The flags every ``covidct train MODEL`` shares."""
    p.add_argument("--data", help="shared data folder (default $COVIDCT_DATA or ../shared/data)")
    p.add_argument("--out", default=model,
                   help=f"output stem: writes STEM.safetensors and STEM.json (default ./{model})")
    p.add_argument("--epochs", type=_positive_int, default=epochs, help=f"epochs (default {epochs})")
    p.add_argument("--batch-size", type=_positive_int, default=batch_size, help=f"batch size (default {batch_size})")
    p.add_argument("--lr", type=_positive_float, default=lr, help=f"peak learning rate (default {lr:g})")
    p.add_argument("--max-minutes", type=_positive_float,
                   help="stop after this much training time (the learning-rate schedule still spans --epochs: "
                   "set --epochs to what fits the budget)")
    p.add_argument("--no-bf16", action="store_true",
                   help="train in float32 (default: bfloat16 autocast where the CPU has native bf16, AVX-512 BF16 / "
                   "AMX, float32 elsewhere: emulated bf16 is several times slower)")
    p.add_argument("--threads", type=_positive_int, help="torch CPU threads (default: torch's choice)")


def _add_warp_argument(p: argparse.ArgumentParser, default: str) -> None:
    """``--warp-interpolation``: how the augmentation's random warp resamples the training images."""
    p.add_argument("--warp-interpolation", choices=["bilinear", "bicubic"], default=default,
                   help=f"resampling of the augmentation's warp (default {default}); bilinear smooths every "
                   "training image, which inference never does")


def _training_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The train() arguments every ``covidct train MODEL`` passes the same way."""
    from covidct.models import weights as model_weights
    from covidct.train.data import default_data_dir

    return {
        "data_dir": args.data or default_data_dir(),
        "out_stem": args.out,
        "architecture": args.arch,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "max_minutes": args.max_minutes,
        "bf16": not args.no_bf16 and model_weights.bf16_inference(),
    }


def _print_training_result(out: str, card: dict[str, Any], **extra: Any) -> None:
    training = card["training"]
    print(json.dumps({"weights": f"{out}.safetensors", "card": f"{out}.json", "epochs": training["epochs"],
                      "train_seconds": training["train_seconds"], **extra, "metrics": card["metrics"]}))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="covidct",
        description=f"COVID-19 chest CT analysis. {covidct.DISCLAIMER}",
    )
    parser.add_argument("--version", action="version", version=f"covidct {covidct.__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = sub.add_parser(
        "info",
        help="read a CT study and print its geometry and HU range",
        description="Read a CT (DICOM folder or file, NIfTI, or 2-D image) and print what covidct sees.",
    )
    info.add_argument("path", help="DICOM folder or file, .nii/.nii.gz, or a PNG/JPEG/TIFF slice")
    info.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    info.add_argument(
        "--resample-gaps",
        action="store_true",
        help="interpolate a DICOM series with uneven slice spacing onto even planes instead of refusing it",
    )
    info.set_defaults(func=cmd_info)

    ph = sub.add_parser(
        "phantom",
        help="write a synthetic chest CT with known lungs and lesions",
        description="Write a synthetic chest CT as a DICOM series and NIfTI, with its lung and lesion masks.",
    )
    ph.add_argument("-o", "--output", required=True, help="output folder (created; must be empty unless --force)")
    ph.add_argument("--slices", type=_positive_int, default=96, help="number of slices (default 96)")
    ph.add_argument("--size", type=_positive_int, default=256, help="matrix size in-plane (default 256)")
    ph.add_argument("--slice-mm", type=_positive_float, default=2.5, help="slice spacing in mm (default 2.5)")
    ph.add_argument("--fov-mm", type=_positive_float, default=360.0, help="field of view in mm (default 360)")
    ph.add_argument("--no-lesions", action="store_true", help="a healthy phantom")
    ph.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    ph.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    ph.set_defaults(func=cmd_phantom)

    seg = sub.add_parser(
        "segment",
        help="segment the right and left lung; write the mask as NIfTI",
        description="Segment the lungs (1 right, 2 left) and write the mask in the input's geometry. This runs "
        "the lung model alone; `covidct analyze` also puts back infected, partly aerated lung the lung model "
        "left out (covidct.lungs.add_infected_lung), so its lung masks can be larger.",
    )
    seg.add_argument("path", help="DICOM folder or file, .nii/.nii.gz, or a PNG/JPEG/TIFF slice")
    seg.add_argument("-o", "--output", required=True, help="output mask, .nii or .nii.gz")
    seg.add_argument("--overlays", metavar="DIR", help="also write PNG overlays of five lung slices here")
    seg.add_argument("--weights", help="model card (.json) to use instead of the shipped lung model")
    seg.add_argument("--json", action="store_true", help="print one JSON object")
    seg.add_argument("--resample-gaps", action="store_true", help="as for info")
    seg.set_defaults(func=cmd_segment)

    an = sub.add_parser(
        "analyze",
        help="the whole analysis of a CT study: report.html, report.json, masks, 3-D overview",
        description="Lungs, per-slice probabilities, Grad-CAM localization, case decision and Corona score, "
        "and the ground-glass / consolidation segmentation of one CT; written as a folder (report.html, "
        "report.json, lungs.nii.gz, localization.nii.gz, infection.nii.gz, overview3d.png). "
        f"COVIDCT_BF16=0 runs the networks in float32. {covidct.DISCLAIMER}",
    )
    an.add_argument("path", help="DICOM folder or file, .nii/.nii.gz, or a PNG/JPEG/TIFF slice")
    an.add_argument("-o", "--output", required=True, help="output folder (created; must be empty unless --force)")
    an.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    an.add_argument("--json", action="store_true", help="print report.json on stdout")
    an.add_argument("--resample-gaps", action="store_true", help="as for info")
    an.add_argument("--dicom", action="store_true",
                    help="also write OUT/dicom/: a DICOM Segmentation (lungs, ground-glass, consolidation, "
                    "localization), a TID 1500 measurement SR and the key slices as secondary captures, in the "
                    "source study (DICOM input only)")
    an.set_defaults(func=cmd_analyze)

    sv = sub.add_parser(
        "serve",
        help="a DICOM node: receive CT studies from a PACS, analyze them, send SEG/SR/key slices back",
        description="Listen for DICOM associations (C-ECHO, C-STORE). A study is complete when none of its "
        "instances arrived for --idle-s seconds; it is then analyzed (covidct analyze --dicom, --workers at a "
        "time) and its DICOM Segmentation, measurement SR and key-slice secondary captures are C-STOREd to "
        "--destination. Received files are on disk before they are acknowledged; a restart resumes unfinished "
        "studies. Settings come from --config (TOML keys ae_title, host, port, allowed_ae_titles, storage, "
        "workers, idle_s, retry_s and a [destination] table with host, port, ae_title; see README) and the flags, "
        f"which win. Logs one line per study. {covidct.DISCLAIMER}",
    )
    sv.add_argument("--config", metavar="TOML", help="settings file")
    sv.add_argument("--ae-title", help="this node's AE title (default COVIDCT)")
    sv.add_argument("--host", help="address to listen on (default 0.0.0.0: all)")
    sv.add_argument("--port", type=int, help="port to listen on (default 11112)")
    sv.add_argument("--destination", metavar="HOST:PORT:AET", help="where results are sent (default: kept only)")
    sv.add_argument("--allow", nargs="+", metavar="AET", help="calling AE titles accepted (default: any)")
    sv.add_argument("--storage", help="folder for received studies and results (default ./covidct-serve)")
    sv.add_argument("--workers", type=_positive_int, help="studies analyzed at the same time (default 1)")
    sv.add_argument("--idle-s", type=_positive_float, help="seconds without a new instance before a study "
                    "counts as complete (default 10)")
    sv.add_argument("--retry-s", type=_positive_float, help="seconds between attempts to send results while the "
                    "destination cannot be reached (default 60; the results are kept meanwhile)")
    sv.set_defaults(func=cmd_serve)

    demo = sub.add_parser(
        "demo",
        help="analyze a built-in synthetic chest CT with known lesions",
        description="Generate a phantom chest CT with lesions, write it as DICOM and analyze it.",
    )
    demo.add_argument("-o", "--output", default="covidct-demo", help="output folder (default ./covidct-demo)")
    demo.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    demo.add_argument("--json", action="store_true", help="print report.json on stdout")
    demo.set_defaults(func=cmd_demo)

    tr = sub.add_parser(
        "track",
        help="follow one patient's studies over time (Corona score, involvement)",
        description="Order a patient's report.json files by study date; write track.json and track.png.",
    )
    tr.add_argument("reports", nargs="+", metavar="REPORT.json", help="report.json files from covidct analyze")
    tr.add_argument("-o", "--output", required=True, help="output folder (created; must be empty unless --force)")
    tr.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    tr.add_argument("--json", action="store_true", help="print track.json on stdout")
    tr.set_defaults(func=cmd_track)

    train = sub.add_parser("train", help="train a model on ../shared/data", description="Train a model.")
    train_sub = train.add_subparsers(dest="model", required=True, metavar="MODEL")
    tl = train_sub.add_parser("lungs", help="the lung U-Net on zenodo20_slices (train split)")
    _add_training_arguments(tl, "lungs", epochs=100, batch_size=16, lr=3e-3)
    tl.add_argument("--arch", choices=["UNet", "VGG16UNet"], default="UNet", help="network (default UNet, compact)")
    tl.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    tl.add_argument("--encoder-weights", metavar="PATH", help="torchvision VGG16 weights for --arch VGG16UNet")
    tl.add_argument("--dense-lesions", type=float, default=0.0, metavar="P",
                    help="probability per training image of dense lesions painted in at the lungs' edge, labelled lung "
                    "(0 <= P <= 1; default %(default)s; tried at 0.5 without gain, benchmarks/README.md)")
    tl.set_defaults(func=cmd_train_lungs)

    ev = sub.add_parser("evaluate", help="evaluate a model on a held-out split", description="Evaluate a model.")
    ev_sub = ev.add_subparsers(dest="model", required=True, metavar="MODEL")
    el = ev_sub.add_parser("lungs", help="lung Dice per case on zenodo20_slices")
    el.add_argument("--data", help="shared data folder (default $COVIDCT_DATA or ../shared/data)")
    el.add_argument("--weights", help="model card (.json); default the shipped lung model")
    el.add_argument("--split", default="val", help="cases.csv split to evaluate (default val)")
    el.add_argument("--json", action="store_true", help="print one JSON object")
    el.set_defaults(func=cmd_evaluate_lungs)

    tc = train_sub.add_parser("classifier", help="the slice classifier (Normal / COVID-19 / CAP)")
    _add_training_arguments(tc, "classifier", epochs=30, batch_size=32, lr=2e-3)
    tc.add_argument("--arch", choices=["CompactResNet", "ResNet50"], default="CompactResNet",
                    help="network (default CompactResNet)")
    tc.add_argument("--seed", type=int, default=0, help="random seed (members use seed, seed+1, ...)")
    tc.add_argument("--members", type=_positive_int, default=1,
                    help="CompactResNet: train this many networks from successive seeds and ship their "
                    "average (the shipped classifier has 3)")
    tc.add_argument("--weights", metavar="PATH", help="torchvision ResNet-50 ImageNet weights for --arch ResNet50")
    tc.add_argument("--cache", metavar="NPZ", help="read/write the prepared slices here (saves ~5 min per run)")
    tc.add_argument("--val-study", action="append", default=[], choices=["P001", "cap001", "normal001"],
                    help="validate on this covid_ct_md study instead of training on it (repeatable; "
                    "leave-one-study-out estimates)")
    tc.add_argument("--no-lung-mask", action="store_true",
                    help="show the model the whole lung crop, not only the lungs (the comparison in the README)")
    tc.add_argument("--exclude-train-source", action="append", default=[], choices=["ucsd", "zenodo20", "covid_ct_md"],
                    help="do not train on this source's train split (repeatable; its validation split is still "
                    "evaluated). The shipped classifier excludes zenodo20: all its slices are infected, so its look "
                    "alone meant abnormal")
    tc.add_argument("--attention-weight", type=float, default=0.0, metavar="W",
                    help="weight of the guided-attention term: on training slices with infection masks (zenodo20), "
                    "the share of the Grad-CAM map outside the infection is a loss (default 0: labels only)")
    tc.add_argument("--attention-only-source", action="append", default=[], choices=["zenodo20"],
                    help="train this source's slices for the guided-attention term only, not the class labels "
                    "(where the network looks on them, not what it answers; needs --attention-weight)")
    tc.add_argument("--pretrain-lesions", action="store_true",
                    help="CompactResNet: first train each network's layers up to layer3 to segment infection "
                    "(zenodo20 masks; Normal slices as empty masks), then train the classifier on top with the stem, "
                    "layer1 and layer2 frozen, so that Grad-CAM's layers hold infection features")
    tc.add_argument("--mixup-alpha", type=float, default=0.0, metavar="A",
                    help="mixup of the label training: each batch blended with a shuffled copy of itself by "
                    "lam ~ Beta(A, A), the loss blended alike (default 0: none, as shipped; not with --attention-weight; "
                    "tried: lower in the UCSD cross-validation, benchmarks/README.md)")
    tc.add_argument("--quality-augment", action="store_true",
                    help="also augment the picture quality: a random loss of resolution (1-3x, p 0.5) and a narrower "
                    "display window (p 0.5), as pictures cut from papers vary (not shipped: lower in the UCSD cross-validation, "
                    "benchmarks/README.md)")
    tc.add_argument("--layer3-lr-factor", type=float, default=1.0, metavar="F",
                    help="with --pretrain-lesions: the lesion-pretrained layer3 learns the labels at F times --lr "
                    "(0 < F <= 1; default 1, as shipped), so that it keeps more of its infection features")
    tc.add_argument("--all-ucsd", action="store_true",
                    help="train on UCSD's official train and val images pooled, none held out (the recipe's estimate "
                    "for pictures is then the patient cross-validation of benchmarks/classifier_cv.py); needs "
                    "--picture-threshold")
    tc.add_argument("--picture-threshold", type=float, metavar="T",
                    help="with --all-ucsd: the 2-D pictures' operating threshold on p_abnormal, the Youden point of "
                    "the recipe's cross-validated out-of-fold probabilities (results/classifier_cv.json)")
    tc.add_argument("--map-check", type=float, metavar="P",
                    help="keep only networks whose Grad-CAM maximum falls inside the infection on at least P of "
                    "zenodo20's training slices (0 < P <= 1); one below is set aside and the next seed drawn, at "
                    "most 3 draws per member (default: no check; whether a network's maps localize varies with its seed and "
                    "training data, benchmarks/README.md)")
    _add_warp_argument(tc, "bilinear")
    tc.set_defaults(func=cmd_train_classifier)

    ec = ev_sub.add_parser("classifier", help="AUC, sensitivity, specificity per source; ROC PNG")
    ec.add_argument("--data", help="shared data folder (default $COVIDCT_DATA or ../shared/data)")
    ec.add_argument("--weights", help="model card (.json); default the shipped classifier")
    ec.add_argument("--out", default="classifier-eval", help="folder for classifier_metrics.json and classifier_roc.png")
    ec.add_argument("--cache", metavar="NPZ", help="prepared slices from train classifier --cache")
    ec.add_argument("--val-study", action="append", default=[], choices=["P001", "cap001", "normal001"],
                    help="covid_ct_md study to evaluate on (default: those the model card says it did not train on)")
    ec.add_argument("--json", action="store_true", help="print one JSON object")
    ec.set_defaults(func=cmd_evaluate_classifier)

    ti = train_sub.add_parser("infection", help="the infection U-Net (ground-glass / consolidation)")
    _add_training_arguments(ti, "infection", epochs=50, batch_size=16, lr=3e-3)
    ti.add_argument("--arch", choices=["UNet"], default="UNet", help="network (default UNet)")
    ti.add_argument("--width", choices=["compact", "wide"], default="compact",
                    help="channels per level: compact 8-128 (default), wide 16-256 (4x the compute)")
    ti.add_argument("--seed", type=int, default=0, help="random seed (default 0; members use seed, seed+1, ...)")
    ti.add_argument("--members", type=_positive_int, default=1,
                    help="train this many U-Nets from successive seeds and save their average (default 1)")
    ti.add_argument("--all-medseg", action="store_true",
                    help="train on all 50 MedSeg slices, none held out (the recipe's estimate is then the 5-fold "
                    "cross-validation of benchmarks/infection_cv.py)")
    ti.add_argument("--init-from-lungs", metavar="CARD", default="lungs",
                    help="start from this lung U-Net's weights (default: the shipped lung model, as the shipped "
                    "recipe; it must have the same widths)")
    ti.add_argument("--random-init", action="store_true", help="start from random weights (the recipe before 2026-12-07)")
    ti.add_argument("--pseudo-teacher", metavar="CARD",
                    help="self-training: add this infection model's labels on UCSD's COVID-19 pictures as typed "
                    "training slices (e.g. 'infection', the shipped one; default none; benchmarks/README.md)")
    _add_warp_argument(ti, "bicubic")
    ti.set_defaults(func=cmd_train_infection)

    ei = ev_sub.add_parser("infection", help="infection Dice (binary, ground-glass, consolidation) per source")
    ei.add_argument("--data", help="shared data folder (default $COVIDCT_DATA or ../shared/data)")
    ei.add_argument("--weights", help="model card (.json); default the shipped infection model")
    ei.add_argument("--no-flip", action="store_true",
                    help="without the test-time flip covidct analyze uses (see covidct.infection.TEST_TIME_FLIP)")
    ei.add_argument("--json", action="store_true", help="print one JSON object")
    ei.set_defaults(func=cmd_evaluate_infection)

    cl = sub.add_parser(
        "classify",
        help="probability of Normal / COVID-19 / CAP for every slice",
        description="Classify every slice of CT studies or 2-D images: one line (or JSON line) per slice.",
    )
    cl.add_argument("paths", nargs="+", metavar="PATH", help="DICOM folder or file, NIfTI, or PNG/JPEG/TIFF slice")
    cl.add_argument("--weights", help="model card (.json) to use instead of the shipped classifier")
    cl.add_argument("--json", action="store_true", help="one JSON object per slice")
    cl.add_argument("--resample-gaps", action="store_true", help="as for info")
    cl.set_defaults(func=cmd_classify)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


class _LowerLevelFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        record.levelname = record.levelname.lower()
        return super().format(record)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``covidct`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LowerLevelFormatter("covidct: %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if args.debug else logging.WARNING)
    if getattr(args, "threads", None):  # the training commands' --threads
        import torch

        torch.set_num_threads(args.threads)
    try:
        return int(args.func(args))
    except InputError as exc:
        if args.debug:
            raise
        print(f"covidct: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("covidct: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
