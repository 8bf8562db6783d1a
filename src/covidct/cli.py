"""The ``covidct`` command: a thin shell over the library API.

User errors (:class:`covidct.errors.InputError`) print one line on stderr and exit with status 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
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
    from covidct.report.nifti import current_umask, write_nifti

    out = Path(args.output)
    _refuse_non_empty(out, args.force)
    ph = phantom.make_phantom(
        shape=(args.slices, args.size, args.size),
        spacing_mm=(args.slice_mm, args.fov_mm / args.size, args.fov_mm / args.size),
        lesions=() if args.no_lesions else phantom.DEFAULT_LESIONS,
        seed=args.seed,
    )
    # Build everything in a sibling temporary folder, then move it into place: never half-written.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    os.chmod(tmp, 0o777 & ~current_umask())
    try:
        phantom.write_dicom_series(ph.volume, tmp / "dicom")
        write_nifti(ph.volume.array, ph.volume.geometry, tmp / "ct.nii.gz")
        write_nifti(ph.lungs, ph.volume.geometry, tmp / "lungs.nii.gz")
        write_nifti(ph.infection, ph.volume.geometry, tmp / "infection.nii.gz")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"wrote {out}/dicom ({args.slices} slices), ct.nii.gz, lungs.nii.gz, infection.nii.gz")
    return 0


def _refuse_non_empty(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; choose another output path.")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise InputError(f"{out}: folder is not empty; choose another output folder or pass --force.")


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
