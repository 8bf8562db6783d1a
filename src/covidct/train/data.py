"""Readers for the shared training data (../shared/data); each returns arrays, never files."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from covidct.errors import InputError


def default_data_dir() -> Path:
    """``$COVIDCT_DATA``, else ``../shared/data`` beside the current directory's project."""
    env = os.environ.get("COVIDCT_DATA")
    if env:
        return Path(env)
    return Path.cwd().parent / "shared" / "data"


@dataclass(frozen=True, eq=False)
class SliceCase:
    """The 2-D slices of one case with their masks, anterior at the top."""

    case_id: str
    source: str
    split: str
    images: np.ndarray  # (n, y, x) uint8
    lungs: np.ndarray  # (n, y, x) uint8 0/1
    infection: np.ndarray  # (n, y, x) uint8 0/1


def load_zenodo20(data_dir: str | os.PathLike[str], splits: tuple[str, ...] = ("train", "val")) -> list[SliceCase]:
    """Read zenodo20_slices cases of the given splits (cases.csv), flipping radiopaedia cases
    top-to-bottom so that every image has anterior at the top like covidct's volumes.
    """
    root = Path(data_dir) / "zenodo20_slices"
    table = root / "cases.csv"
    if not table.is_file():
        raise InputError(f"{root}: cases.csv not found; is the shared data at {data_dir}?")
    cases = []
    with open(table, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] in splits]
    for row in rows:
        folder = root / row["case_id"]
        stems = sorted(p.name[: -len("_img.png")] for p in folder.glob("*_img.png"))
        read = lambda kind: np.stack([np.asarray(Image.open(folder / f"{s}_{kind}.png")) for s in stems])  # noqa: E731
        images, lungs, infection = read("img"), read("lung"), read("inf")
        if row["anterior_at_top"] == "False":
            images, lungs, infection = images[:, ::-1], lungs[:, ::-1], infection[:, ::-1]
        cases.append(
            SliceCase(
                case_id=row["case_id"], source=row["source"], split=row["split"],
                images=np.ascontiguousarray(images), lungs=np.ascontiguousarray(lungs),
                infection=np.ascontiguousarray(infection),
            )
        )
    return cases


@dataclass(frozen=True)
class LabelledImage:
    """One 2-D image of ucsd_covid_ct with its official split and label."""

    file: Path
    split: str  # "train" | "val"
    covid: bool
    patient_id: str  # "" when the source publishes no mapping


def load_ucsd(data_dir: str | os.PathLike[str], splits: tuple[str, ...] = ("train", "val")) -> list[LabelledImage]:
    """The UCSD COVID-CT images of the official splits (metadata.csv; the test split is held out).

    Images without a published patient id keep ``patient_id == ""``; the official split lists
    place no patient in two splits.
    """
    root = Path(data_dir) / "ucsd_covid_ct"
    table = root / "metadata.csv"
    if not table.is_file():
        raise InputError(f"{root}: metadata.csv not found; is the shared data at {data_dir}?")
    with open(table, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] in splits]
    return [
        LabelledImage(
            file=root / r["split"] / r["label"] / r["file"],
            split=r["split"],
            covid=r["label"] == "COVID",
            patient_id=r["patient_id"],
        )
        for r in rows
    ]


#: covid_ct_md studies: (class folder, study id, class name of its infected slices).
COVID_CT_MD_STUDIES = (("COVID", "P001", "COVID-19"), ("CAP", "cap001", "CAP"), ("Normal", "normal001", "Normal"))


def read_slice_labels(csv_path: str | os.PathLike[str]) -> dict[float, int]:
    """COVID-CT-MD slice labels as {slice location (mm, 0.1 mm rounded): infection 0/1}.

    Rows in the file run head to feet; join by location, never by row order.
    """
    with open(csv_path, newline="") as fh:
        return {round(float(r["slice_location_mm"]), 1): int(r["infection"]) for r in csv.DictReader(fh)}


@dataclass(frozen=True, eq=False)
class TypedSlice:
    """One MedSeg slice (Inf-Net training split) with its typed infection mask, anterior at the top."""

    name: str
    image: np.ndarray  # (y, x) uint8, lung-type window, cropped to the chest
    mask: np.ndarray  # (y, x) uint8: 0 none, 1 ground-glass, 2 consolidation


def load_medseg(data_dir: str | os.PathLike[str]) -> list[TypedSlice]:
    """The 50 labelled MedSeg slices of medseg_infnet/train (manifest.csv order).

    The distributed slices lie rotated 90 degrees (posterior at the right of the picture); they are
    turned clockwise so that anterior is at the top, like covidct's volumes.
    """
    root = Path(data_dir) / "medseg_infnet" / "train"
    table = root / "manifest.csv"
    if not table.is_file():
        raise InputError(f"{root}: manifest.csv not found; is the shared data at {data_dir}?")
    with open(table, newline="") as fh:
        names = [r["name"] for r in csv.DictReader(fh)]
    turn = lambda path: np.ascontiguousarray(np.rot90(np.asarray(Image.open(path)), k=-1))  # noqa: E731
    return [TypedSlice(name=n, image=turn(root / "imgs" / f"{n}.png"), mask=turn(root / "masks" / f"{n}.png"))
            for n in names]
