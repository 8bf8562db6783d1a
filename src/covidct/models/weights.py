"""Weights on disk: ``NAME.safetensors`` beside ``NAME.json``, the model card.

The card records what a reader needs to trust and use the weights: architecture and its
arguments, the input specification (size, channels, intensity domain), training data and split,
seed, metrics, operating thresholds, and the sha256 of the safetensors file. Loading checks the
checksum and that the card's input spec is what the caller expects. Nothing is downloaded:
shipped weights live in ``covidct/weights/`` (package data).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch
from torch import nn

from covidct.models import ARCHITECTURES

#: Folder of the weights shipped with covidct.
SHIPPED = Path(str(files("covidct") / "weights"))


@dataclass(frozen=True)
class LoadedModel:
    """A network in eval mode with its model card."""

    model: nn.Module
    card: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.card["name"])

    @property
    def sha256(self) -> str:
        return str(self.card["sha256"])


def bf16_inference() -> bool:
    """Whether networks run under bfloat16 autocast: on CPUs with native bf16 (AVX-512 BF16 /
    AMX, where it is 2-4x faster) unless ``COVIDCT_BF16=0``; ``COVIDCT_BF16=1`` forces it.
    Weights stay float32; benchmarks/speed.py shows the metrics it changes."""
    setting = os.environ.get("COVIDCT_BF16", "")
    if setting in ("0", "1"):
        return setting == "1"
    try:  # the check torch's own tests use; absent from some builds
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast(bf16: bool | None = None) -> torch.autocast:
    """bfloat16 autocast on the CPU: as ``bf16`` says, or as :func:`bf16_inference` when None."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16_inference() if bf16 is None else bf16)


@contextmanager
def inference(bf16: bool | None = None) -> Iterator[None]:
    """No-gradient inference under :func:`autocast` (``bf16=False``: float32 on any CPU).

    Validation metrics of every shipped network stay within 0.5 % of float32 under bf16
    (benchmarks/README.md, "Speed"); slices whose score sits at a threshold can cross it.
    """
    with torch.inference_mode(), autocast(bf16):
        yield


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """A 4-D batch in the channels-last memory layout the loaded networks use (same values)."""
    return x.contiguous(memory_format=torch.channels_last)


def predict_softmax(model: torch.nn.Module, x: torch.Tensor, batch_size: int, bf16: bool | None = None) -> torch.Tensor:
    """Softmax over the output channels of ``model`` for the inputs ``x``, in batches of
    ``batch_size`` under :func:`inference` (``bf16`` as there), channels-last, as float32. A
    one-channel input is repeated to the model's ``in_channels`` when it has more. ``x`` must not
    be empty."""
    channels = getattr(model, "in_channels", 1)
    out = []
    with inference(bf16):
        for start in range(0, len(x), batch_size):
            batch = x[start : start + batch_size]
            if channels != 1:
                batch = batch.expand(-1, channels, -1, -1)
            out.append(torch.softmax(model(channels_last(batch)).float(), dim=1))
    return torch.cat(out)


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build(card: dict[str, Any]) -> nn.Module:
    """Instantiate the card's architecture with its arguments (untrained)."""
    arch = card["architecture"]
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r} in model card; known: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch](**card.get("architecture_args", {}))


def save(model: nn.Module, card: dict[str, Any], stem: str | os.PathLike[str], half: bool = False) -> Path:
    """Write ``stem.safetensors`` and ``stem.json``; the card gains ``sha256`` and ``n_parameters``.

    Parameters
    ----------
    model : nn.Module
    card : dict
        Must hold ``name``, ``architecture``, ``architecture_args`` and ``input``.
    stem : path-like
        Output path without suffix.
    half : bool
        Store floating tensors as float16 (loaded back as float32).

    Returns
    -------
    Path of the card.
    """
    from safetensors.torch import save_file

    for key in ("name", "architecture", "architecture_args", "input"):
        if key not in card:
            raise ValueError(f"model card lacks {key!r}")
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    state = {
        k: (v.half() if half and v.is_floating_point() else v).contiguous()
        for k, v in model.state_dict().items()
    }
    tensors = stem.with_suffix(".safetensors")
    save_file(state, str(tensors), metadata={"name": str(card["name"])})
    card = dict(card)
    card["weights_file"] = tensors.name
    card["dtype"] = "float16" if half else "float32"
    card["n_parameters"] = int(sum(p.numel() for p in model.parameters()))
    card["sha256"] = sha256_of(tensors)
    card_path = stem.with_suffix(".json")
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return card_path


