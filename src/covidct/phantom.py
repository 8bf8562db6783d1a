"""A synthetic chest CT with known lungs and lesions, for tests and the demo.

The phantom is an axial stack in HU: air outside; a body of soft tissue (+40 HU) under a fat
layer (-100 HU); ribs, sternum and spine (+700 HU); a trachea (air) in the upper third; two
lungs (-850 HU) with vessels (+40 HU); and optional lesions, ground-glass (-700...-300 HU) or
consolidation (-100...+50 HU), placed at chosen places inside a chosen lung. Ground truth comes
with it: lungs (1 right, 2 left; vessels and lesions included) and infection (1 ground-glass,
2 consolidation). It is written as a DICOM series or NIfTI by :func:`write_dicom_series` and
:func:`covidct.report.nifti.write_nifti`.

Anatomy is laid out in millimetres for a 360 mm field of view and scaled to the one asked for,
so any matrix size gives the same chest.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from covidct.volume import Geometry, Volume, VolumeMeta

LesionKind = Literal["ground_glass", "consolidation"]
Side = Literal["right", "left"]

LUNG_HU = -850.0
SOFT_TISSUE_HU = 40.0
FAT_HU = -100.0
BONE_HU = 700.0
AIR_HU = -1000.0
LESION_HU: dict[str, tuple[float, float]] = {"ground_glass": (-700.0, -300.0), "consolidation": (-100.0, 50.0)}
INFECTION_LABEL: dict[str, int] = {"ground_glass": 1, "consolidation": 2}
LUNG_LABEL: dict[str, int] = {"right": 1, "left": 2}
#: Anatomy below is drawn for this field of view and scaled to the requested one.
REFERENCE_FOV_MM = 360.0


@dataclass(frozen=True)
class Lesion:
    """A spherical lesion, clipped to the lung it sits in.

    Attributes
    ----------
    kind : "ground_glass" or "consolidation"
    lung : "right" or "left" (patient sides)
    center : (z, y, x) fractions in [0, 1] of that lung's bounding box
        (z 0 = lung base, y 0 = anterior, x 0 = patient-right edge).
    radius_mm : float
    hu : float, optional
        Lesion density; defaults to the middle of the kind's range (-500 or -25 HU).
    """

    kind: LesionKind
    lung: Side
    center: tuple[float, float, float]
    radius_mm: float
    hu: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in LESION_HU:
            raise ValueError(f"lesion kind must be one of {sorted(LESION_HU)}, got {self.kind!r}")
        if self.lung not in LUNG_LABEL:
            raise ValueError(f"lesion lung must be 'right' or 'left', got {self.lung!r}")
        if self.radius_mm <= 0:
            raise ValueError("lesion radius_mm must be positive")

    @property
    def density_hu(self) -> float:
        low, high = LESION_HU[self.kind]
        return (low + high) / 2 if self.hu is None else self.hu


DEFAULT_LESIONS: tuple[Lesion, ...] = (
    Lesion("ground_glass", "right", center=(0.35, 0.65, 0.35), radius_mm=30.0),
    Lesion("consolidation", "left", center=(0.30, 0.75, 0.60), radius_mm=18.0),
    Lesion("ground_glass", "left", center=(0.70, 0.40, 0.55), radius_mm=15.0),
)


def scaled_lesions(factor: float, lesions: Sequence[Lesion] = DEFAULT_LESIONS) -> tuple[Lesion, ...]:
    """``lesions`` with every radius multiplied by ``factor``; none at 0 (a healthy chest)."""
    if factor < 0:
        raise ValueError("the radius factor cannot be negative")
    return tuple(replace(les, radius_mm=les.radius_mm * factor) for les in lesions) if factor else ()


@dataclass(frozen=True, eq=False)
class Phantom:
    """A synthetic CT and its ground truth, all (z, y, x) in canonical orientation."""

    volume: Volume
    lungs: np.ndarray  # uint8: 0 background, 1 right lung, 2 left lung
    infection: np.ndarray  # uint8: 0 none, 1 ground-glass, 2 consolidation
    lesions: tuple[Lesion, ...] = field(default=())


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _uid(seed: int, *parts: object) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=["covidct-phantom", str(seed), *map(str, parts)]))


def make_phantom(
    shape: tuple[int, int, int] = (48, 128, 128),
    spacing_mm: tuple[float, float, float] = (5.0, 2.8125, 2.8125),
    lesions: Sequence[Lesion] = DEFAULT_LESIONS,
    noise_hu: float = 15.0,
    seed: int = 0,
) -> Phantom:
    """Build a synthetic chest CT with known lungs and lesions.

    Parameters
    ----------
    shape : (z, y, x)
        Matrix size. The chest is drawn for the field of view ``shape * spacing_mm``.
    spacing_mm : (z, y, x)
        Voxel spacing in mm.
    lesions : sequence of Lesion
        Lesions to insert, each clipped to its lung; later ones overwrite earlier ones.
    noise_hu : float
        Standard deviation of Gaussian noise added everywhere (0 for none).
    seed : int
        Seeds the vessels, the noise and the UIDs: the same seed gives the same phantom.

    Returns
    -------
    Phantom
    """
    nz, ny, nx = shape
    sz, sy, sx = spacing_mm
    if min(shape) < 1 or min(spacing_mm) <= 0:
        raise ValueError("shape and spacing_mm must be positive")
    rng = np.random.default_rng(seed)
    scale = min(ny * sy, nx * sx) / REFERENCE_FOV_MM
    # In-plane coordinates (mm) relative to the image centre: x to patient left, y posterior.
    yy = (np.arange(ny) - (ny - 1) / 2)[:, None] * sy / scale
    xx = (np.arange(nx) - (nx - 1) / 2)[None, :] * sx / scale
    # z as a fraction of the stack, 0 = inferior.
    zf = (np.arange(nz) + 0.5) / nz

    # Cross-section that is the same on every slice.
    body = _ellipse(yy, xx, 5, 0, 115, 160)
    inner = _ellipse(yy, xx, 5, 0, 103, 148)
    base = np.full((ny, nx), AIR_HU, dtype=np.float32)
    base[body] = FAT_HU
    base[inner] = SOFT_TISSUE_HU
    bone = _ellipse(yy, xx, 88, 0, 17, 17) | _ellipse(yy, xx, -98, 0, 6, 12)  # vertebra, sternum
    for angle in np.radians(np.r_[np.linspace(200, 330, 6), np.linspace(210, 340, 6) - 180]):
        bone |= _ellipse(yy, xx, 5 + 98 * np.sin(angle), 143 * np.cos(angle), 6, 6)
    base[bone] = BONE_HU
    trachea = _ellipse(yy, xx, -25, 0, 9, 9)

    # Lungs: ellipsoids, the left one smaller (heart). (centre x, semi-axes y, x) in mm.
    lung_shapes = {"right": (-72.0, 78.0, 58.0), "left": (74.0, 74.0, 50.0)}
    lung_z = (0.08, 0.92)  # lung base and apex as fractions of the stack
    z_mid, z_half = (lung_z[0] + lung_z[1]) / 2, (lung_z[1] - lung_z[0]) / 2

    vessels = []
    for side, (cx, ry, rx) in lung_shapes.items():
        for _ in range(7):
            r, t = np.sqrt(rng.uniform(0, 0.55)), rng.uniform(0, 2 * np.pi)
            vessels.append((5 + r * ry * np.sin(t), cx + r * rx * np.cos(t), rng.uniform(2.0, 4.0)))

    hu = np.empty(shape, dtype=np.float32)
    lungs = np.zeros(shape, dtype=np.uint8)
    for k in range(nz):
        hu[k] = base
        u = (zf[k] - z_mid) / z_half
        if abs(u) < 1:
            shrink = np.sqrt(1 - u * u)
            for side, (cx, ry, rx) in lung_shapes.items():
                lung = _ellipse(yy, xx, 5, cx, ry * shrink, rx * shrink) & inner
                lungs[k][lung] = LUNG_LABEL[side]
                hu[k][lung] = LUNG_HU
            vessel = np.zeros((ny, nx), dtype=bool)
            for vy, vx, vr in vessels:
                vessel |= _ellipse(yy, xx, vy, vx, vr, vr)
            hu[k][vessel & (lungs[k] > 0)] = SOFT_TISSUE_HU
        if zf[k] > 0.70:
            hu[k][trachea] = AIR_HU

    infection = np.zeros(shape, dtype=np.uint8)
    for lesion in lesions:
        sphere = _lesion_sphere(lungs, spacing_mm, lesion)
        hu[sphere] = lesion.density_hu
        infection[sphere] = INFECTION_LABEL[lesion.kind]

    if noise_hu > 0:
        hu += rng.normal(0.0, noise_hu, size=shape).astype(np.float32)
    array = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)

    affine = np.eye(4)
    affine[:3, :3] = np.array([[0, 0, sx], [0, sy, 0], [sz, 0, 0]], dtype=float)
    affine[:3, 3] = [-(nx - 1) / 2 * sx, -(ny - 1) / 2 * sy, -(nz - 1) / 2 * sz]
    geometry = Geometry(affine=affine, source_shape=shape)
    volume = Volume(
        array=array,
        spacing_mm=(float(sz), float(sy), float(sx)),
        is_hu=True,
        geometry=geometry,
        meta=VolumeMeta(
            source_path="phantom",
            source_format="phantom",
            patient_id="PHANTOM",
            study_uid=_uid(seed, "study"),
            series_uid=_uid(seed, "series"),
            study_date="2026-01-01",
            modality="CT",
            manufacturer="covidct phantom",
            series_description="covidct synthetic chest CT",
            slice_z_mm=geometry.slice_z_mm(shape),
        ),
    )
    return Phantom(volume=volume, lungs=lungs, infection=infection, lesions=tuple(lesions))


def _lesion_sphere(lungs: np.ndarray, spacing_mm: Sequence[float], lesion: Lesion) -> np.ndarray:
    """Voxels of ``lesion``: its sphere, centred at fractions of its lung's bounding box and
    clipped to that lung (``lungs`` labelled 1 right, 2 left)."""
    inside = lungs == LUNG_LABEL[lesion.lung]
    if not inside.any():
        raise ValueError(f"there is no {lesion.lung} lung to place a lesion in")
    idx = np.argwhere(inside)
    lo, hi = idx.min(0), idx.max(0)
    spacing = np.asarray(spacing_mm, dtype=float)
    centre_mm = (lo + np.asarray(lesion.center) * (hi - lo)) * spacing
    zz, yy, xx = (np.arange(n) * d - c for n, d, c in zip(lungs.shape, spacing, centre_mm))
    sphere = zz[:, None, None] ** 2 + yy[None, :, None] ** 2 + xx[None, None, :] ** 2 <= lesion.radius_mm**2
    return sphere & inside


def insert_lesions(volume: Volume, lungs: np.ndarray, lesions: Sequence[Lesion]) -> tuple[Volume, np.ndarray]:
    """Insert lesions into a real CT: known lesions on real anatomy, for testing the method.

    Each lesion is placed as in :func:`make_phantom` (a sphere centred at fractions of its
    lung's bounding box, clipped to ``lungs``). Inside it, a fraction ``f`` of every voxel's
    content is replaced by soft tissue (+40 HU), ``HU' = (1 - f) HU + f * 40``, with ``f``
    chosen so that lung at -850 HU takes the lesion's density (``Lesion.density_hu``: f = 0.39
    for ground-glass at -500 HU, 0.93 for consolidation at -25 HU). Unlike the phantom's flat
    spheres, the scan's vessels, noise and density gradients show through, as they do through
    ground-glass. This is a partial-filling model, not a model of any particular disease.

    Parameters
    ----------
    volume : Volume
        A CT in HU.
    lungs : ndarray, uint8, shape ``volume.shape``
        Lung labels (1 right, 2 left), e.g. ``segment_lungs(volume).labels``.
    lesions : sequence of Lesion
        Later lesions overwrite earlier ones' labels where they overlap.

    Returns
    -------
    volume : Volume
        A copy of ``volume`` with the lesions in it.
    infection : ndarray, uint8
        Where they are: 0 none, 1 ground-glass, 2 consolidation.
    """
    if not volume.is_hu:
        raise ValueError("lesions can only be inserted into a CT in HU")
    if lungs.shape != volume.shape:
        raise ValueError(f"lung labels of shape {lungs.shape} do not match the volume's {volume.shape}")
    hu = volume.array.astype(np.float32)
    infection = np.zeros(volume.shape, dtype=np.uint8)
    for lesion in lesions:
        sphere = _lesion_sphere(lungs, volume.spacing_mm, lesion)
        fill = (lesion.density_hu - LUNG_HU) / (SOFT_TISSUE_HU - LUNG_HU)
        hu[sphere] = (1 - fill) * hu[sphere] + fill * SOFT_TISSUE_HU
        infection[sphere] = INFECTION_LABEL[lesion.kind]
    array = np.rint(hu).astype(volume.array.dtype)
    return replace(volume, array=array), infection


def write_dicom_series(
    volume: Volume,
    folder: str | os.PathLike[str],
    *,
    series_number: int = 1,
    series_uid: str | None = None,
    rescale_intercept: float = -1024.0,
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "AXIAL"),
) -> list[Path]:
    """Write a HU volume as a DICOM CT Image Storage series, one file per slice.

    Files are named ``IM0001.dcm`` ... in InstanceNumber order, which runs head -> feet as on
    many scanners (the reverse of the array), so readers must sort by position. Stored values
    are unsigned 16-bit with the given RescaleIntercept (slope 1).

    Parameters
    ----------
    volume : Volume
        Must hold HU.
    folder : path-like
        Created if missing.
    series_number, series_uid, rescale_intercept, image_type :
        Header values; the UID defaults to the volume's own series UID.

    Returns
    -------
    list of Path, in InstanceNumber order.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

    if not volume.is_hu:
        raise ValueError("write_dicom_series needs a volume in Hounsfield units")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    meta = volume.meta
    series_uid = series_uid or meta.series_uid or _uid(0, "series", series_number)
    frame_uid = _uid(0, meta.study_uid, "frame")
    affine = volume.geometry.affine
    dz, dy, dx = volume.spacing_mm
    row_dir = affine[:3, 2] / np.linalg.norm(affine[:3, 2])
    col_dir = affine[:3, 1] / np.linalg.norm(affine[:3, 1])
    stored = np.rint(np.asarray(volume.array, dtype=np.float32) - rescale_intercept)
    if stored.min() < 0 or stored.max() > 65535:
        raise ValueError("HU values do not fit unsigned 16-bit storage with this intercept")
    stored = stored.astype(np.uint16)
    bits = max(12, int(stored.max()).bit_length())
    nz = volume.shape[0]
    paths = []
    for instance in range(1, nz + 1):
        k = nz - instance  # instance 1 is the most superior slice
        ipp = (affine @ np.array([k, 0, 0, 1.0]))[:3]
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = _uid(0, series_uid, instance)
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = meta.study_uid or _uid(0, "study")
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.Modality = "CT"
        ds.Manufacturer = meta.manufacturer
        ds.PatientName = f"{meta.patient_id}^covidct"  # family^given: a one-part name is ambiguous
        ds.PatientID = meta.patient_id
        ds.StudyDate = meta.study_date.replace("-", "")
        ds.StudyID = "1"
        ds.AccessionNumber = ""
        ds.SeriesNumber = series_number
        ds.SeriesDescription = meta.series_description
        ds.InstanceNumber = instance
        ds.ImageType = list(image_type)
        ds.ImagePositionPatient = [f"{v:.6f}" for v in ipp]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in np.r_[row_dir, col_dir]]
        ds.PixelSpacing = [f"{dy:.6f}", f"{dx:.6f}"]
        ds.SliceThickness = f"{dz:.6f}"
        ds.SliceLocation = f"{ipp[2]:.6f}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[2]
        ds.BitsAllocated = 16
        ds.BitsStored = bits
        ds.HighBit = bits - 1
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = f"{rescale_intercept:g}"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.PixelData = stored[k].tobytes()
        path = out / f"IM{instance:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
