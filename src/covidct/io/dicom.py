"""Read an axial CT series from DICOM files into a :class:`~covidct.volume.Volume` in HU.

What this module guarantees, because every number downstream depends on it:

* only axial CT images are stacked: localizers (scouts), secondary captures / screen saves,
  directory records, non-image objects and other modalities are skipped, and the reason is
  reported when nothing is left;
* when a folder holds several series, the axial CT series with the most slices is chosen and the
  choice is logged;
* slices are ordered by ImagePositionPatient projected on the slice normal (never by file name,
  InstanceNumber or SliceLocation);
* RescaleSlope / RescaleIntercept are applied per slice;
* the same instance stored twice is read once (with a warning); two different images at one
  position, uneven spacing (missing slices) and slices that do not lie on one line are refused
  with a message saying what to do, unless the caller asks for gap resampling;
* a gantry-tilted series is kept as acquired (tilted planes) with an exact, sheared affine and a
  z spacing measured along the slice normal, and a warning says so;
* every pixel is decoded before anything is returned, so a truncated file fails here, loudly.

Classic single-frame CT and Enhanced / Legacy-Converted Enhanced CT (multi-frame) are supported.
"""

from __future__ import annotations

import logging
import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from tqdm import tqdm

from covidct.errors import InputError
from covidct.parallel import process_map
from covidct.volume import Geometry, Volume, VolumeMeta, spacing_from_affine, to_canonical

log = logging.getLogger(__name__)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
LEGACY_CONVERTED_ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.2"
CT_SOP_CLASSES = frozenset(
    {CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE, LEGACY_CONVERTED_ENHANCED_CT_IMAGE_STORAGE}
)
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"

#: A slice plane counts as axial when its normal is within this angle of the patient z axis
#: (gantry tilts reach about 30 degrees; sagittal and coronal planes are at 90).
MAX_AXIAL_ANGLE_DEG = 45.0
#: Slices closer than this along the normal are at the same position.
SAME_POSITION_MM = 0.01
#: Relative tolerance on the slice step before spacing counts as uneven.
SPACING_RTOL = 0.02
#: Tilts below this are rounding in the header, not a tilted gantry.
MIN_TILT_DEG = 0.5

GapPolicy = Literal["reject", "resample"]


@dataclass(frozen=True, eq=False)
class _Slice:
    """One 2-D image: a single-frame file, or one frame of a multi-frame file."""

    path: Path
    frame: int | None
    sop_uid: str
    series_uid: str
    position: np.ndarray  # (3,) LPS mm, centre of the first pixel
    row_dir: np.ndarray  # (3,) direction of increasing column index
    col_dir: np.ndarray  # (3,) direction of increasing row index
    pixel_spacing_mm: tuple[float, float]  # (between rows, between columns)
    shape: tuple[int, int]
    slope: float
    intercept: float
    rescale_type: str
    thickness_mm: float | None
    header: Dataset

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_dir, self.col_dir)


# ---------------------------------------------------------------------------------------------
# discovery


