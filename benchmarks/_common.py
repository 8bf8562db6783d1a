"""Helpers shared by the benchmark scripts: where the data is, and how results are recorded."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from covidct.train.data import TypedSlice

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("COVIDCT_DATA", ROOT.parent / "shared" / "data"))
RESULTS = Path(__file__).resolve().parent / "results"


#: The shared COVID-CT-MD studies, one per class: (folder under covid_ct_md/, study).
SHARED_STUDIES = (("COVID", "P001"), ("CAP", "cap001"), ("Normal", "normal001"))


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }


def record(name: str, result: dict[str, Any]) -> Path:
    """Print the result and write it, with the command that produced it, to results/NAME.json."""
    payload = {"command": "python " + " ".join(shlex.quote(a) for a in sys.argv), "machine": machine(), **result}
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps(payload, indent=2))
    return path


def network_slices_per_s(model: torch.nn.Module, input_shape: tuple[int, int, int, int], n_batches: int = 2) -> float:
    """Network-only throughput in slices/s on random inputs of ``input_shape`` (N, C, H, W),
    float32, after one warm-up batch."""
    x = torch.rand(*input_shape)
    with torch.inference_mode():
        model(x)
        start = time.perf_counter()
        for _ in range(n_batches):
            model(x)
    return n_batches * input_shape[0] / (time.perf_counter() - start)


def model_arguments(doc: str | None, model: str, default_weights: str, default_name: str) -> argparse.Namespace:
    """Parse the command line of a script that measures one model: ``--weights CARD`` (default
    the shipped ``default_weights``) and ``--name NAME``; sets 2 torch threads."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=default_weights, help=f"{model} model card (default: the shipped one)")
    parser.add_argument("--name", default=default_name, help="results/NAME.json (default: %(default)s)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    return args


def fold_models_arguments(doc: str | None, default_name: str) -> argparse.Namespace:
    """Parse the command line of a script that measures the fold models kept by
    ``benchmarks/infection_cv.py --keep DIR``: ``--folds DIR`` and ``--name NAME``; sets 2 torch threads."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folds", required=True, help="folder of infection_fold{1..5}.json from infection_cv.py --keep")
    parser.add_argument("--name", default=default_name, help=f"results file stem (default {default_name})")
    args = parser.parse_args()
    torch.set_num_threads(2)
    return args


def parse_cross_validation_arguments(parser: argparse.ArgumentParser, default_name: str) -> argparse.Namespace:
    """Add the options every cross-validation script shares (``--train-folds N``, ``--keep DIR
    [--reuse]``, ``--name``; the script has ``--folds``), parse the command line, check that
    ``--reuse`` comes with ``--keep`` and that ``--train-folds`` is 1 to ``--folds`` - 1 (default:
    all the other folds); sets 2 torch threads."""
    parser.add_argument("--train-folds", type=int, metavar="N",
                        help="train each fold model on only the N folds after its own, cyclically (a learning "
                        "curve: the other folds' data unused; default: all the other folds)")
    parser.add_argument("--keep", help="folder to keep each fold's weights in (default: a temporary one)")
    parser.add_argument("--reuse", action="store_true",
                        help="evaluate the fold models already in --keep (of the same recipe) instead of training them")
    parser.add_argument("--name", default=default_name, help=f"results file stem (default {default_name})")
    args = parser.parse_args()
    if args.reuse and not args.keep:
        parser.error("--reuse needs --keep DIR")
    if args.train_folds is None:
        args.train_folds = args.folds - 1
    elif not 1 <= args.train_folds <= args.folds - 1:
        parser.error(f"--train-folds must be 1-{args.folds - 1}")
    torch.set_num_threads(2)
    return args


def unused_folds(n_folds: int, k: int, train_folds: int) -> list[int]:
    """The folds (0-based) that fold ``k``'s model neither validates nor trains on when it trains
    on the ``train_folds`` folds after its own, cyclically (``--train-folds``); none when
    ``train_folds`` is ``n_folds - 1``."""
    used = {(k + j) % n_folds for j in range(train_folds + 1)}
    return [i for i in range(n_folds) if i not in used]


def kept_fold_models(folder: Path, medseg: list[TypedSlice], n_folds: int = 5) -> Iterator[tuple[int, torch.nn.Module, list[TypedSlice]]]:
    """Each fold model (0-based fold ``k``) that ``python benchmarks/infection_cv.py --keep FOLDER``
    kept, with the MedSeg slices it validates."""
    from covidct.infection import load_infection_model  # here, not at the top: most benchmarks never train
    from covidct.train.infection import medseg_folds, split_medseg

    for k, (val, guard) in enumerate(medseg_folds([s.name for s in medseg], n_folds)):
        model = load_infection_model(str(Path(folder) / f"infection_fold{k + 1}.json")).model
        yield k, model, split_medseg(medseg, val, guard)[1]
