"""Localization: fine-grained Grad-CAM heat maps of where a slice looks abnormal.

After the published method: Grad-CAM (Selvaraju et al. 2017) of the abnormality score on two
layers of the classifier, whose activations are 28 x 28 and 14 x 14 at the 224 x 224 input
(``layer2`` and ``layer3``), each normalized to [0, 1], resized to the input and multiplied. The
product keeps what both agree on: the finer layer's detail where the coarser one says the
evidence is. The map is then put back into the slice's own pixels (the inverse of the lung-box
crop) and restricted to the lung mask. Slices the classifier does not call abnormal get an
empty map.

The score explained is log p_abnormal = log(1 - p(Normal)); for an ensemble each member's
maps are computed on its own score and averaged per layer before the product.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from covidct import case, classify
from covidct.lungs import LungMasks
from covidct.models import weights as model_weights
from covidct.volume import Volume

#: Classifier layers whose activations are 28 x 28 and 14 x 14 at 224 x 224 input.
GRADCAM_LAYERS = ("layer2", "layer3")


def _networks(model: nn.Module) -> list[nn.Module]:
    return list(model.members) if hasattr(model, "members") else [model]


def _normalize(cam: torch.Tensor) -> torch.Tensor:
    """Each map of (n, h, w) scaled to [0, 1] by its maximum (all-zero maps stay zero)."""
    peak = cam.flatten(1).amax(dim=1).clamp_min(1e-12)
    return cam / peak[:, None, None]


@contextmanager
def recorded_activations(network: nn.Module, layers: tuple[str, ...]) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, every forward pass of ``network`` stores the outputs of its ``layers``
    (by name) in the dict yielded; the hooks are removed on leaving."""
    acts: dict[str, torch.Tensor] = {}
    hooks = [
        getattr(network, name).register_forward_hook(lambda m, i, o, name=name: acts.__setitem__(name, o))
        for name in layers
    ]
    try:
        yield acts
    finally:
        for h in hooks:
            h.remove()


def layer_cam(act: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Grad-CAM of one layer: ReLU of the channels of ``act`` (n, C, h, w) weighted by the
    spatial mean of ``grad``, the score's gradient with respect to them; (n, h, w) float32, at
    the layer's resolution and scale. Differentiable (the guided-attention loss trains on it)."""
    act, grad = act.float(), grad.float()
    return F.relu((grad.mean(dim=(2, 3), keepdim=True) * act).sum(dim=1))


def gradcam(model: nn.Module, x: torch.Tensor, layers: tuple[str, ...] = GRADCAM_LAYERS) -> np.ndarray:
    """Fine-grained Grad-CAM of p_abnormal for prepared classifier inputs.

    Parameters
    ----------
    model : the classifier (a ResNet, or an ensemble with ``members``)
    x : (n, 1, 224, 224) inputs from :func:`covidct.classify.model_input`
    layers : names of the layers whose maps are multiplied

    Returns
    -------
    (n, 224, 224) float32 in [0, 1].
    """
    size = tuple(x.shape[-2:])
    per_layer = {name: torch.zeros((len(x), *size)) for name in layers}
    for network in _networks(model):
        with recorded_activations(network, layers) as acts, torch.enable_grad(), model_weights.autocast():
            inp = model_weights.channels_last(x.expand(-1, network.in_channels, -1, -1).detach())
            log_p = F.log_softmax(network(inp).float(), dim=1)
            score = torch.log1p(-log_p[:, 0].exp().clamp(max=1 - 1e-6))  # log p_abnormal
            grads = torch.autograd.grad(score.sum(), [acts[name] for name in layers])
        for name, grad in zip(layers, grads):
            cam = layer_cam(acts[name].detach(), grad)
            cam = F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
            per_layer[name] += _normalize(cam)
    fused = torch.ones((len(x), *size))
    for name in layers:
        fused *= _normalize(per_layer[name])
    return fused.numpy().astype(np.float32)


def uncrop(maps: np.ndarray, box: classify.Box, shape: tuple[int, int]) -> np.ndarray:
    """Put (n, s, s) maps back into slices of ``shape`` (y, x): the inverse of the lung-box
    crop and resize in :func:`covidct.classify.model_input` (bilinear); zero outside the box."""
    return classify.uncrop(maps, box, shape, "bilinear").astype(np.float32, copy=False)


def localize(
    volume: Volume,
    lungs: LungMasks,
    probabilities: np.ndarray,
    model: model_weights.LoadedModel | None = None,
    threshold: float | None = None,
    batch_size: int = 16,
) -> np.ndarray:
    """Heat maps of infection for every slice, in the volume's own pixels.

    Parameters
    ----------
    volume : Volume
    lungs : LungMasks
        The masks the probabilities were computed with (crop box, restriction).
    probabilities : (z, 3) array
        From :func:`covidct.classify.classify_slices`.
    model : LoadedModel, optional
        The classifier (default: the shipped one).
    threshold : float, optional
        p_abnormal at which a slice is positive (default: the model card's).

    Returns
    -------
    (z, y, x) float32 in [0, 1]: zero on negative slices and outside the lungs.
    """
    model = model or classify.load_classifier()
    threshold = float(model.card["threshold"]) if threshold is None else threshold
    positive = case.positive_slices(probabilities, lungs.lung_slices, threshold)
    maps = np.zeros(volume.shape, dtype=np.float32)
    box = classify.lung_box(lungs.footprint)
    masked = bool(model.card["input"].get("lung_masked", False))
    starts = range(0, len(positive), batch_size)
    for start in tqdm(starts, desc="localize", unit="batch", disable=None, leave=False):
        idx = positive[start : start + batch_size]
        cams = gradcam(model.model, classify.slice_inputs(volume, lungs, idx, masked))
        maps[idx] = uncrop(cams, box, volume.shape[1:]) * (lungs.labels[idx] > 0)
    return maps
