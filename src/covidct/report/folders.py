"""Output folders: refuse a non-empty one before the work, and write through a hidden staging
folder renamed into place at the end, so a failure never leaves a half-written result.

Imports nothing heavy: the CLI checks the output folder before it loads the models.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from covidct.errors import InputError
from covidct.report.nifti import current_umask


def check_output_dir(out_dir: str | os.PathLike[str], force: bool) -> Path:
    """Refuse (InputError) a non-empty ``out_dir`` unless ``force``; call before the work."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; choose another output folder.")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise InputError(f"{out}: folder is not empty; choose another or pass --force to replace it.")
    return out


@contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A hidden staging folder beside ``out``: when the block succeeds it replaces ``out`` as a
    whole (one rename), when it fails it is removed. Readers never see a half-written ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.covidct-"))
    try:
        yield stage
        os.chmod(stage, 0o777 & ~current_umask())
        if out.exists():
            shutil.rmtree(out)
        os.replace(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