def find_files(folder: Path) -> list[Path]:
    """All regular files below ``folder`` (recursively), hidden names excluded, sorted."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(root) / f for f in sorted(files) if not f.startswith("."))
    return found


def _unit(v: list[float]) -> np.ndarray:
    """Direction cosines as a unit vector (headers round them to a few digits)."""
    a = np.asarray(v, dtype=float)
    return a / np.linalg.norm(a)


def _float_list(value: object) -> list[float] | None:
    try:
        return [float(v) for v in value]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None


def _rejection(ds: Dataset) -> str | None:
    """Why this object is not an axial CT image, or None when it may be one."""
    sop_class = str(ds.get("SOPClassUID", ""))
    modality = str(ds.get("Modality", "")).upper()
    if not sop_class:
        return "DICOM objects that are not images (directory records or similar)"
    if modality and modality != "CT":
        return f"{modality} images (not CT)"
    if sop_class.startswith(SECONDARY_CAPTURE_PREFIX):
        return "secondary captures / screen saves (not CT images)"
    if sop_class not in CT_SOP_CLASSES:
        name = pydicom.uid.UID(sop_class).name
        return f"{name} objects (not CT images)"
    if any(str(v).upper() == "LOCALIZER" for v in ds.get("ImageType", [])):
        return "localizers (scouts)"
    if "PixelData" not in ds and ds.get("Rows") is None:
        return "CT objects without pixel data"
    return None


def _slices_of(ds: Dataset, path: Path) -> list[_Slice] | str:
    """The 2-D slices an accepted object holds, or the reason it cannot be used."""
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows < 1 or cols < 1:
        return "CT objects without pixel data"
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    sop_uid = str(ds.get("SOPInstanceUID", path))
    series_uid = str(ds.get("SeriesInstanceUID", ""))
    thickness = _float_list([ds.get("SliceThickness")]) if ds.get("SliceThickness") else None

    if "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds:
        return _enhanced_slices(ds, path, rows, cols, n_frames, sop_uid, series_uid)

    ipp = _float_list(ds.get("ImagePositionPatient"))
    iop = _float_list(ds.get("ImageOrientationPatient"))
    spacing = _float_list(ds.get("PixelSpacing"))
    if not (ipp and iop and spacing and len(ipp) == 3 and len(iop) == 6 and len(spacing) == 2):
        return "CT images without geometry (ImagePositionPatient/Orientation, PixelSpacing)"
    if n_frames != 1:
        return "classic CT objects with several frames (unsupported)"
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    return [
        _Slice(
            path=path, frame=None, sop_uid=sop_uid, series_uid=series_uid,
            position=np.array(ipp), row_dir=_unit(iop[:3]), col_dir=_unit(iop[3:]),
            pixel_spacing_mm=(spacing[0], spacing[1]), shape=(rows, cols),
            slope=slope, intercept=intercept,
            rescale_type=str(ds.get("RescaleType", "HU") or "HU"),
            thickness_mm=thickness[0] if thickness else None, header=ds,
        )
    ]


def _group_item(frame_groups: Dataset | None, shared: Dataset | None, keyword: str) -> Dataset | None:
    """The first item of a functional group macro, per-frame first, shared otherwise."""
    for groups in (frame_groups, shared):
        if groups is not None and keyword in groups and len(groups[keyword].value):
            return groups[keyword].value[0]
    return None


def _enhanced_slices(
    ds: Dataset, path: Path, rows: int, cols: int, n_frames: int, sop_uid: str, series_uid: str
) -> list[_Slice] | str:
    shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds else None
    per_frame = list(ds.get("PerFrameFunctionalGroupsSequence", []))
    if len(per_frame) not in (0, n_frames):
        return "enhanced CT objects with inconsistent frame groups"
    slices = []
    for i in range(n_frames):
        fg = per_frame[i] if per_frame else None
        pos = _group_item(fg, shared, "PlanePositionSequence")
        ori = _group_item(fg, shared, "PlaneOrientationSequence")
        meas = _group_item(fg, shared, "PixelMeasuresSequence")
        ipp = _float_list(pos.get("ImagePositionPatient")) if pos else None
        iop = _float_list(ori.get("ImageOrientationPatient")) if ori else None
        spacing = _float_list(meas.get("PixelSpacing")) if meas else None
        if not (ipp and iop and spacing):
            return "enhanced CT frames without geometry (plane position/orientation, pixel measures)"
        frame_type = _group_item(fg, shared, "CTImageFrameTypeSequence")
        if frame_type is not None and any(str(v).upper() == "LOCALIZER" for v in frame_type.get("FrameType", [])):
            return "localizers (scouts)"
        rescale = _group_item(fg, shared, "PixelValueTransformationSequence")
        thickness = _float_list([meas.get("SliceThickness")]) if meas.get("SliceThickness") else None
        slices.append(
            _Slice(
                path=path, frame=i, sop_uid=f"{sop_uid}#{i}", series_uid=series_uid,
                position=np.array(ipp), row_dir=_unit(iop[:3]), col_dir=_unit(iop[3:]),
                pixel_spacing_mm=(spacing[0], spacing[1]), shape=(rows, cols),
                slope=float(rescale.get("RescaleSlope", 1.0)) if rescale else 1.0,
                intercept=float(rescale.get("RescaleIntercept", 0.0)) if rescale else 0.0,
                rescale_type=str(rescale.get("RescaleType", "HU")) if rescale else "HU",
                thickness_mm=thickness[0] if thickness else None, header=ds,
            )
        )
    return slices


def read_headers(paths: list[Path]) -> tuple[list[_Slice], Counter[str]]:
    """Read every file's header; return the candidate axial CT slices and why others were skipped."""
    slices: list[_Slice] = []
    skipped: Counter[str] = Counter()
    for path in paths:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except InvalidDicomError:
            skipped["files that are not DICOM"] += 1
            continue
        except Exception as exc:  # a damaged header: pydicom raises many kinds
            log.debug("cannot read %s: %s", path, exc)
            skipped["DICOM files with unreadable headers"] += 1
            continue
        reason = _rejection(ds)
        found = reason if reason else _slices_of(ds, path)
        if isinstance(found, str):
            skipped[found] += 1
            continue
        for s in found:
            angle = np.degrees(np.arccos(min(1.0, abs(float(s.normal[2])) / np.linalg.norm(s.normal))))
            if angle > MAX_AXIAL_ANGLE_DEG:
                skipped["non-axial CT images (sagittal, coronal or oblique)"] += 1
                break
        else:
            slices.extend(found)
    return slices, skipped


