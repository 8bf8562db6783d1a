"""report.html in a real browser: headless Chromium (Debian package `chromium`) loads the page
from disk with no network, every picture decodes, and a screenshot shows them. Skips, saying
why, where Chromium is not installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from covidct.pipeline import analyze
from covidct.report import outputs

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (Debian package chromium; "
                                "`.ci/run` installs it where apt-get is allowed)")
#: A root-safe, offline headless start (no sandbox as root; no background network calls).
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: Appended to a copy of the page: after load, lists each <img>'s decoded width (0 = broken).
PROBE = ('<script>window.addEventListener("load", () => { const p = document.createElement("pre"); '
         'p.id = "probe"; p.textContent = JSON.stringify([...document.images].map('
         'i => i.complete && i.naturalWidth > 0 ? i.naturalWidth : 0)); document.body.appendChild(p); });</script>')


def chromium(page: Path, profile: Path, *args: str) -> str:
    result = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def saturated_pixels(png: Path) -> int:
    """Pixels whose channels differ by more than 60: the heat maps, outlines, the decision's colour."""
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return int(((rgb.max(axis=2) - rgb.min(axis=2)) > 60).sum())


@pytest.fixture(scope="module")
def report_page(small_phantom, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("browser") / "report"
    outputs.write_report(analyze(small_phantom.volume), out)
    return out / "report.html"


def test_every_picture_of_the_report_decodes_in_chromium(report_page, tmp_path):
    html = report_page.read_text(encoding="utf-8")
    n_images = len(re.findall(r"<img\b", html))
    assert n_images >= 3  # the probability curve, the 3-D overview, at least one key slice
    probed = tmp_path / "probed.html"
    probed.write_text(html.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = chromium(probed, tmp_path / "profile", "--virtual-time-budget=10000", "--dump-dom")
    widths = json.loads(re.search(r'<pre id="probe">([^<]*)</pre>', dom).group(1))
    assert len(widths) == n_images and all(w > 0 for w in widths), widths


def test_a_screenshot_shows_the_pictures(report_page, tmp_path):
    shot, bare_shot = tmp_path / "report.png", tmp_path / "bare.png"
    chromium(report_page, tmp_path / "p1", "--window-size=1280,2400", f"--screenshot={shot}")
    # the same page with its pictures removed, for comparison
    bare = tmp_path / "bare.html"
    bare.write_text(re.sub(r"src=(['\"])data:image/png;base64,[^'\"]*\1", 'src=""', report_page.read_text(encoding="utf-8")),
                    encoding="utf-8")
    chromium(bare, tmp_path / "p2", "--window-size=1280,2400", f"--screenshot={bare_shot}")
    assert Image.open(shot).size == (1280, 2400)
    with_pictures, without = saturated_pixels(shot), saturated_pixels(bare_shot)
    assert with_pictures > 5 * max(without, 1000), (with_pictures, without)
