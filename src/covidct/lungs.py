"""Lung segmentation: a 2-D U-Net on axial slices, then 3-D clean-up and a right/left split.

Model input domain
------------------
The lung masks covidct trains on (zenodo20_slices) are 8-bit slices that their distributor made
by per-slice min-max scaling followed by CLAHE, at 256 x 256. Every input is mapped into that
same domain by :func:`model_input`, so one model serves HU volumes and 8-bit images alike:

* HU: clip to [-1024, 1024] HU (air to dense bone; metal would otherwise squash the range),
* resize to 256 x 256 (area averaging when shrinking),
* per-slice min-max to [0, 1],
* CLAHE (8 x 8 tiles, clip limit 7/256 as OpenCV's clipLimit 7, 256 bins).

Training images pass through the same function, so what the model saw in training is exactly
what it sees at inference for 8-bit input; for HU input the only difference is that the slice
was not CLAHE-processed once before.

Post-processing: for HU input, drop anything outside the patient's body (air between the back
and the table looks like lung to a 2-D model) and add aerated regions inside the body that
touch predicted lung (:func:`add_aerated_lung`: lung unlike the training data, such as
emphysema or fibrosis), and remove regions that are airless fat (:func:`drop_fat_regions`: the
model calls neck and abdominal fat lung on slices beyond the lungs). Then (:func:`clean_lungs`) keep the largest connected
component and the second largest when it is at least a tenth of the first (two separate lungs);
fill enclosed holes up to 10 cm² slice by slice (vessels, consolidation); split into right (1)
and left (2) lung in patient coordinates.

:func:`add_infected_lung` runs later, in ``covidct analyze``: it puts back infected, partly
aerated lung that the lung model left out and the infection model found.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch
from scipy import ndimage as ndi
from torch.nn import functional as F
from tqdm import tqdm

from covidct.models import weights as model_weights
from covidct.parallel import thread_map
from covidct.volume import Volume
from covidct.windowing import minmax_clahe

MODEL_SIZE = 256
HU_RANGE = (-1024.0, 1024.0)
CLAHE_CLIP = 7.0 / 256.0
CLAHE_TILES = 8
DOMAIN = "minmax-clahe-256"
#: A second component at least this fraction of the largest is the other lung.
SECOND_LUNG_FRACTION = 0.1
RIGHT, LEFT = 1, 2
#: Post-processing works on a grid about this many pixels across (4x coarser for 512 slices).
LOWRES = 128
#: Enclosed holes up to this area are filled (vessels, consolidation); larger ones are anatomy.
MAX_HOLE_MM2 = 1000.0
#: HU below which tissue inside the chest counts as aerated (lung parenchyma is about -850).
AERATED_HU = -400.0
#: An aerated region joins the lungs when the model already covers this fraction of it.
MIN_COVERED_FRACTION = 0.25
#: An infected region the lung model left out joins the lungs when it touches them and at least
#: this fraction of it is aerated (:func:`add_infected_lung`); pleural fluid and soft tissue are not.
MIN_LESION_AERATED_FRACTION = 0.25
#: Adipose tissue in HU (the range body-composition studies use): a predicted region whose median
#: lies here and which is nearly airless is not lung.
FAT_HU = (-190.0, -30.0)
#: "Nearly airless": less than this fraction of the region below :data:`AERATED_HU`.
MAX_FAT_AERATED_FRACTION = 0.25
#: Airless tissue at least this thick (mm, in-plane) is judged on its own even where it touches
#: aerated lung; thinner rims (partial volume at the pleura and around vessels) stay with the lung.
MIN_FAT_THICKNESS_MM = 6.0
#: ... and goes only when more than this fraction of its outline is the mask's edge: it bulges out
#: of the lung. A lesion lies in the lung, its outline mostly against aerated lung.
MIN_FAT_EXPOSED_FRACTION = 0.5
#: An outline pixel this close to a pixel outside the mask (mm) counts as the mask's edge (the
#: opening leaves the ragged last pixel or two of a region behind).
EDGE_TOLERANCE_MM = 1.5


@dataclass(frozen=True, eq=False)
class LungMasks:
    """Result of :func:`segment_lungs`.

    Attributes
    ----------
    labels : (z, y, x) uint8
        0 background, 1 right lung, 2 left lung (patient sides).
    volume_ml : dict
        ``right``, ``left`` and ``total`` lung volume in mL.
    model : dict
        ``name`` and ``sha256`` of the weights used.
    """

    labels: np.ndarray
    volume_ml: dict[str, float]
    model: dict[str, str] = field(default_factory=dict)

    @cached_property
    def footprint(self) -> np.ndarray:
        """(y, x) bool: where any slice has lung (crop boxes are drawn around it)."""
        return self.labels.any(axis=0)

    @cached_property
    def lung_slices(self) -> np.ndarray:
        """Indices of the slices that contain lung."""
        return np.flatnonzero(self.labels.reshape(self.labels.shape[0], -1).any(axis=1))


def resize_slices(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize (N, C, H, W) to ``size``: area averaging when shrinking, bilinear otherwise."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def model_input(slices: np.ndarray, is_hu: bool) -> torch.Tensor:
    """Map slices into the lung model's input domain (see module docstring).

    Parameters
    ----------
    slices : (n, y, x) ndarray
        HU when ``is_hu``, raw 8-bit (or other) intensities otherwise.
    is_hu : bool

    Returns
    -------
    (n, 1, 256, 256) float32 tensor in [0, 1].
    """
    x = torch.from_numpy(np.ascontiguousarray(slices, dtype=np.float32))[:, None]
    if is_hu:
        x = x.clamp(*HU_RANGE)
    x = resize_slices(x, (MODEL_SIZE, MODEL_SIZE))
    out = minmax_clahe(x[:, 0].numpy(), tiles=CLAHE_TILES, clip_limit=CLAHE_CLIP)
    return torch.from_numpy(out)[:, None]


def predict_mask(
    model: torch.nn.Module, slices: np.ndarray, is_hu: bool, batch_size: int = 16, progress: bool = True
) -> np.ndarray:
    """The model's raw lung mask: lung probability resized (bilinear) to the slices' own size,
    above 0.5.

    Parameters
    ----------
    model : network returning one logit channel
    slices : (n, y, x) ndarray
    is_hu : bool
    batch_size : int
        Slices per forward pass; memory stays bounded by one batch.

    Returns
    -------
    (n, y, x) bool.
    """
    n, height, width = slices.shape
    out = np.empty((n, height, width), dtype=bool)
    starts = range(0, n, batch_size)
    for start in tqdm(starts, desc="lungs", unit="batch", disable=None if progress else True, leave=False):
        batch = model_input(slices[start : start + batch_size], is_hu)
        with model_weights.inference():
            prob = torch.sigmoid(model(model_weights.channels_last(batch)).float())
        out[start : start + batch_size] = (resize_slices(prob, (height, width))[:, 0] > 0.5).numpy()
    return out


def block_any(mask: np.ndarray, factor: int) -> np.ndarray:
    """In-plane subsampling of a (z, y, x) bool array: a block is True if any voxel is."""
    if factor == 1:
        return mask
    z, y, x = mask.shape
    padded = np.zeros((z, -(-y // factor) * factor, -(-x // factor) * factor), dtype=bool)
    padded[:, :y, :x] = mask
    return padded.reshape(z, padded.shape[1] // factor, factor, padded.shape[2] // factor, factor).any(axis=(2, 4))


def upsample(low: np.ndarray, factor: int, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`block_any` for any array: repeat each block, crop to ``shape``."""
    if factor == 1:
        return low
    return np.repeat(np.repeat(low, factor, axis=1), factor, axis=2)[:, : shape[1], : shape[2]]