def choose_series(slices: list[_Slice]) -> tuple[list[_Slice], str]:
    """Group slices into series and keep the one with the most distinct positions.

    A series is split further by matrix size and orientation, which must be constant for a
    stack. Returns the chosen slices and a log line naming what was chosen over what.
    """
    groups: dict[tuple, list[_Slice]] = defaultdict(list)
    for s in slices:
        key = (s.series_uid, s.shape, tuple(np.round(np.r_[s.row_dir, s.col_dir], 3)))
        groups[key].append(s)

    def n_positions(group: list[_Slice]) -> int:
        return len({round(float(s.position @ s.normal) / SAME_POSITION_MM) for s in group})

    ranked = sorted(groups.values(), key=lambda g: (-n_positions(g), g[0].series_uid))
    chosen = ranked[0]
    note = ""
    if len(ranked) > 1:
        others = ", ".join(
            f"{g[0].header.get('SeriesNumber', '?')} ({n_positions(g)} slices)" for g in ranked[1:]
        )
        note = (
            f"chose series {chosen[0].header.get('SeriesNumber', '?')} "
            f"({n_positions(chosen)} slices) over series {others}"
        )
    return chosen, note


# ---------------------------------------------------------------------------------------------
# geometry


def _drop_duplicate_instances(slices: list[_Slice], warnings: list[str]) -> list[_Slice]:
    unique: dict[str, _Slice] = {}
    for s in slices:
        unique.setdefault(s.sop_uid, s)
    n_dup = len(slices) - len(unique)
    if n_dup:
        warnings.append(
            f"ignored {n_dup} duplicate file(s) holding an instance already read (same SOPInstanceUID)"
        )
    return list(unique.values())


def _order(slices: list[_Slice], source: Path) -> tuple[list[_Slice], np.ndarray]:
    """Sort by position along the slice normal; refuse two different images at one position."""
    normal = slices[0].normal / np.linalg.norm(slices[0].normal)
    d = np.array([float(s.position @ normal) for s in slices])
    order = np.argsort(d, kind="stable")
    slices, d = [slices[i] for i in order], d[order]
    same = np.flatnonzero(np.diff(d) < SAME_POSITION_MM)
    if same.size:
        z = slices[same[0]].position[2]
        raise InputError(
            f"{source}: {same.size + 1} different images share a slice position (first at z={z:.2f} mm): "
            "the series holds more than one image per position (several phases, echoes or exports). "
            "Export a single reconstruction of the series."
        )
    return slices, d


