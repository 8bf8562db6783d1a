"""DICOM outputs that go back into the PACS beside the CT they were computed from (highdicom):

* ``seg.dcm``: one DICOM Segmentation (binary) holding the right and left lung, ground-glass,
  consolidation and the thresholded Grad-CAM localization, frame for frame on the source images;
* ``sr.dcm``: a Comprehensive 3D SR measurement report (TID 1500) with the case decision and
  diagnosis, Corona score, lung and infection volumes and the involvement of each lung, each
  group naming the model (and its sha256) that produced it;
* ``sc_NNN.dcm``: the report's key slices (heat map and lesions over the lung window) as a
  Secondary Capture series, with "research use, not for diagnosis" burned into the pixels.

All three share the source's StudyInstanceUID (and the SEG its FrameOfReferenceUID), each in a
new series. Pixel data are written uncompressed (explicit VR little endian), which every PACS
accepts.
"""

from __future__ import annotations

import os
from copy import deepcopy
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

import covidct
from covidct.case import MAP_THRESHOLD
from covidct.lungs import LEFT, RIGHT
from covidct.volume import Geometry, to_source_order

if TYPE_CHECKING:
    from covidct.pipeline import Analysis

MANUFACTURER = "covidct"
#: covidct's own concepts, where DICOM and SNOMED CT have none (a private coding scheme, PS3.16 8.2).
SCHEME = "99COVIDCT"
CORONA_SCORE = Code("CORONA-SCORE", SCHEME, "Corona score")
LUNG_INVOLVEMENT = Code("LUNG-INVOLVED", SCHEME, "Percent of lung involved")
CASE_DECISION = Code("CASE-DECISION", SCHEME, "Case decision")
MOST_LIKELY_DIAGNOSIS = Code("DIAGNOSIS", SCHEME, "Most likely diagnosis")
GRADCAM_LOCALIZATION = Code("GRADCAM-MAP", SCHEME, "Grad-CAM infection localization")
INFECTION = Code("INFECTION", SCHEME, "Infection (ground-glass or consolidation)")

RIGHT_LUNG = Code("3341006", "SCT", "Right lung")
LEFT_LUNG = Code("44029006", "SCT", "Left lung")
LUNG = Code("39607008", "SCT", "Lung")
ANATOMICAL_STRUCTURE = Code("91723000", "SCT", "Anatomical Structure")
MORPHOLOGICALLY_ABNORMAL = Code("49755003", "SCT", "Morphologically Abnormal Structure")
GROUND_GLASS = Code("112120", "DCM", "Ground glass opacity")
CONSOLIDATION = Code("95436008", "SCT", "Lung consolidation")
DIAGNOSES = {
    "Normal": Code("17621005", "SCT", "Normal"),
    "COVID-19": Code("840539006", "SCT", "COVID-19"),
    "CAP": Code("385093006", "SCT", "Community acquired pneumonia"),
}
DECISIONS = {"abnormal": Code("263654008", "SCT", "Abnormal"), "normal": DIAGNOSES["Normal"]}
CT_SCAN_OF_CHEST = Code("169069000", "SCT", "CT of chest")
MILLILITER = Code("ml", "UCUM", "milliliter")
CUBIC_CENTIMETER = Code("cm3", "UCUM", "cubic centimeter")
PERCENT = Code("%", "UCUM", "percent")

#: Segment numbers of seg.dcm, and what each holds.
SEGMENTS = {1: "right lung", 2: "left lung", 3: "ground-glass", 4: "consolidation",
            5: f"Grad-CAM localization >= {MAP_THRESHOLD}"}
#: Series numbers of the three outputs (arbitrary but fixed, above the scanner's usual ones).
SERIES_NUMBERS = {"seg": 9001, "sr": 9002, "sc": 9003}
BURNED_IN = "RESEARCH USE ONLY - NOT FOR DIAGNOSIS"


#: Patient and study attributes that are Type 2 (present, possibly empty) in the CT IOD and that
#: the derived objects copy; anonymized studies often omit them altogether.
TYPE2_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                "ReferringPhysicianName", "StudyID", "AccessionNumber")


