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
    from safetensors.torch import load_file

    path = Path(name_or_path)
    if path.suffix not in (".json", ".safetensors"):
        path = SHIPPED / f"{name_or_path}.json"
    card_path = path.with_suffix(".json")
    if not card_path.is_file():
        raise FileNotFoundError(f"no model card at {card_path}")
    card = json.loads(card_path.read_text())
    tensors = card_path.parent / card.get("weights_file", card_path.with_suffix(".safetensors").name)
    digest = sha256_of(tensors)
    if digest != card.get("sha256"):
        raise ValueError(f"{tensors}: sha256 {digest[:12]}... does not match its model card; the file is damaged or replaced")
    for key, value in (expect_input or {}).items():
        if card["input"].get(key) != value:
            raise ValueError(f"{card_path}: input {key} is {card['input'].get(key)!r}, expected {value!r}")
    model = build(card)
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(tensors)).items()}
    model.load_state_dict(state, strict=True)
    model.eval()
    return LoadedModel(model=model, card=card)
