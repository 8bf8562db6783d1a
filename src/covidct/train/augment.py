"""Random geometric augmentation on batches of slices (torch, one affine warp per image)."""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def random_affine_grid(
    shape: torch.Size | list[int],
    gen: torch.Generator,
    max_rotation_deg: float = 10.0,
    p_rotate: float = 0.8,
    zoom_range: tuple[float, float] = (0.85, 1.15),
    p_zoom: float = 0.5,
    p_flip: float = 0.5,
    max_shift: float = 0.0,
) -> torch.Tensor:
    """Sampling grid for ``F.grid_sample``: per image a random rotation (p ``p_rotate``, uniform
    in ±``max_rotation_deg``), zoom (p ``p_zoom``, uniform in ``zoom_range``), horizontal flip
    (p ``p_flip``) and shift (uniform in ±``max_shift`` of the half-width, both axes).

    Parameters
    ----------
    shape : (N, C, H, W) of the batch to warp
    gen : torch.Generator
        All draws come from it (reproducible with a seed).

    Returns
    -------
    (N, H, W, 2) grid, ``align_corners=False``.
    """
    n = shape[0]

    def u(*size: int) -> torch.Tensor:
        return torch.rand(*size, generator=gen)

    angle = torch.where(u(n) < p_rotate, (u(n) * 2 - 1) * math.radians(max_rotation_deg), torch.zeros(n))
    low, high = zoom_range
    zoom = torch.where(u(n) < p_zoom, low + (high - low) * u(n), torch.ones(n))
    flip = torch.where(u(n) < p_flip, -1.0, 1.0)
    shift = (u(n, 2) * 2 - 1) * max_shift if max_shift > 0 else torch.zeros(n, 2)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, shift[:, 0]], 1), torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1
    )
    return F.affine_grid(theta, list(shape), align_corners=False)


def warp(x: torch.Tensor, grid: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Resample (N, C, H, W) on ``grid``; zeros outside."""
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)


def random_crop(gen: torch.Generator, crop: int, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Cut one random ``crop`` x ``crop`` window per sample out of the last two axes of every
    tensor (the same window in each: an image and its labels stay aligned); the tensors are
    returned as they are when ``crop`` is not smaller than their side."""
    n, size = tensors[0].shape[0], tensors[0].shape[-1]
    if crop >= size:
        return tensors
    top = torch.randint(0, size - crop + 1, (n,), generator=gen)
    left = torch.randint(0, size - crop + 1, (n,), generator=gen)
    return tuple(
        torch.stack([t[i, ..., a : a + crop, b : b + crop] for i, (a, b) in enumerate(zip(top, left))]) for t in tensors
    )
