"""The pipeline: lungs -> typed infection segmentation (which puts infected lung the lung masks
left out back into them) -> slice probabilities -> localization -> case results, on one CT.

:func:`analyze` chains the stages in the order of the data flow and returns one
:class:`Analysis`; it reads and writes nothing (``covidct.report`` turns an Analysis into files).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from covidct import case, classify, infection, localize, lungs
from covidct.models import weights as model_weights
from covidct.volume import Volume

#: Used, with a warning, when the classifier's card holds no validated case threshold.
DEFAULT_CASE_THRESHOLD = 0.15
#: Said in every report: what the maps are and are not (benchmarks/localization.py measures
#: them against radiologists' infection masks).
LOCALIZATION_CAVEAT = (
    "heat maps, Corona score and the map-based infection volume come from the slice classifier's Grad-CAM: "
    "on validation data the maps point at the infection, but they are coarse (a 28 x 28 grid over the lung box) "
    "and drawn only on slices called abnormal; do not read them as lesion outlines or lesion volume (the "
    "segmented ground-glass and consolidation volumes are the finer measure)"
)
#: Stages timed (report.json ``timing_s``), in the order they run. "infection" includes putting
#: the infected lung the lung masks left out back into them (:func:`covidct.lungs.add_infected_lung`),
#: which is why it runs before the stages that read the masks; "localize" includes the case
#: decision and Corona score.
STAGES = ("lungs", "infection", "classify", "localize")


@dataclass(frozen=True, eq=False)
class Analysis:
    """Everything :func:`analyze` found in one volume.

    Attributes
    ----------
    volume : the input
    lungs : lung masks and volumes
    probabilities : (z, 3) slice probabilities in :data:`covidct.classify.CLASSES` order
    maps : (z, y, x) float32 localization maps in [0, 1] (zero off positive slices)
    decision : the case decision and diagnosis
    corona_score_cm3 : the published Corona score
    involvement : infection volume and percent of each lung and zone (maps >= case.MAP_THRESHOLD)
    infection : (z, y, x) uint8 segmentation: 0 none, 1 ground-glass, 2 consolidation
    infection_involvement : :func:`covidct.case.typed_involvement` of ``infection``
    models : name and sha256 of the weights used, by stage
    timing_s : seconds per stage
    warnings : what the user should know about this result
    """

    volume: Volume
    lungs: lungs.LungMasks
    probabilities: np.ndarray
    maps: np.ndarray
    decision: case.CaseDecision
    corona_score_cm3: float
    involvement: case.Involvement
    infection: np.ndarray
    infection_involvement: dict[str, case.Involvement]
    models: dict[str, dict[str, str]]
    timing_s: dict[str, float]
    warnings: tuple[str, ...]

    @property
    def positive(self) -> np.ndarray:
        """Indices of the positive lung slices."""
        return case.positive_slices(self.probabilities, self.lungs.lung_slices, self.decision.slice_threshold)


def analyze(
    volume: Volume,
    lung_model: model_weights.LoadedModel | None = None,
    classifier: model_weights.LoadedModel | None = None,
    infection_model: model_weights.LoadedModel | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> Analysis:
    """Run the method on a volume.

    Parameters
    ----------
    volume : Volume
        A CT in HU (2-D images work, with a warning: no volumes from one picture).
    lung_model, classifier, infection_model : LoadedModel, optional
        Default to the shipped weights.
    on_stage : callable, optional
        Called with each stage's name from :data:`STAGES` when it finishes (progress bars).

    Returns
    -------
    Analysis
    """
    warnings = [*volume.meta.warnings, LOCALIZATION_CAVEAT]
    if not volume.is_hu:
        warnings.append("input is not in Hounsfield units: probabilities are computed, volumes and scores "
                        "assume the spacing given (1 mm for a 2-D picture)")
    timing: dict[str, float] = {}
    done = on_stage or (lambda stage: None)

    start = time.perf_counter()
    lung_model = lung_model or lungs.load_lung_model()
    masks = lungs.segment_lungs(volume, lung_model)
    timing["lungs"] = time.perf_counter() - start
    done("lungs")
    if not len(masks.lung_slices):
        warnings.append("no lung found: every slice is reported normal")

    start = time.perf_counter()
    infection_model = infection_model or infection.load_infection_model()
    lesions = infection.segment_infection(volume, masks, infection_model, inside_lungs=False)
    grown = lungs.add_infected_lung(masks, lesions, volume)
    if grown is not masks:
        added_ml = grown.volume_ml["total"] - masks.volume_ml["total"]
        warnings.append(f"the lung masks include {added_ml:.0f} mL of infected, partly aerated lung that the lung "
                        "model left out and the infection model found (covidct.lungs.add_infected_lung)")
    masks = grown
    if volume.is_hu:
        lesions[masks.labels == 0] = 0
    typed = case.typed_involvement(lesions, masks.labels, volume.spacing_mm)
    timing["infection"] = time.perf_counter() - start
    done("infection")

    start = time.perf_counter()
    classifier = classifier or classify.load_classifier()
    probabilities = classify.classify_slices(volume, masks, classifier)
    timing["classify"] = time.perf_counter() - start
    done("classify")

    slice_threshold = classify.slice_threshold(classifier.card, volume.is_hu)
    case_threshold = (classifier.card.get("case_threshold") or {}).get("threshold")
    if case_threshold is None:
        case_threshold = DEFAULT_CASE_THRESHOLD
        warnings.append(f"classifier card has no validated case threshold; using {DEFAULT_CASE_THRESHOLD}")

    start = time.perf_counter()
    maps = localize.localize(volume, masks, probabilities, classifier, slice_threshold)
    decision = case.decide(probabilities, masks.lung_slices, slice_threshold, float(case_threshold))
    score = case.corona_score_cm3(maps, volume.spacing_mm)
    involved = case.involvement(maps >= case.MAP_THRESHOLD, masks.labels, volume.spacing_mm)
    timing["localize"] = time.perf_counter() - start
    done("localize")

    return Analysis(
        volume=volume,
        lungs=masks,
        probabilities=probabilities,
        maps=maps,
        decision=decision,
        corona_score_cm3=round(score, 2),
        involvement=involved,
        infection=lesions,
        infection_involvement=typed,
        models={
            "lungs": dict(masks.model),
            "classifier": {"name": classifier.name, "sha256": classifier.sha256},
            "infection": {"name": infection_model.name, "sha256": infection_model.sha256},
        },
        timing_s={k: round(v, 3) for k, v in timing.items()},
        warnings=tuple(warnings),
    )
