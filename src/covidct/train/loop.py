"""What every covidct training loop shares: seeding and one optimisation step."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch and numpy; return a torch generator for augmentation draws."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    return torch.Generator().manual_seed(seed)


def train_step(
    model: torch.nn.Module,
    x: torch.Tensor,
    loss_of: Callable[[torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    bf16: bool,
) -> float:
    """Forward ``x`` (under bfloat16 autocast when ``bf16``), ``loss_of(float32 logits)``,
    backward, optimizer and scheduler step; returns the loss."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(x)
    loss = loss_of(logits.float())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    return float(loss.detach().item())