def body_mask(hu: np.ndarray) -> np.ndarray:
    """The patient's body on each slice of a HU volume: everything that air below -500 HU
    connected to the image border does not reach. The lungs are enclosed by the chest wall and
    stay inside; the air around the patient, under the back and above the table, is outside.

    Computed on a grid of at most about 128 pixels across and returned at full size.
    """
    factor = max(1, min(hu.shape[1:]) // LOWRES)
    air = hu[:, ::factor, ::factor] < -500
    outside = np.zeros(air.shape, dtype=bool)

    def one(k: int) -> None:
        lab, _ = ndi.label(air[k])
        border = np.unique(np.r_[lab[0], lab[-1], lab[:, 0], lab[:, -1]])
        outside[k] = np.isin(lab, border[border > 0])

    thread_map(one, range(air.shape[0]))
    return upsample(~outside, factor, hu.shape)


def side_map(mask: np.ndarray) -> np.ndarray:
    """Right (1) / left (2) side for every voxel of the grid, from a lung mask.

    Columns run patient-right -> patient-left, so the right lung is the component with the
    smaller mean column. Two separate components seed the sides directly. A single merged
    component is eroded in-plane until it splits into two cores. Every voxel then takes the side
    of the nearest seed. If the mask never splits, the image's middle column divides it.

    Parameters
    ----------
    mask : (z, y, x) bool

    Returns
    -------
    (z, y, x) uint8, 1 or 2 everywhere (0 everywhere if the mask is empty).
    """
    if not mask.any():
        return np.zeros(mask.shape, dtype=np.uint8)
    cores = _two_largest(mask)
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = ndi.generate_binary_structure(2, 1)
    eroded = mask
    for _ in range(20):
        if cores is not None:
            break
        eroded = ndi.binary_erosion(eroded, structure)
        if not eroded.any():
            break
        cores = _two_largest(eroded, min_fraction=0.05)
    if cores is None:
        cols = np.arange(mask.shape[2])[None, None, :]
        return np.broadcast_to(np.where(cols < mask.shape[2] / 2, RIGHT, LEFT), mask.shape).astype(np.uint8)
    a, b = cores
    if np.argwhere(a)[:, 2].mean() > np.argwhere(b)[:, 2].mean():
        a, b = b, a
    seeds = np.zeros(mask.shape, dtype=np.uint8)
    seeds[a], seeds[b] = RIGHT, LEFT
    nearest = ndi.distance_transform_edt(seeds == 0, return_distances=False, return_indices=True)
    return seeds[tuple(nearest)]


def _two_largest(mask: np.ndarray, min_fraction: float = SECOND_LUNG_FRACTION) -> tuple[np.ndarray, np.ndarray] | None:
    """The two largest components if the second is at least ``min_fraction`` of the first."""
    lab, n = ndi.label(mask)
    if n < 2:
        return None
    sizes = np.bincount(lab.ravel())[1:]
    first, second = np.argsort(sizes)[::-1][:2] + 1
    if sizes[second - 1] < min_fraction * sizes[first - 1]:
        return None
    return lab == first, lab == second


def _mask_box(mask: np.ndarray, pad: int = 0) -> tuple[slice, ...] | None:
    """The bounding box of a mask as one slice per axis, ``pad`` voxels wider on every side
    (within the array); None when it is empty."""
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if not len(hits):
            return None
        box.append(slice(max(hits[0] - pad, 0), min(hits[-1] + 1 + pad, mask.shape[axis])))
    return tuple(box)


def fill_small_holes(mask: np.ndarray, max_area_px: float) -> np.ndarray:
    """Fill, slice by slice, enclosed holes up to ``max_area_px`` pixels (vessels, lesions),
    but not large enclosed structures such as a diaphragm dome cut across."""
    out = mask.copy()

    def one(k: int) -> None:
        # Holes lie inside the mask's bounding box: work on it (same result, a few times faster).
        box = _mask_box(mask[k])
        if box is None:
            return
        part = mask[k][box]
        holes = ndi.binary_fill_holes(part) & ~part
        lab, n = ndi.label(holes)
        if n:
            small = np.flatnonzero(np.bincount(lab.ravel())[1:] <= max_area_px) + 1
            out[k][box] |= np.isin(lab, small)

    thread_map(one, range(mask.shape[0]))  # SciPy releases the GIL: slices in parallel
    return out


def add_aerated_lung(mask: np.ndarray, hu: np.ndarray, body: np.ndarray) -> np.ndarray:
    """Add, slice by slice, the aerated regions (below :data:`AERATED_HU`) inside the body of
    which the model's lung mask already covers at least :data:`MIN_COVERED_FRACTION`.

    A 2-D model trained on COVID-19 slices can miss lung that looks unlike its training data
    (emphysema, bullae, fibrosis): the rest of an aerated region that is mostly predicted lung
    is lung too. The trachea and bowel gas are separate air regions on a slice, at most grazed
    by the mask, and are not added.
    """
    out = mask.copy()

    def one(k: int) -> None:
        if not mask[k].any():
            return
        lab, n = ndi.label((hu[k] < AERATED_HU) & body[k])
        if n:
            area = np.bincount(lab.ravel(), minlength=n + 1)
            covered = np.bincount(lab[mask[k]], minlength=n + 1)
            lung = np.flatnonzero(covered >= MIN_COVERED_FRACTION * area)
            out[k] |= np.isin(lab, lung[lung > 0])

    thread_map(one, range(mask.shape[0]))
    return out


def disk(radius_px: int) -> np.ndarray:
    """A filled disk structuring element of the given radius in pixels."""
    y, x = np.ogrid[-radius_px : radius_px + 1, -radius_px : radius_px + 1]
    return y * y + x * x <= radius_px * radius_px


def drop_fat_regions(mask: np.ndarray, hu: np.ndarray, spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """Remove, slice by slice, the predicted tissue that is fat rather than lung.

    Two kinds go, both judged by their median HU lying in :data:`FAT_HU`:

    * a whole 2-D connected region of ``mask`` of which less than
      :data:`MAX_FAT_AERATED_FRACTION` is aerated (below :data:`AERATED_HU`);
    * in the regions that stay, an airless part at least :data:`MIN_FAT_THICKNESS_MM` thick
      (what survives a morphological opening with a disk of that diameter) of whose outline more
      than :data:`MIN_FAT_EXPOSED_FRACTION` lies on the mask's edge (within :data:`EDGE_TOLERANCE_MM`):
      fat the model joined to the lung.

    The 2-D model was trained on the middle of the lungs only and, on studies reaching into the
    neck or abdomen, calls supraclavicular and abdominal fat lung (normal001: 52 such regions,
    15 % of its slices), and at the apex joins mediastinal fat to the lung (normal001's top two
    slices: 3.5 mL, which the infection model then called consolidation). Lung is never fat:
    consolidation and effusion lie above -30 HU and ground glass keeps air. Partial-volumed
    consolidation can have a fat-like median; it lies inside the lung, mostly against aerated lung,
    and stays (cap001's dense lesions: at most 26 % of their outline on the mask's edge). The thickness
    limit keeps the thin rims of partial volume at the pleura and around vessels.
    """
    out = mask.copy()
    low, high = FAT_HU
    pixel_mm = min(spacing_mm[1:])
    element = disk(max(1, round(MIN_FAT_THICKNESS_MM / 2 / pixel_mm)))
    edge_px = max(1, round(EDGE_TOLERANCE_MM / pixel_mm))

    def fat_regions(plane: np.ndarray, lab: np.ndarray, regions: np.ndarray) -> np.ndarray:
        median = np.asarray(ndi.median(plane, lab, regions))
        return regions[(median >= low) & (median <= high)]

    def one(k: int) -> None:
        box = _mask_box(mask[k])
        if box is None:
            return
        plane, region = hu[k][box], out[k][box]  # views: edits land in ``out``
        lab, n = ndi.label(region)
        aerated = np.bincount(lab[plane < AERATED_HU], minlength=n + 1)[1:] / np.bincount(lab.ravel())[1:]
        airless = np.flatnonzero(aerated < MAX_FAT_AERATED_FRACTION) + 1  # few: the median only for them
        if len(airless):
            region[np.isin(lab, fat_regions(plane, lab, airless))] = False
        lab, n = ndi.label(ndi.binary_opening(region & (plane >= AERATED_HU), element))
        if not n:
            return
        outline = lab * (lab != ndi.grey_erosion(lab, size=3, mode="constant"))
        beyond = ndi.binary_dilation(~region, iterations=edge_px, border_value=1)  # near the mask's edge
        fat = fat_regions(plane, lab, np.arange(1, n + 1))
        total = np.bincount(outline.ravel(), minlength=n + 1)
        exposed = np.bincount(outline[beyond], minlength=n + 1)
        fat = fat[exposed[fat] > MIN_FAT_EXPOSED_FRACTION * total[fat]]
        if len(fat):
            region[np.isin(lab, fat)] = False

    thread_map(one, range(mask.shape[0]))
    return out


def clean_lungs(
    mask: np.ndarray, spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.0), body: np.ndarray | None = None
) -> np.ndarray:
    """Keep the lungs, fill small holes, label right 1 / left 2 in patient coordinates.

    Steps: restrict to ``body`` when given; keep the largest connected component and the second
    largest when it is at least a tenth of the first (both judged on a grid of about 128 pixels
    across, which is fast and ignores specks); fill holes up to :data:`MAX_HOLE_MM2` per slice;
    split right and left with :func:`side_map` on the same coarse grid.

    Parameters
    ----------
    mask : (z, y, x) bool
        Thresholded model output.
    spacing_mm : (z, y, x)
        Voxel spacing, for the hole-size limit.
    body : (z, y, x) bool, optional
        Where the patient is (:func:`body_mask`); lung outside it is dropped.

    Returns
    -------
    (z, y, x) uint8 labels.
    """
    if body is not None:
        mask = mask & body
    factor = max(1, min(mask.shape[1:]) // LOWRES)
    low = block_any(mask, factor)
    lab, n = ndi.label(low)
    if n == 0:
        return np.zeros(mask.shape, dtype=np.uint8)
    sizes = np.bincount(lab.ravel())[1:]
    order = np.argsort(sizes)[::-1] + 1
    keep = [order[0]]
    if n > 1 and sizes[order[1] - 1] >= SECOND_LUNG_FRACTION * sizes[order[0] - 1]:
        keep.append(order[1])
    kept_low = np.isin(lab, keep)
    kept = mask & upsample(kept_low, factor, mask.shape)
    kept = fill_small_holes(kept, MAX_HOLE_MM2 / (spacing_mm[1] * spacing_mm[2]))
    return kept * upsample(side_map(kept_low), factor, mask.shape)


def lung_volumes_ml(labels: np.ndarray, spacing_mm: tuple[float, float, float]) -> dict[str, float]:
    """Right, left and total lung volume in mL from a label array."""
    voxel_ml = float(np.prod(spacing_mm)) / 1000.0
    right = float((labels == RIGHT).sum()) * voxel_ml
    left = float((labels == LEFT).sum()) * voxel_ml
    return {"right": right, "left": left, "total": right + left}


def picture_lung_labels(model: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    """Lung labels (n, y, x) uint8 (1 right, 2 left) of 2-D pictures without HU, as
    :func:`segment_lungs` makes them for a 2-D image: the model's mask (no progress bar),
    cleaned at unit spacing."""
    return clean_lungs(predict_mask(model, images.astype(np.float32), is_hu=False, progress=False))


def segment_lungs(volume: Volume, model: model_weights.LoadedModel | None = None, batch_size: int = 16) -> LungMasks:
    """Segment the right and left lung of a CT volume.

    Parameters
    ----------
    volume : Volume
        HU or 8-bit slices, canonical orientation.
    model : LoadedModel, optional
        Defaults to the shipped ``lungs`` weights.
    batch_size : int

    Returns
    -------
    LungMasks
    """
    model = model or load_lung_model()
    mask = predict_mask(model.model, volume.array, volume.is_hu, batch_size=batch_size)
    body = None
    if volume.is_hu:
        body = body_mask(volume.array)
        mask = drop_fat_regions(add_aerated_lung(mask & body, volume.array, body), volume.array, volume.spacing_mm)
    labels = clean_lungs(mask, volume.spacing_mm, body)
    return LungMasks(
        labels=labels,
        volume_ml=lung_volumes_ml(labels, volume.spacing_mm),
        model={"name": model.name, "sha256": model.sha256},
    )


def add_infected_lung(masks: LungMasks, lesions: np.ndarray, volume: Volume) -> LungMasks:
    """The lungs with the infected lung the lung model left out put back.

    A 2-D lung model trained on 13 COVID-19 studies leaves out parts of a lung that look unlike
    its training slices: on cap001 (the shared CAP study) 111 mL of nodular, partly aerated
    pneumonia at the left base, in a region of the right lung and at the right apex
    (benchmarks/README.md, "Lesions must stay lung"). The infection model, which sees the whole crop around the lungs, calls
    them infection. Each connected region of ``lesions`` outside the lungs that touches them and
    of which at least :data:`MIN_LESION_AERATED_FRACTION` is aerated (below :data:`AERATED_HU`)
    joins them; then the aerated regions that the grown mask mostly covers
    (:func:`add_aerated_lung`), and :func:`clean_lungs` labels right and left again. Airless
    regions (pleural effusion, soft tissue at the hila, and dense consolidation alike) are not
    added: HU cannot tell them apart.

    Parameters
    ----------
    masks : LungMasks
        From :func:`segment_lungs` on ``volume``.
    lesions : (z, y, x) uint8
        Infection labels not restricted to the lungs
        (``covidct.segment_infection(volume, masks, inside_lungs=False)``).
    volume : Volume
        The CT; a volume not in HU (a 2-D picture) is returned as it is.

    Returns
    -------
    LungMasks, the same object when nothing is added.
    """
    if not volume.is_hu:
        return masks
    lung = masks.labels > 0
    outside = (lesions > 0) & ~lung
    box = _mask_box(outside, pad=1)
    if box is None:
        return masks
    regions, n = ndi.label(outside[box])  # the lesions' box (one voxel wider) is all that can change
    touching = np.unique(regions[ndi.binary_dilation(lung[box]) & outside[box]])
    in_region = regions > 0
    ids = regions[in_region]
    size = np.bincount(ids, minlength=n + 1)
    aerated = np.bincount(ids[volume.array[box][in_region] < AERATED_HU], minlength=n + 1)
    join = np.zeros(n + 1, dtype=bool)
    join[touching] = True
    join &= aerated >= MIN_LESION_AERATED_FRACTION * size
    join[0] = False
    if not join.any():
        return masks
    joined = join[regions]
    grown = lung.copy()
    grown[box] |= joined
    hu = volume.array
    body = body_mask(hu)
    changed = box[0].start + np.flatnonzero(joined.any(axis=(1, 2)))  # slices that gained lung
    grown[changed] = add_aerated_lung(grown[changed], hu[changed], body[changed])
    labels = clean_lungs(grown, volume.spacing_mm, body)
    return LungMasks(labels=labels, volume_ml=lung_volumes_ml(labels, volume.spacing_mm), model=dict(masks.model))


def load_lung_model(name_or_path: str = "lungs") -> model_weights.LoadedModel:
    """The lung U-Net (shipped by default), checked against this module's input domain."""
    return model_weights.load(name_or_path, expect_input={"domain": DOMAIN, "size": MODEL_SIZE})
