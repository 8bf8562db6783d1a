"""How well the Grad-CAM maps point at infection, against radiologists' masks.

    python benchmarks/localization.py

Data: the validation cases of zenodo20_slices (3 cases, 76 slices, every slice infected, with
infection and lung masks; the classifier never trained on them). Each slice goes through the
shipped classifier's input path (lung-box crop of the case's lungs, lung mask) and
:func:`covidct.localize.gradcam`; the map is put back into the slice and restricted to the lungs.
Per slice:

* enrichment: mean map value inside the infection / mean map value in the rest of the lungs
  (1 = no better than uniform);
* pointing game: the map's maximum falls inside the infection; chance level is the share of
  the lungs that is infected, reported beside it;
* Dice of the map >= 0.5 against the infection (the infection volume analyze reports).

Writes results/localization.json.
"""

from __future__ import annotations

import numpy as np
import torch
from _common import DATA, record

from covidct import classify, localize
from covidct.train.data import load_zenodo20


def main() -> None:
    torch.set_num_threads(2)
    model = classify.load_classifier()
    masked = bool(model.card["input"].get("lung_masked", False))
    rows = {}
    pooled: dict[str, list[float]] = {"enrichment": [], "pointing": [], "chance": [], "dice": []}
    for case in load_zenodo20(DATA, ("val",)):
        box = classify.lung_box(case.lungs)
        x = classify.model_input(case.images, is_hu=False, box=box)
        if masked:
            x = x * classify.lung_input_mask(case.lungs, box)
        maps = localize.uncrop(localize.gradcam(model.model, x), box, case.images.shape[1:]) * (case.lungs > 0)
        per: dict[str, list[float]] = {k: [] for k in pooled}
        for m, lung, inf in zip(maps, case.lungs > 0, case.infection > 0):
            inf = inf & lung
            rest = lung & ~inf
            if not inf.any() or not rest.any() or m.max() <= 0:
                continue
            per["enrichment"].append(float(m[inf].mean() / max(m[rest].mean(), 1e-9)))
            per["pointing"].append(float(inf.flat[int(np.argmax(m))]))
            per["chance"].append(float(inf.sum() / lung.sum()))
            hot = m >= 0.5
            per["dice"].append(float(2 * (hot & inf).sum() / max(hot.sum() + inf.sum(), 1)))
        rows[case.case_id] = {"slices": len(per["dice"]), **{k: round(float(np.mean(v)), 3) for k, v in per.items()}}
        for k, v in per.items():
            pooled[k].extend(v)
    record("localization", {
        "data": "zenodo20_slices val split (infected slices with infection masks)",
        "model": {"name": model.name, "sha256": model.sha256},
        "per_case": rows,
        "pooled": {"slices": len(pooled["dice"]), **{k: round(float(np.mean(v)), 3) for k, v in pooled.items()},
                   "enrichment_median": round(float(np.median(pooled["enrichment"])), 3)},
    })


if __name__ == "__main__":
    main()