def _check_spacing(d: np.ndarray, source: Path, on_gap: GapPolicy, warnings: list[str]) -> np.ndarray | None:
    """Return the uniform target positions when the spacing is uneven and may be resampled.

    Returns None when the spacing is uniform. Raises InputError when it is not and
    ``on_gap == "reject"``.
    """
    steps = np.diff(d)
    step = float(np.median(steps))
    bad = np.flatnonzero(np.abs(steps - step) > SPACING_RTOL * step)
    if not bad.size:
        return None
    listing = ", ".join(f"{steps[i]:.3f} mm after slice {i}" for i in bad[:4])
    if on_gap == "reject":
        raise InputError(
            f"{source}: uneven slice spacing: the series steps {step:.3f} mm but has {listing} "
            "(missing slices or mixed reconstructions). Re-export the complete series, or allow "
            "interpolation onto a uniform grid (--resample-gaps)."
        )
    n_new = int(round((d[-1] - d[0]) / step)) + 1
    target = np.linspace(d[0], d[-1], n_new)
    warnings.append(
        f"uneven slice spacing ({listing}; median step {step:.3f} mm): resampled {d.size} slices "
        f"onto {n_new} evenly spaced planes ({target[1] - target[0]:.3f} mm) by linear interpolation"
    )
    return target


def _affine(slices: list[_Slice], d: np.ndarray, source: Path, warnings: list[str]) -> np.ndarray:
    """Voxel (k, row, col) -> LPS mm for the ordered slices; checks they lie on one line."""
    first = slices[0]
    dr, dc = first.pixel_spacing_mm
    n = len(slices)
    if n > 1:
        step_vec = (slices[-1].position - first.position) / (n - 1)
        # Every position must lie on the line p0 + t * step_vec (in-plane offsets linear in t).
        t = (d - d[0]) / (d[-1] - d[0]) * (n - 1)
        predicted = first.position[None, :] + t[:, None] * step_vec[None, :]
        off_line = float(np.abs(np.array([s.position for s in slices]) - predicted).max())
        if off_line > max(0.1, 0.5 * min(dr, dc)):
            raise InputError(
                f"{source}: slice positions do not lie on one line (off by up to {off_line:.2f} mm): "
                "not a regular stack. Export the series as reconstructed by the scanner."
            )
    else:
        thickness = first.thickness_mm or float(first.header.get("SpacingBetweenSlices", 0) or 0)
        if not thickness or thickness <= 0:
            thickness = 1.0
            warnings.append("single slice without SliceThickness: z spacing set to 1.0 mm")
        step_vec = first.normal / np.linalg.norm(first.normal) * thickness
    affine = np.eye(4)
    affine[:3, 0] = step_vec
    affine[:3, 1] = first.col_dir * dr
    affine[:3, 2] = first.row_dir * dc
    affine[:3, 3] = first.position
    return affine


def _tilt_warning(affine: np.ndarray, header: Dataset, n_slices: int) -> str | None:
    tag = header.get("GantryDetectorTilt")
    said = f" (GantryDetectorTilt {float(tag):+.1f})" if tag not in (None, "") else ""
    if n_slices == 1:
        normal = np.cross(affine[:3, 1], affine[:3, 2])
        oblique = float(np.degrees(np.arccos(min(1.0, abs(normal[2]) / np.linalg.norm(normal)))))
        if oblique < MIN_TILT_DEG:
            return None
        return f"single slice whose plane is {oblique:.1f} deg off axial{said}"
    tilt = Geometry(affine=affine).tilt_deg
    if tilt < MIN_TILT_DEG:
        return None
    dz = spacing_from_affine(affine)[0]
    return (
        f"gantry tilt {tilt:.1f} deg{said}: slices kept as acquired (tilted planes); z spacing "
        f"{dz:.3f} mm is measured between planes along their normal and the affine carries the shear"
    )


