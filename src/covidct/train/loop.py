"""What every covidct training loop shares: seeding, one optimisation step, and the epoch loop
of the segmentation networks."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from tqdm import tqdm

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


def parameter_groups(model: torch.nn.Module, lr: float, lr_factors: dict[str, float]) -> list[dict[str, Any]]:
    """AdamW parameter groups: one per module named in ``lr_factors`` (its parameters at ``lr``
    times the factor), then all other parameters at ``lr``; empty groups are dropped."""
    unknown = set(lr_factors) - {name for name, _ in model.named_children()}
    if unknown:
        raise ValueError(f"no module {sorted(unknown)} in the network")
    named = [(getattr(model, name), lr * factor) for name, factor in lr_factors.items()]
    taken = {id(p) for module, _ in named for p in module.parameters()}
    groups = [{"params": list(module.parameters()), "lr": group_lr} for module, group_lr in named]
    groups.append({"params": [p for p in model.parameters() if id(p) not in taken], "lr": lr})
    return [g for g in groups if g["params"]]


def fit(
    model: torch.nn.Module,
    items: torch.Tensor,
    batch: Callable[[torch.Tensor], tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]],
    gen: torch.Generator,
    epochs: int,
    batch_size: int,
    lr: float,
    bf16: bool,
    max_minutes: float | None = None,
    desc: str = "train",
    weight_decay: float = 1e-4,
    warmup: float = 0.1,
    min_batch: int = 1,
    lr_factors: dict[str, float] | None = None,
) -> tuple[int, float]:
    """Train in place: AdamW, one-cycle learning rate, each epoch over ``items`` in a random
    order, in batches of ``batch_size``.

    Parameters
    ----------
    items : 1-D tensor of sample indices making up one epoch (repeats allowed)
    batch : indices -> (network input, loss of the float32 logits), augmentation included
    gen : shuffling (and the caller's augmentation) draws
    max_minutes : stop after the epoch that passes this much time
    weight_decay : AdamW's
    warmup : fraction of the steps the one-cycle schedule spends rising
    min_batch : shorter batches (the last one of an epoch) are skipped; 2 for batch norm
    lr_factors : module name -> factor on ``lr`` for that module's parameters (discriminative
        fine-tuning: a pretrained module learns more slowly than the new ones); others get ``lr``

    Returns
    -------
    (epochs done, seconds)
    """
    groups = parameter_groups(model, lr, lr_factors or {})
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(len(items) / batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in groups], total_steps=steps,
                                                    pct_start=warmup)
    start, done = time.monotonic(), 0
    bar = tqdm(range(epochs), desc=desc, unit="epoch", disable=None)
    for _ in bar:
        model.train()
        order = items[torch.randperm(len(items), generator=gen)]
        losses = []
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            if len(idx) < min_batch:
                continue
            x, loss_of = batch(idx)
            losses.append(train_step(model, x, loss_of, optimizer, scheduler, bf16))
        done += 1
        bar.set_postfix(loss=f"{np.mean(losses):.4f}")
        if max_minutes is not None and time.monotonic() - start > 60 * max_minutes:
            break
    model.eval()
    return done, time.monotonic() - start