def complete_type2(sources: Sequence[Dataset]) -> list[Dataset]:
    """Copies of the source headers with missing Type 2 patient/study attributes added empty
    (never invented: an empty value is what the standard says a missing one means)."""
    out = []
    for ds in sources:
        copy = deepcopy(ds)  # headers only (no pixel data): small
        for keyword in TYPE2_COPIED:
            if keyword not in copy:
                setattr(copy, keyword, "")
        out.append(copy)
    return out


def declare_private_scheme(ds: Dataset) -> Dataset:
    """Add the Coding Scheme Identification Sequence that declares :data:`SCHEME` (PS3.3 C.12.1)."""
    from pydicom.sequence import Sequence as DicomSequence

    item = Dataset()
    item.CodingSchemeDesignator = SCHEME
    item.CodingSchemeName = "covidct concepts"
    item.CodingSchemeResponsibleOrganization = "covidct"
    ds.CodingSchemeIdentificationSequence = DicomSequence([item])
    return ds


def _uid() -> str:
    import highdicom as hd

    return hd.UID()


def _software_version() -> str:
    return f"covidct {covidct.__version__}"


def _algorithm(models: dict[str, dict[str, str]], stage: str) -> Any:
    """SEG algorithm identification of one model: name, covidct version, weights sha256."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    return hd.AlgorithmIdentificationSequence(
        name=f"covidct {stage}", family=codes.DCM.ArtificialIntelligence, version=covidct.__version__,
        parameters={"weights_sha256": models[stage]["sha256"]} if stage in models else None,
    )


def _sr_algorithm(models: dict[str, dict[str, str]], stage: str) -> Any:
    """SR algorithm identification (TID 4019) of one model; the weights' sha256 as a parameter."""
    import highdicom as hd

    sha = models.get(stage, {}).get("sha256")
    return hd.sr.AlgorithmIdentification(
        name=f"covidct {stage}", version=covidct.__version__,
        parameters=[f"weights sha256 {sha}"] if sha else None,
    )


def segment_stack(analysis: Analysis) -> np.ndarray:
    """(slices, rows, columns, 5) bool in the source's own slice and pixel order, one channel per
    entry of :data:`SEGMENTS` (lungs and lesions overlap, so they cannot share one label map)."""
    geometry = analysis.volume.geometry
    channels = [
        analysis.lungs.labels == RIGHT,
        analysis.lungs.labels == LEFT,
        analysis.infection == 1,
        analysis.infection == 2,
        analysis.maps >= MAP_THRESHOLD,
    ]
    return np.stack([to_source_order(c, geometry)[0] for c in channels], axis=-1)


def source_slice_of(shape: tuple[int, int, int], geometry: Geometry) -> dict[int, int]:
    """Canonical slice index -> index of the source image it came from (DICOM: the source's
    axis 0 is its slice axis; canonicalization may only have reversed it)."""
    canonical = np.broadcast_to(np.arange(shape[0])[:, None, None], shape)
    in_source = to_source_order(canonical, geometry)[0][:, 0, 0]
    return {int(k): i for i, k in enumerate(in_source)}


def segmentation(analysis: Analysis, sources: Sequence[Dataset]) -> Dataset:
    """The DICOM Segmentation of the lungs and lesions, one frame per source image and segment.

    Parameters
    ----------
    analysis : from :func:`covidct.pipeline.analyze` of the volume read from ``sources``
    sources : headers of the source CT images in the source's own slice order
        (:func:`covidct.io.dicom.read_source_headers`)
    """
    import highdicom as hd

    stack = segment_stack(analysis)
    if stack.shape[0] != len(sources):
        raise ValueError(f"{len(sources)} source images for {stack.shape[0]} slices")
    models = analysis.models
    described = [
        (RIGHT_LUNG, ANATOMICAL_STRUCTURE, "lungs", (0.62, 0.77, 1.0)),
        (LEFT_LUNG, ANATOMICAL_STRUCTURE, "lungs", (0.48, 0.87, 0.55)),
        (GROUND_GLASS, MORPHOLOGICALLY_ABNORMAL, "infection", (1.0, 0.85, 0.2)),
        (CONSOLIDATION, MORPHOLOGICALLY_ABNORMAL, "infection", (1.0, 0.3, 0.2)),
        (GRADCAM_LOCALIZATION, MORPHOLOGICALLY_ABNORMAL, "classifier", (0.9, 0.2, 0.9)),
    ]
    descriptions = []
    for number, (kind, category, stage, rgb) in enumerate(described, start=1):
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=SEGMENTS[number], segmented_property_category=category,
            segmented_property_type=kind, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=_algorithm(models, stage), tracking_uid=_uid(),
            tracking_id=f"covidct {SEGMENTS[number]}",
            anatomic_regions=None if stage == "lungs" else [LUNG],
            display_color=hd.color.CIELabColor.from_rgb(*(int(255 * c) for c in rgb)),
        ))
    return declare_private_scheme(hd.seg.Segmentation(
        source_images=list(sources), pixel_array=stack, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=_uid(), series_number=SERIES_NUMBERS["seg"],
        sop_instance_uid=_uid(), instance_number=1, manufacturer=MANUFACTURER,
        manufacturer_model_name="covidct", software_versions=_software_version(), device_serial_number="0",
        content_label="COVIDCT", content_description="lungs and infection (research use, not for diagnosis)",
        series_description="covidct lungs and infection (research use)",
    ))