# ---------------------------------------------------------------------------------------------
# pixels


def _decode_file(path: Path) -> np.ndarray:
    """Stored values of one file; a file that cannot be decoded is the user's: InputError."""
    try:
        return pydicom.dcmread(path).pixel_array
    except Exception as exc:  # truncated, corrupt or undecodable
        raise InputError(
            f"{path}: cannot decode pixel data ({type(exc).__name__}: {exc}). "
            "The file is truncated, corrupt or uses an unsupported compression; re-export the series."
        ) from exc


def _decode(slices: list[_Slice], source: Path) -> list[np.ndarray]:
    """Decode every slice's stored values (before rescale), files read once, in worker processes
    (pydicom's decoders hold the GIL: threads gain nothing, two processes halve the time)."""
    paths = list(dict.fromkeys(s.path for s in slices))
    decoded = tqdm(process_map(_decode_file, paths), total=len(paths), desc="decode DICOM", unit="file",
                   disable=None, leave=False)
    arrays = dict(zip(paths, decoded))

    out = []
    for s in slices:
        a = arrays[s.path]
        if s.frame is not None:
            a = a.reshape((-1,) + s.shape)[s.frame]
        if a.shape != s.shape:
            raise InputError(
                f"{s.path}: pixel data is {a.shape[0]}x{a.shape[1]} but the header says "
                f"{s.shape[0]}x{s.shape[1]}; the file is corrupt."
            )
        out.append(a)
    return out


def _to_hu(slices: list[_Slice], raw: list[np.ndarray]) -> np.ndarray:
    """Stack and rescale; int16 when every slice maps exactly into it, float32 otherwise."""
    stack = np.empty((len(slices),) + slices[0].shape, dtype=np.float32)
    exact = True
    for k, (s, a) in enumerate(zip(slices, raw)):
        np.multiply(a, s.slope, out=stack[k], casting="unsafe")
        stack[k] += s.intercept
        exact &= s.slope == int(s.slope) and s.intercept == int(s.intercept)
    if exact and stack.min() >= np.iinfo(np.int16).min and stack.max() <= np.iinfo(np.int16).max:
        return stack.astype(np.int16)
    return stack


