"""report.html: one self-contained page (images inlined as PNG data URIs) a radiologist can read."""

from __future__ import annotations

import base64
import html
from typing import Any

from covidct.case import MAP_THRESHOLD


def data_uri(png: bytes) -> str:
    """A PNG as a ``data:`` URI."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _row(name: str, value: Any) -> str:
    return f"<tr><th>{html.escape(name)}</th><td>{html.escape(str(value))}</td></tr>"


def _pct_table(zones: dict[str, float]) -> str:
    head = "<tr><th></th><th>upper</th><th>middle</th><th>lower</th></tr>"
    rows = "".join(
        f"<tr><th>{side}</th>" + "".join(f"<td>{zones[f'{side}_{z}']:.1f} %</td>" for z in ("upper", "middle", "lower")) + "</tr>"
        for side in ("right", "left")
    )
    return f"<table class='grid'>{head}{rows}</table>"


def render(report: dict[str, Any], key_slices: list[tuple[str, bytes]], curve_png: bytes, overview_png: bytes) -> str:
    """The HTML page for a report.

    Parameters
    ----------
    report : the report.json dict
    key_slices : (caption, PNG bytes) of the key slices with their heat maps
    curve_png : the per-slice probability curve
    overview_png : the 3-D overview
    """
    d, s, i = report["decision"], report["scores"], report["input"]
    verdict = "abnormal: suspected pneumonia" if d["label"] == "abnormal" else "normal"
    probs = ", ".join(f"{k} {v:.2f}" for k, v in d["probabilities"].items())
    summary = "".join([
        _row("case decision", f"{verdict} ({d['positive_slices']} of {d['lung_slices']} lung slices positive, "
             f"ratio {d['positive_slice_ratio']:.3f}, threshold {d['threshold']:.3f})"),
        _row("diagnosis", f"{d['diagnosis']} ({probs})"),
        _row("Corona score", f"{s['corona_score_cm3']:.1f} cm³"),
        _row(f"infection volume (map ≥ {MAP_THRESHOLD})", f"{s['infection_volume_ml']:.1f} mL"),
        _row("lung volume", f"right {s['lung_volume_ml']['right']:.0f} mL, left {s['lung_volume_ml']['left']:.0f} mL, "
             f"total {s['lung_volume_ml']['total']:.0f} mL"),
        _row(f"lung involved (map ≥ {MAP_THRESHOLD})", f"right {s['involvement_pct']['right']:.1f} %, "
             f"left {s['involvement_pct']['left']:.1f} %, total {s['involvement_pct']['total']:.1f} %"),
        _row("segmented infection", f"ground-glass {s['infection_by_type_ml']['ground_glass']:.1f} mL, "
             f"consolidation {s['infection_by_type_ml']['consolidation']:.1f} mL, total {s['segmentation_volume_ml']:.1f} mL"),
        _row("lung involved (segmentation)", f"right {s['segmentation_involvement_pct']['right']:.1f} %, "
             f"left {s['segmentation_involvement_pct']['left']:.1f} %, total {s['segmentation_involvement_pct']['total']:.1f} %"),
    ])
    study = "".join([
        _row("input", i["path"]), _row("format", i["format"]), _row("patient id", i["patient_id"] or "—"),
        _row("study date", i["study_date"] or "—"), _row("study UID", i["study_uid"] or "—"),
        _row("shape (z, y, x)", " × ".join(map(str, i["shape_zyx"]))),
        _row("spacing (mm, z y x)", ", ".join(f"{v:.3f}" for v in i["spacing_mm_zyx"])),
    ])
    models = "".join(_row(k, "—" if v is None else f"{v['name']} (sha256 {v['sha256'][:12]}…)") for k, v in report["models"].items())
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in report["timing_s"].items() if v is not None)
    figures = "".join(
        f"<figure><img src='{data_uri(png)}' alt='{html.escape(cap)}'><figcaption>{html.escape(cap)}</figcaption></figure>"
        for cap, png in key_slices
    ) or "<p>No positive slice: no heat map to show.</p>"
    warnings = "".join(f"<li>{html.escape(w)}</li>" for w in report["warnings"])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>covidct report — {html.escape(i['patient_id'] or i['path'])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
.disclaimer {{ background: #fff3cd; border: 1px solid #e0c060; padding: .6em 1em; font-weight: 600; }}
.verdict {{ font-size: 1.4em; margin: .6em 0; }}
.abnormal {{ color: #b00020; }} .normal {{ color: #1b5e20; }}
table {{ border-collapse: collapse; margin: .5em 0 1.2em; }}
th, td {{ text-align: left; padding: .25em .8em; border-bottom: 1px solid #ddd; vertical-align: top; }}
.grid td {{ text-align: right; }}
figure {{ display: inline-block; margin: .4em; }} figure img {{ width: 640px; image-rendering: auto; }}
img.wide {{ max-width: 100%; }}
</style></head><body>
<h1>covidct report</h1>
<p class="disclaimer">{html.escape(report['disclaimer'])} Not for diagnosis.</p>
<p class="verdict {d['label']}">{html.escape(verdict)} — {html.escape(d['diagnosis'])}</p>
{f'<h2>Warnings</h2><ul>{warnings}</ul>' if warnings else ''}
<h2>Summary</h2><table>{summary}</table>
<h3>Involvement by zone (percent of each zone): Grad-CAM maps ≥ {MAP_THRESHOLD}</h3>{_pct_table(s['zones_pct'])}
<h3>Involvement by zone (percent of each zone): infection segmentation</h3>{_pct_table(s['segmentation_zones_pct'])}
<h2>Key slices</h2><p>Left: fine-grained Grad-CAM heat map over the lung window. Right: segmented lesions,
ground-glass yellow, consolidation red. Lungs outlined (red right, blue left).</p>
{figures}
<h2>Probability of abnormality per slice</h2><img class="wide" src="{data_uri(curve_png)}" alt="per-slice probability curve">
<h2>3-D overview</h2><img src="{data_uri(overview_png)}" alt="3-D overview: lungs translucent, infection red" width="480">
<h2>Study</h2><table>{study}</table>
<h2>Models</h2><table>{models}</table>
<p>Timing: {html.escape(timing)}. covidct {html.escape(report['covidct_version'])}, schema {html.escape(report['schema'])}.</p>
</body></html>
"""
