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


def picture_maps(model: nn.Module, images: np.ndarray, lung_masks: np.ndarray, lung_masked: bool) -> np.ndarray:
    """Grad-CAM maps of 8-bit pictures (one case's slices, one lung box) in their own pixels.

    Parameters
    ----------
    model : the classifier network (or ensemble)
    images : (n, y, x) 8-bit pictures (values 0-255, any dtype)
    lung_masks : (n, y, x) lung masks (nonzero inside)
    lung_masked : the classifier's input shows only the lungs (its card's ``input.lung_masked``)

    Returns
    -------
    (n, y, x) float32 in [0, 1], zero outside the lungs; every slice is mapped, whatever the
    classifier answers on it.
    """
    box = classify.lung_box(lung_masks)
    x = classify.model_input(images, is_hu=False, box=box)
    if lung_masked:
        x = x * classify.lung_input_mask(lung_masks, box)
    return uncrop(gradcam(model, x), box, images.shape[1:]) * (lung_masks > 0)


#: The per-slice figures of :func:`map_scores`.
MAP_SCORES = ("enrichment", "pointing", "chance", "dice")
#: The key of :func:`map_scores` that counts the slices whose map is zero everywhere.
EMPTY_MAPS = "empty_maps"


def map_scores(maps: np.ndarray, lung_masks: np.ndarray, infection: np.ndarray) -> dict[str, list[float]]:
    """How well heat maps point at the infection a radiologist drew, slice by slice.

    Only slices with infection inside the lungs and lung outside it are scored. Per slice:

    * ``enrichment``: mean map value inside the infection / in the rest of the lungs (1: no better
      than uniform);
    * ``pointing``: 1 when the map's maximum falls inside the infection (the pointing game), else 0;
    * ``chance``: the share of the lungs that is infected, the pointing game's chance level;
    * ``dice``: Dice of the map >= :data:`covidct.case.MAP_THRESHOLD` against the infection.

    A map that is zero throughout the lungs has no maximum: such a slice adds 1.0 to
    ``empty_maps`` and nothing to the other lists.

    Parameters
    ----------
    maps : (n, y, x) heat maps, e.g. from :func:`picture_maps`
    lung_masks, infection : (n, y, x) masks (nonzero inside)

    Returns
    -------
    ``{name: per-slice values}`` for the names of :data:`MAP_SCORES` and ``empty_maps``.
    """
    per: dict[str, list[float]] = {k: [] for k in (*MAP_SCORES, EMPTY_MAPS)}
    for m, in_lung, inf in zip(maps, lung_masks > 0, infection > 0):
        inf = inf & in_lung
        rest = in_lung & ~inf
        if not inf.any() or not rest.any():
            continue
        m = np.where(in_lung, m, 0.0)
        if m.max() <= 0:
            per[EMPTY_MAPS].append(1.0)
            continue
        per["enrichment"].append(float(m[inf].mean() / max(m[rest].mean(), 1e-9)))
        per["pointing"].append(float(inf.flat[int(np.argmax(m))]))
        per["chance"].append(float(inf.sum() / in_lung.sum()))
        hot = m >= case.MAP_THRESHOLD
        per["dice"].append(float(2 * (hot & inf).sum() / max(hot.sum() + inf.sum(), 1)))
    return per


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
