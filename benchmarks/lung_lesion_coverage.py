"""How much of the infection the lung masks cover: lesions must stay lung.

    python benchmarks/lung_lesion_coverage.py                            # shipped lung model -> results/lung_lesion_coverage.json
    python benchmarks/lung_lesion_coverage.py --weights M.json --name N  # another one -> results/N.json

The Corona score and the infection segmentation count only what lies inside the lung masks,
so infection the lung model leaves out is lost to both. Measured, as the share of the
radiologists' (or the inserted) infection pixels inside the lung mask:

* zenodo20_slices validation cases (76 slices; the lung model's own held-out split);
* medseg_infnet (50 8-bit pictures, a source the lung model never saw), ground-glass and
  consolidation apart, pooled over pixels and per picture;
* the phantom's default lesions inserted into normal001 (:func:`covidct.phantom.insert_lesions`)
  at 1, 1.5 and 2 times their radius, the volume segmented again with them in: ground-glass and
  consolidation apart, and for the consolidation also what the network's raw mask holds before
  the post-processing (body, fat rules, hole filling);
* on the three shared COVID-CT-MD studies, what :func:`covidct.lungs.add_infected_lung` puts
  back into the lung masks, as ``covidct analyze`` runs it: the infected, partly aerated regions
  outside the masks that touch them, and the aerated lung around them (mL, share aerated, each
  added region's slices and side), and the segmented infection inside the masks before and after.
"""

from __future__ import annotations

import numpy as np
from _common import DATA, SHARED_STUDIES, model_arguments, record
from scipy import ndimage as ndi

import covidct
from covidct import lungs
from covidct.phantom import INFECTION_LABEL, insert_lesions, scaled_lesions
from covidct.train.data import load_medseg, load_zenodo20

SCALES = (1.0, 1.5, 2.0)


def _share(part: np.ndarray, whole: np.ndarray) -> float | None:
    return round(float(part.sum() / whole.sum()), 4) if whole.any() else None


def infected_lung_put_back(model) -> dict[str, dict]:
    """Per shared study: what :func:`covidct.lungs.add_infected_lung` adds to the lung masks."""
    rows = {}
    for folder, study in SHARED_STUDIES:
        volume = covidct.load(DATA / "covid_ct_md" / folder / study)
        masks = lungs.segment_lungs(volume, model=model)
        lesions = covidct.segment_infection(volume, masks, inside_lungs=False)
        grown = lungs.add_infected_lung(masks, lesions, volume)
        added = (grown.labels > 0) & (masks.labels == 0)
        ml = volume.voxel_volume_ml
        regions, n = ndi.label(added)
        listed = []
        for k in range(1, n + 1):
            region = regions == k
            if region.sum() * ml >= 1.0:
                z = np.flatnonzero(region.any(axis=(1, 2)))
                side = "right" if np.median(grown.labels[region]) == lungs.RIGHT else "left"
                listed.append({"ml": round(float(region.sum() * ml), 1), "slices": [int(z[0]), int(z[-1])], "side": side})
        rows[study] = {
            "lungs_ml": [round(masks.volume_ml["total"], 1), round(grown.volume_ml["total"], 1)],
            "added_ml": round(float(added.sum() * ml), 1),
            "added_aerated_share": _share(added & (volume.array < lungs.AERATED_HU), added),
            "removed_voxels": int(((masks.labels > 0) & (grown.labels == 0)).sum()),
            "added_regions_over_1_ml": listed,
            "infection_inside_ml": [round(float(((lesions > 0) & (m.labels > 0)).sum() * ml), 1) for m in (masks, grown)],
        }
        print(study, rows[study], flush=True)
    return rows


def main() -> None:
    args = model_arguments(__doc__, "lung", "lungs", "lung_lesion_coverage")
    model = lungs.load_lung_model(args.weights)

    inside, total = 0, 0
    for case in load_zenodo20(DATA, ("val",)):
        mask = lungs.picture_lung_labels(model.model, case.images) > 0
        infected = case.infection > 0
        inside, total = inside + int((infected & mask).sum()), total + int(infected.sum())
    zenodo = round(inside / total, 4)

    pooled = {kind: [0, 0] for kind in INFECTION_LABEL}
    per_picture: dict[str, list[float]] = {kind: [] for kind in INFECTION_LABEL}
    for s in load_medseg(DATA):
        mask = lungs.picture_lung_labels(model.model, s.image[None])[0] > 0
        for kind, label in INFECTION_LABEL.items():
            lesion = s.mask == label
            pooled[kind][0] += int((lesion & mask).sum())
            pooled[kind][1] += int(lesion.sum())
            if lesion.any():
                per_picture[kind].append(float((lesion & mask).sum() / lesion.sum()))
    medseg = {kind: {"pooled": round(pooled[kind][0] / pooled[kind][1], 4),
                     "per_picture_median": round(float(np.median(per_picture[kind])), 4),
                     "pictures": len(per_picture[kind])} for kind in INFECTION_LABEL}

    volume = covidct.load(DATA / "covid_ct_md" / "Normal" / "normal001")
    labels = lungs.segment_lungs(volume, model=model).labels
    inserted = []
    for scale in SCALES:
        with_lesions, truth = insert_lesions(volume, labels, scaled_lesions(scale))
        again = lungs.segment_lungs(with_lesions, model=model).labels > 0
        raw = lungs.predict_mask(model.model, with_lesions.array, True, progress=False)
        row: dict[str, float | None] = {"radius_scale": scale}
        for kind, label in INFECTION_LABEL.items():
            row[kind] = _share(again & (truth == label), truth == label)
        row["consolidation_in_raw_mask"] = _share(raw & (truth == INFECTION_LABEL["consolidation"]), truth == INFECTION_LABEL["consolidation"])
        inserted.append(row)
        print(row, flush=True)

    record(args.name, {
        "lung_model": {"card": args.weights, "sha256": model.sha256},
        "zenodo20_val_infection_inside": zenodo,
        "medseg_inside": medseg,
        "normal001_inserted_inside": inserted,
        "infected_lung_put_back": infected_lung_put_back(model),
    })


if __name__ == "__main__":
    main()