def model_card_path(name_or_path: str | os.PathLike[str]) -> Path:
    """The model card of a shipped name (``"lungs"``) or of a card / safetensors path."""
    path = Path(name_or_path)
    if path.suffix not in (".json", ".safetensors"):
        path = SHIPPED / f"{name_or_path}.json"
    return path.with_suffix(".json")


def read_weights(name_or_path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The model card and the float32 tensors of weights given by shipped name (``"lungs"``) or
    by card / safetensors path, checked against the card's sha256; nothing is built or fused.

    Raises
    ------
    FileNotFoundError
        No such weights.
    ValueError
        Checksum mismatch.
    """
    from safetensors.torch import load_file

    card_path = model_card_path(name_or_path)
    if not card_path.is_file():
        raise FileNotFoundError(f"no model card at {card_path}")
    card = json.loads(card_path.read_text())
    tensors = card_path.parent / card.get("weights_file", card_path.with_suffix(".safetensors").name)
    digest = sha256_of(tensors)
    if digest != card.get("sha256"):
        raise ValueError(f"{tensors}: sha256 {digest[:12]}... does not match its model card; the file is damaged or replaced")
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(tensors)).items()}
    return card, state


def load(name_or_path: str | os.PathLike[str], expect_input: dict[str, Any] | None = None) -> LoadedModel:
    """Load weights by shipped name (``"lungs"``) or by card / safetensors path.

    Parameters
    ----------
    name_or_path : str or path-like
    expect_input : dict, optional
        Keys of the card's ``input`` spec that must have these values (e.g. the intensity
        domain the caller prepares); a mismatch raises ValueError.

    Raises
    ------
    FileNotFoundError
        No such weights.
    ValueError
        Checksum mismatch, unknown architecture, input spec mismatch, or tensors that do not
        fit the architecture.
    """
    card, state = read_weights(name_or_path)
    for key, value in (expect_input or {}).items():
        if card["input"].get(key) != value:
            raise ValueError(f"{model_card_path(name_or_path)}: input {key} is {card['input'].get(key)!r}, expected {value!r}")
    model = build(card)
    model.load_state_dict(state, strict=True)
    model.eval()
    fuse_batchnorm(model)
    # Channels-last: oneDNN's convolutions run 1.6-1.9x faster on it on CPU, in float32 too
    # (benchmarks/README.md, "Speed"); inputs go through channels_last() to match.
    model.to(memory_format=torch.channels_last)
    return LoadedModel(model=model, card=card)


def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """Fold each eval-mode BatchNorm2d into the Conv2d whose output it normalizes (the same
    function, one layer fewer to run); the BatchNorm becomes an Identity. In place.

    Pairs are a Conv2d directly followed by a BatchNorm2d in an ``nn.Sequential``, and the
    ``convN`` / ``bnN`` attributes of covidct's ResNet blocks and stem, which apply
    ``bnN(convN(x))``.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    pairs: list[tuple[nn.Module, str, str]] = []
    for module in model.modules():
        children = dict(module.named_children())
        if isinstance(module, nn.Sequential):
            names = list(children)
            candidates = list(zip(names, names[1:]))
        else:
            candidates = [(n, "bn" + n[4:]) for n in children if n.startswith("conv") and n[4:].isdigit()]
        for conv, bn in candidates:
            if isinstance(children.get(conv), nn.Conv2d) and isinstance(children.get(bn), nn.BatchNorm2d):
                pairs.append((module, conv, bn))
    for module, conv, bn in pairs:
        setattr(module, conv, fuse_conv_bn_eval(getattr(module, conv), getattr(module, bn)))
        setattr(module, bn, nn.Identity())
    return model
