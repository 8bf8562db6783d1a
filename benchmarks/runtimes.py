"""Inference back-ends for the three shipped networks, measured on this CPU.

    pip install -e '.[bench]'          # onnxruntime, for the comparison
    python benchmarks/runtimes.py

Per network (lung U-Net and infection U-Net at 256², the classifier ensemble at 224², batch 16,
2 threads, random inputs), slices per second of:

* eager float32 as trained (NCHW, batch norm separate),
* eager float32 as covidct loads it (batch norm folded, channels-last),
* eager bf16 autocast on top (covidct's default where the CPU has native bf16),
* ``torch.compile`` (inductor) of the loaded float32 network, with the seconds its first call
  takes (compiling happens in every new process, i.e. on every `covidct analyze`),
* ONNX Runtime (CPU execution provider) on the network exported from the loaded float32 one,
  with the seconds export + session creation take, and the largest absolute difference of its
  outputs from eager float32.

Writes results/runtimes.json.
"""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _common import record

from covidct import classify, infection, lungs
from covidct.models import weights as model_weights

BATCH = 16
REPEATS = 3


def slices_per_s(run: Any, x: Any) -> float:
    """Throughput of ``run(x)`` after one warm-up call."""
    run(x)
    start = time.perf_counter()
    for _ in range(REPEATS):
        run(x)
    return round(REPEATS * BATCH / (time.perf_counter() - start), 1)


def unfused(name: str) -> torch.nn.Module:
    """The network as trained: weights loaded into a fresh module, NCHW, batch norm separate."""
    from safetensors.torch import load_file

    loaded = model_weights.load(name)
    model = model_weights.build(loaded.card)
    path = model_weights.SHIPPED / loaded.card["weights_file"]
    model.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    return model.eval()


def main() -> None:
    torch.set_num_threads(2)
    rows = {}
    for name, loader, size in (
        ("lungs", lungs.load_lung_model, lungs.MODEL_SIZE),
        ("classifier", classify.load_classifier, classify.INPUT_SIZE),
        ("infection", infection.load_infection_model, infection.INPUT_SIZE),
    ):
        x = torch.rand(BATCH, 1, size, size)
        x_cl = model_weights.channels_last(x)
        loaded = loader().model
        row: dict[str, Any] = {}
        with torch.inference_mode():
            row["eager_fp32_as_trained"] = slices_per_s(unfused(name), x)
            row["eager_fp32_loaded"] = slices_per_s(loaded, x_cl)
            reference = loaded(x_cl).float()
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            row["eager_bf16_loaded"] = slices_per_s(loaded, x_cl)
        compiled = torch.compile(copy.deepcopy(loaded))
        start = time.perf_counter()
        with torch.inference_mode():
            compiled(x_cl)
            row["compile_first_call_s"] = round(time.perf_counter() - start, 1)
            row["torch_compile_fp32"] = slices_per_s(compiled, x_cl)
        row.update(onnx_runtime(loaded, x, reference))
        rows[name] = row
        print(name, row, flush=True)
    record("runtimes", {"batch": BATCH, "networks": rows})


def onnx_runtime(model: torch.nn.Module, x: torch.Tensor, reference: torch.Tensor) -> dict[str, Any]:
    """Export to ONNX, run with onnxruntime (2 threads): speed, setup seconds, max |difference|."""
    try:
        import onnxruntime as ort
    except ImportError:
        return {"onnxruntime": "not installed (pip install -e '.[bench]')"}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "net.onnx"
        start = time.perf_counter()
        torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        setup_s = time.perf_counter() - start
        feed = x.numpy()
        out = session.run(None, {"x": feed})[0]
        return {
            "onnxruntime_fp32": slices_per_s(lambda a: session.run(None, {"x": a}), feed),
            "onnxruntime_setup_s": round(setup_s, 1),
            "onnxruntime_max_abs_diff": float(abs(torch.from_numpy(out) - reference).max()),
            "onnxruntime_version": ort.__version__,
        }


if __name__ == "__main__":
    main()