def measurement_report(analysis: Analysis, report: dict[str, Any], sources: Sequence[Dataset]) -> Dataset:
    """The TID 1500 measurement report: decision, diagnosis, Corona score, volumes, involvement.

    Values are report.json's (``report``, from :func:`covidct.report.json.report_dict`), so the
    two never disagree.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    scores, decision, models = report["scores"], report["decision"], analysis.models
    device = hd.sr.ObserverContext(
        observer_type=codes.cid270.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=_uid(), name="covidct", manufacturer_name=MANUFACTURER, model_name=_software_version(),
        ),
    )
    right, left = hd.sr.FindingSite(RIGHT_LUNG), hd.sr.FindingSite(LEFT_LUNG)
    lungs_site = hd.sr.FindingSite(LUNG)

    def volume(value: float, sites: list[Any], unit: Code = MILLILITER, name: Code = codes.SCT.Volume) -> Any:
        return hd.sr.Measurement(name=name, value=float(value), unit=unit, finding_sites=sites)

    def group(label: str, finding: Code, stage: str, measurements: list[Any], evaluations: list[Any] | None = None,
              sites: list[Any] | None = None) -> Any:
        return hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=_uid(), identifier=label),
            finding_type=finding, algorithm_id=_sr_algorithm(models, stage), finding_sites=sites,
            measurements=measurements, qualitative_evaluations=evaluations,
        )

    lung_ml, typed_ml = scores["lung_volume_ml"], scores["infection_by_type_ml"]
    groups = [
        group("case decision and Corona score", INFECTION, "classifier", [
            volume(scores["corona_score_cm3"], [lungs_site], CUBIC_CENTIMETER, CORONA_SCORE),
            volume(scores["involvement_pct"]["right"], [right], PERCENT, LUNG_INVOLVEMENT),
            volume(scores["involvement_pct"]["left"], [left], PERCENT, LUNG_INVOLVEMENT),
        ], [
            hd.sr.QualitativeEvaluation(CASE_DECISION, DECISIONS[decision["label"]]),
            hd.sr.QualitativeEvaluation(MOST_LIKELY_DIAGNOSIS, DIAGNOSES[decision["diagnosis"]]),
        ], sites=[lungs_site]),
        group("lungs", LUNG, "lungs", [
            volume(lung_ml["right"], [right]), volume(lung_ml["left"], [left]),
        ], sites=[lungs_site]),
    ]
    if typed_ml["ground_glass"] is not None:
        by_type = scores["infection_by_type_pct"]
        groups += [
            group("ground-glass", GROUND_GLASS, "infection", [
                volume(typed_ml["ground_glass"], [lungs_site]),
                volume(by_type["ground_glass"]["right"], [right], PERCENT, LUNG_INVOLVEMENT),
                volume(by_type["ground_glass"]["left"], [left], PERCENT, LUNG_INVOLVEMENT),
            ], sites=[lungs_site]),
            group("consolidation", CONSOLIDATION, "infection", [
                volume(typed_ml["consolidation"], [lungs_site]),
                volume(by_type["consolidation"]["right"], [right], PERCENT, LUNG_INVOLVEMENT),
                volume(by_type["consolidation"]["left"], [left], PERCENT, LUNG_INVOLVEMENT),
            ], sites=[lungs_site]),
        ]
    content = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=CT_SCAN_OF_CHEST, imaging_measurements=groups,
    )
    return declare_private_scheme(hd.sr.Comprehensive3DSR(
        evidence=list(sources), content=content[0], series_instance_uid=_uid(),
        series_number=SERIES_NUMBERS["sr"], sop_instance_uid=_uid(), instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True, series_description="covidct measurements (research use)",
    ))


def burn_in(rgb: np.ndarray, text: str = BURNED_IN) -> np.ndarray:
    """``rgb`` (rows, columns, 3) uint8 with a black band on top holding ``text`` in white."""
    from PIL import Image, ImageDraw, ImageFont

    band = max(14, rgb.shape[0] // 24)
    out = np.zeros((rgb.shape[0] + band, rgb.shape[1], 3), np.uint8)
    out[band:] = rgb
    image = Image.fromarray(out)
    font = ImageFont.load_default(size=max(10, band - 4))
    ImageDraw.Draw(image).text((4, 1), text, fill=(255, 255, 255), font=font)
    return np.asarray(image)


def key_slice_captures(slides: Sequence[tuple[int, np.ndarray]], sources: Sequence[Dataset],
                       analysis: Analysis) -> list[Dataset]:
    """Secondary Capture images of the key slices, "research use, not for diagnosis" burned in.

    Parameters
    ----------
    slides : (canonical slice index, RGB picture) of each key slice
    sources : source image headers in the source's own slice order
    analysis : the analysis the pictures show
    """
    import highdicom as hd
    from pydicom.sequence import Sequence as DicomSequence

    where = source_slice_of(analysis.volume.shape, analysis.volume.geometry)
    series_uid = _uid()
    captures = []
    for number, (k, rgb) in enumerate(slides, start=1):
        ref = sources[where[k]]
        sc = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=ref, pixel_array=burn_in(rgb), photometric_interpretation="RGB", bits_allocated=8,
            coordinate_system="PATIENT", series_instance_uid=series_uid, series_number=SERIES_NUMBERS["sc"],
            sop_instance_uid=_uid(), instance_number=number, manufacturer=MANUFACTURER,
            patient_orientation=("L", "P"), transfer_syntax_uid="1.2.840.10008.1.2.1",
        )
        sc.BurnedInAnnotation = "YES"
        sc.Laterality = ""  # Type 2C (paired body parts): the chest is not paired, so empty
        sc.SeriesDescription = "covidct key slices (research use)"
        sc.ImageComments = f"covidct key slice {k}: heat map (left) and segmented lesions (right); {BURNED_IN}"
        item = Dataset()
        item.ReferencedSOPClassUID = ref.SOPClassUID
        item.ReferencedSOPInstanceUID = ref.SOPInstanceUID
        sc.SourceImageSequence = DicomSequence([item])
        captures.append(sc)
    return captures


def write_segmentation(analysis: Analysis, sources: Sequence[Dataset], folder: str | os.PathLike[str]) -> str:
    """Write ``seg.dcm`` (:func:`segmentation`) into ``folder``; returns its name relative to
    ``folder``'s parent, for report.json ``outputs``. ``sources`` as from :func:`complete_type2`."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    segmentation(analysis, sources).save_as(out / "seg.dcm", enforce_file_format=True)
    return f"{out.name}/seg.dcm"


def write_measurements_and_captures(analysis: Analysis, report: dict[str, Any], sources: Sequence[Dataset],
                                    slides: Sequence[tuple[int, np.ndarray]],
                                    folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Write ``sr.dcm`` and ``sc_NNN.dcm`` into ``folder``; returns their names (relative to
    ``folder``'s parent) for report.json ``outputs``. ``sources`` as from :func:`complete_type2`."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    measurement_report(analysis, report, sources).save_as(out / "sr.dcm", enforce_file_format=True)
    names = []
    for i, sc in enumerate(key_slice_captures(slides, sources, analysis), start=1):
        sc.save_as(out / f"sc_{i:03d}.dcm", enforce_file_format=True)
        names.append(f"{out.name}/sc_{i:03d}.dcm")
    return {"report": f"{out.name}/sr.dcm", "key_slices": names}
