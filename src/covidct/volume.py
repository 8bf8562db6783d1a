"""The CT volume every stage consumes: voxels in Hounsfield units plus exact geometry.

Conventions (see DESIGN.md): axes are (z, y, x); axis 0 runs inferior -> superior, rows run
anterior -> posterior, columns run patient-right -> patient-left (radiological display).
Geometry is in DICOM patient coordinates (LPS, mm).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: nibabel orientation of covidct's canonical axes in LPS world coordinates:
#: array axis 0 -> world z (+S), axis 1 -> world y (+P), axis 2 -> world x (+L).
CANONICAL_ORNT = np.array([[2, 1], [1, 1], [0, 1]], dtype=float)


@dataclass(frozen=True, eq=False)
class Geometry:
    """Where the voxels are in the patient.

    Attributes
    ----------
    affine : (4, 4) float64
        Maps a voxel index ``(z, y, x, 1)`` to LPS millimetres. For a gantry-tilted series the
        affine is sheared (the slices are kept as acquired); it is exact either way.
    source_ornt : (3, 2) float64
        nibabel orientation (``io_orientation``) of the source's own voxel axes in LPS; writers
        use it to store outputs in the input's own voxel order.
    source_shape : tuple of int
        Array shape in the source's own voxel order.
    """

    affine: np.ndarray
    source_ornt: np.ndarray = field(default_factory=lambda: CANONICAL_ORNT.copy())
    source_shape: tuple[int, ...] = ()

    @property
    def origin_mm(self) -> np.ndarray:
        """LPS position (mm) of the centre of voxel (0, 0, 0)."""
        return self.affine[:3, 3].copy()

    @property
    def direction(self) -> np.ndarray:
        """(3, 3) unit column vectors of the z, y and x voxel axes in LPS."""
        cols = self.affine[:3, :3]
        return cols / np.linalg.norm(cols, axis=0, keepdims=True)

    def slice_z_mm(self, shape: tuple[int, ...]) -> tuple[float, ...]:
        """LPS z (mm) of the centre of each slice of an array of this ``shape`` (z, y, x)."""
        centre = np.array([0.0, (shape[1] - 1) / 2, (shape[2] - 1) / 2, 1.0])
        return tuple(float((self.affine @ (centre + [k, 0, 0, 0]))[2]) for k in range(shape[0]))

    @property
    def tilt_deg(self) -> float:
        """Angle (degrees) between the slice normal and the stacking axis: 0 unless sheared."""
        normal = np.cross(self.direction[:, 1], self.direction[:, 2])
        cos = abs(float(normal @ self.direction[:, 0]))
        return float(np.degrees(np.arccos(min(1.0, cos))))


@dataclass(frozen=True)
class VolumeMeta:
    """Descriptive metadata carried from the input to the report."""

    source_path: str = ""
    source_format: str = ""  # "dicom" | "nifti" | "image"
    patient_id: str = ""
    study_uid: str = ""
    series_uid: str = ""
    study_date: str = ""  # YYYY-MM-DD or ""
    modality: str = ""
    manufacturer: str = ""
    series_description: str = ""
    #: LPS z (mm) of each slice, in array order (inferior -> superior).
    slice_z_mm: tuple[float, ...] = ()
    #: What the loader had to work around (gantry tilt, duplicates dropped, ...).
    warnings: tuple[str, ...] = ()
    #: DICOM only: the file holding each slice, in the source's own slice order (see
    #: :func:`to_source_order`); empty when slices were resampled or came from multi-frame objects,
    #: since then no single stored image matches a slice. DICOM outputs reference these images.
    source_files: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class Volume:
    """A CT volume in canonical orientation.

    Attributes
    ----------
    array : (z, y, x) ndarray
        Voxel values: Hounsfield units when ``is_hu`` (int16 when exact, float32 otherwise),
        raw intensities otherwise (8-bit images).
    spacing_mm : (z, y, x) floats
        Voxel spacing; z is the distance between slice planes along their normal.
    is_hu : bool
        Whether ``array`` holds Hounsfield units.
    geometry : Geometry
    meta : VolumeMeta
    """

    array: np.ndarray
    spacing_mm: tuple[float, float, float]
    is_hu: bool
    geometry: Geometry
    meta: VolumeMeta = field(default_factory=VolumeMeta)

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"Volume array must be 3-D (z, y, x), got shape {self.array.shape}")
        if len(self.spacing_mm) != 3 or min(self.spacing_mm) <= 0:
            raise ValueError(f"spacing_mm must be three positive numbers, got {self.spacing_mm}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.array.shape)  # type: ignore[return-value]

    @property
    def slice_z_mm(self) -> tuple[float | None, ...]:
        """LPS z (mm) of each slice; None for a 2-D picture, which has no place in the patient."""
        if self.meta.source_format == "image" or not self.meta.slice_z_mm:
            return (None,) * self.shape[0]
        return self.meta.slice_z_mm

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres (cm³)."""
        z, y, x = self.spacing_mm
        return z * y * x / 1000.0


def to_canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flip/permute a 3-D array into covidct's canonical axes (S, P, L).

    Parameters
    ----------
    array : 3-D ndarray
        Voxels in the source's own order.
    affine : (4, 4) ndarray
        Maps the source's voxel index to LPS millimetres.

    Returns
    -------
    array : 3-D ndarray
        A view of the input, axes reordered so axis 0 runs inferior -> superior, axis 1
        anterior -> posterior, axis 2 right -> left.
    affine : (4, 4) ndarray
        The affine of the returned array.
    source_ornt : (3, 2) ndarray
        The source's own orientation (``io_orientation`` of ``affine``), to go back.
    """
    from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform

    source_ornt = io_orientation(affine)
    transform = ornt_transform(source_ornt, CANONICAL_ORNT)
    out = apply_orientation(array, transform)
    new_affine = affine @ inv_ornt_aff(transform, array.shape)
    return out, new_affine, source_ornt


def to_source_order(array: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Put a canonical (z, y, x) array back into the voxel order the input came in.

    Parameters
    ----------
    array : 3-D ndarray
        Values on the Volume's canonical grid (HU, labels, maps).
    geometry : Geometry
        The Volume's geometry (``source_ornt`` says how the input was stored).

    Returns
    -------
    array : 3-D ndarray
        A view in the source's order: for DICOM (slice, row, column) as stored, slices in the
        order of ``VolumeMeta.source_files``.
    affine : (4, 4) ndarray
        Maps the returned array's voxel index to LPS millimetres.
    """
    from nibabel.orientations import apply_orientation, inv_ornt_aff, ornt_transform

    back = ornt_transform(CANONICAL_ORNT, geometry.source_ornt)
    return apply_orientation(array, back), geometry.affine @ inv_ornt_aff(back, array.shape)


def spacing_from_affine(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel spacing (z, y, x) in mm of a canonical affine.

    In-plane spacings are the lengths of the y and x columns; the z spacing is the distance
    between slice planes along their normal (voxel volume / pixel area), which differs from the
    table step when the gantry was tilted.
    """
    cols = affine[:3, :3]
    dy, dx = (float(np.linalg.norm(cols[:, i])) for i in (1, 2))
    dz = abs(float(np.linalg.det(cols))) / (dy * dx)
    return (dz, dy, dx)