def _resample_z(hu: np.ndarray, d: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Linear interpolation of slices at positions ``d`` onto positions ``target``."""
    idx = np.clip(np.searchsorted(d, target, side="right") - 1, 0, d.size - 2)
    w = ((target - d[idx]) / (d[idx + 1] - d[idx])).astype(np.float32)
    out = np.empty((target.size,) + hu.shape[1:], dtype=np.float32)
    for k, (i, wk) in enumerate(zip(idx, w)):
        out[k] = (1 - wk) * hu[i] + wk * hu[i + 1]
    return out


# ---------------------------------------------------------------------------------------------
# public


def read_source_headers(volume: Volume) -> list[Dataset]:
    """The DICOM headers (no pixel data) of the images a Volume was stacked from, in the source's
    own slice order, for outputs that must reference them (DICOM SEG, SR, secondary captures).

    Raises
    ------
    InputError
        The volume was not read from single-frame DICOM images one for one (NIfTI, a 2-D
        picture, resampled gaps, multi-frame objects), or a file changed since it was read.
    """
    files = volume.meta.source_files
    if volume.meta.source_format != "dicom" or not files:
        raise InputError(
            f"{volume.meta.source_path}: DICOM outputs need a series of single-frame DICOM CT images "
            "read one for one (not NIfTI, a 2-D picture, a resampled series or multi-frame objects)."
        )
    headers = []
    for path in files:
        try:
            headers.append(pydicom.dcmread(path, stop_before_pixels=True))
        except (OSError, InvalidDicomError) as exc:
            raise InputError(f"{path}: cannot re-read the header ({exc}); was the series changed?") from exc
    return headers


def _date(value: object) -> str:
    s = str(value or "")
    return f"{s[:4]}-{s[4:6]}-{s[6:8]}" if len(s) == 8 and s.isdigit() else ""


def load_dicom(path: str | os.PathLike[str], on_gap: GapPolicy = "reject") -> Volume:
    """Load the axial CT series in a DICOM file or folder as a Volume in Hounsfield units.

    Parameters
    ----------
    path : path-like
        A DICOM file, or a folder searched recursively (hidden files are ignored).
    on_gap : {"reject", "resample"}
        What to do when slice spacing is uneven (missing slices): refuse (default), or
        interpolate linearly onto evenly spaced planes with a warning.

    Returns
    -------
    Volume
        Canonical orientation (axis 0 inferior -> superior), int16 HU when exact.

    Raises
    ------
    InputError
        No axial CT series found, undecodable pixels, several images at one position,
        uneven spacing (with ``on_gap="reject"``), slices off one line.
    """
    source = Path(path)
    paths = find_files(source) if source.is_dir() else [source]
    if not paths:
        raise InputError(f"{source}: folder is empty; point covidct at a folder holding a CT series.")
    candidates, skipped = read_headers(paths)
    if not candidates:
        why = "; ".join(f"{n} {reason}" for reason, n in skipped.most_common())
        what = "folder" if source.is_dir() else "file"
        raise InputError(
            f"{source}: no axial CT image found in this {what} ({why}). "
            "Point covidct at an axial CT series exported from the scanner or PACS."
        )
    warnings: list[str] = []
    slices, choice = choose_series(candidates)
    if choice:
        log.info("%s: %s", source, choice)
    if skipped:
        log.info("%s: skipped %s", source, "; ".join(f"{n} {r}" for r, n in skipped.items()))
    slices = _drop_duplicate_instances(slices, warnings)
    slices, d = _order(slices, source)
    target = _check_spacing(d, source, on_gap, warnings) if len(slices) > 2 else None
    affine = _affine(slices, d, source, warnings)
    hu = _to_hu(slices, _decode(slices, source))
    if target is not None:
        hu = _resample_z(hu, d, target)
        affine[:3, 0] = affine[:3, 0] * (len(slices) - 1) / (target.size - 1)
    tilt = _tilt_warning(affine, slices[0].header, len(slices))
    if tilt:
        warnings.append(tilt)

    rescale_types = {s.rescale_type.upper() for s in slices}
    is_hu = rescale_types <= {"HU"}
    if not is_hu:
        warnings.append(
            f"RescaleType {'/'.join(sorted(rescale_types))}: values are not Hounsfield units "
            "(derived map, not a CT reconstruction)"
        )

    source_shape = hu.shape
    array, canon_affine, ornt = to_canonical(hu, affine)
    array = np.ascontiguousarray(array)
    geometry = Geometry(affine=canon_affine, source_ornt=ornt, source_shape=source_shape)
    header = slices[0].header
    for w in warnings:
        log.warning("%s: %s", source, w)
    return Volume(
        array=array,
        spacing_mm=spacing_from_affine(canon_affine),
        is_hu=is_hu,
        geometry=geometry,
        meta=VolumeMeta(
            source_path=str(source),
            source_format="dicom",
            patient_id=str(header.get("PatientID", "")),
            study_uid=str(header.get("StudyInstanceUID", "")),
            series_uid=str(header.get("SeriesInstanceUID", "")),
            study_date=_date(header.get("StudyDate")),
            modality=str(header.get("Modality", "")),
            manufacturer=str(header.get("Manufacturer", "")),
            series_description=str(header.get("SeriesDescription", "")),
            slice_z_mm=geometry.slice_z_mm(array.shape),
            warnings=tuple(warnings),
            source_files=() if target is not None or any(s.frame is not None for s in slices)
            else tuple(str(s.path) for s in slices),
        ),
    )
