"""Shared fixtures: the synthetic phantom (exact expectations) and ../shared/data (realistic ones)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from covidct import phantom

REPO = Path(__file__).resolve().parents[1]
#: Real data lives beside the project, never inside it; COVIDCT_DATA overrides the location.
DATA = Path(os.environ.get("COVIDCT_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real-data folder; tests that need it skip with a reason when it is absent."""
    if not DATA.is_dir():
        pytest.skip(f"real data not found at {DATA} (set COVIDCT_DATA or place ../shared/data beside the repo)")
    return DATA


@pytest.fixture(scope="session")
def small_phantom() -> phantom.Phantom:
    """A 24 x 64 x 64 phantom (5 mm slices, 360 mm field of view) with the default lesions."""
    return phantom.make_phantom(shape=(24, 64, 64), spacing_mm=(5.0, 5.625, 5.625), seed=1)


@pytest.fixture()
def phantom_series(tmp_path: Path, small_phantom: phantom.Phantom) -> Path:
    """The small phantom written as a DICOM series in its own folder."""
    folder = tmp_path / "series"
    phantom.write_dicom_series(small_phantom.volume, folder)
    return folder


@pytest.fixture()
def receiver():
    """A C-STORE SCP on loopback for results (tests/dicomnet.py)."""
    from dicomnet import Receiver

    node = Receiver()
    yield node
    node.stop()
