"""The whole method on real anatomy with known lesions: the phantom's lesions inserted into a
normal CT, growing.

    python benchmarks/inserted_lesions.py                             # shipped models -> results/inserted_lesions.json
    python benchmarks/inserted_lesions.py --weights M.json --name N   # another classifier -> results/N.json

The study is COVID-CT-MD's normal001 (the shared Normal study; both the shipped classifier
and its predecessor trained on it, so this is no held-out measure of the classifier, but the
lesions are new to every model). Its lungs are segmented once with the shipped lung model; the
phantom's three default lesions (:data:`covidct.phantom.DEFAULT_LESIONS`: ground-glass in each
lung, consolidation in the left) are inserted by :func:`covidct.phantom.insert_lesions` with
their radii scaled by each :data:`SCALES` (0: the study as it is). Each volume goes through
:func:`covidct.analyze`.

Per scale: the case decision and positive slices, the Corona score, the share of the Grad-CAM
map mass that lies on the inserted lesions beside the share of the lungs they fill (their
ratio is the maps' enrichment on the lesions), the inserted and the segmented infection
volume, and the lung volume (the lesions should stay lung).
"""

from __future__ import annotations

from _common import DATA, model_arguments, record

import covidct
from covidct.classify import load_classifier
from covidct.lungs import segment_lungs
from covidct.phantom import insert_lesions, scaled_lesions

STUDY = ("Normal", "normal001")
#: Multiples of the default lesions' radii.
SCALES = (0.0, 1.0, 1.5, 2.0)


def main() -> None:
    args = model_arguments(__doc__, "classifier", "classifier", "inserted_lesions")
    classifier = load_classifier(args.weights)
    volume = covidct.load(DATA / "covid_ct_md" / STUDY[0] / STUDY[1])
    lungs = segment_lungs(volume).labels
    rows = []
    for scale in SCALES:
        with_lesions, truth = insert_lesions(volume, lungs, scaled_lesions(scale))
        a = covidct.analyze(with_lesions, classifier=classifier)
        lesion = truth > 0
        in_lungs = a.lungs.labels > 0
        rows.append({
            "radius_scale": scale,
            "decision": a.decision.label,
            "positive_slices": a.decision.positive_slices,
            "lung_slices": a.decision.lung_slices,
            "corona_score_cm3": a.corona_score_cm3,
            "map_share_on_lesions": round(float(a.maps[lesion].sum() / a.maps.sum()), 4) if a.maps.sum() > 0 else None,
            "lesion_share_of_lungs": round(float((lesion & in_lungs).sum() / in_lungs.sum()), 4),
            "inserted_ml": round(float(lesion.sum() * volume.voxel_volume_ml), 1),
            "segmented_ml": round(a.infection_involvement["infection"].infection_volume_ml, 1),
            "lung_volume_ml": a.lungs.volume_ml["total"],
        })
        print(rows[-1], flush=True)
    record(args.name, {
        "study": STUDY[1],
        "classifier": {"card": args.weights, "sha256": classifier.sha256},
        "rows": rows,
    })


if __name__ == "__main__":
    main()
