"""The one mini-batch training loop: Adam, early stopping on a validation loss, best weights kept.

The response model (batches of users, gradient clipping, TensorBoard scalars per epoch,
validation in fixed-size chunks) and the PyTorch recommenders (batches of rows or users, one
validation pass) train with ``fit_early_stopping``; what differs between them is a parameter.
``BestWeights`` is the "keep the state with the lowest validation loss" part on its own, also
used where the search is not an epoch loop (the logistic recommender's penalty grid).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

Batch = dict[str, torch.Tensor]  # tensors sharing their first (row or user) dimension
MIN_IMPROVEMENT = 1e-5  # a validation loss must beat the best by this much to count as better


class TrainSettings(Protocol):
    """The optimisation fields ``fit_early_stopping`` reads from a model's config."""

    epochs: int
    batch_size: int  # rows (or users) per gradient step
    lr: float
    weight_decay: float
    patience: int  # epochs without validation improvement before stopping
    max_seconds: float | None  # optional wall-clock cap (None: the epoch budget alone decides)
    seed: int  # of the mini-batch shuffling


class BestWeights:
    """The state_dict of the lowest validation loss seen so far."""

    def __init__(self, min_improvement: float = MIN_IMPROVEMENT) -> None:
        self.loss, self.state, self.min_improvement = math.inf, None, min_improvement

    def offer(self, module: nn.Module, loss: float) -> bool:
        """Keep a copy of ``module``'s weights if ``loss`` is the new best; True if it was."""
        if not loss < self.loss - self.min_improvement:
            return False
        self.loss, self.state = loss, {k: v.clone() for k, v in module.state_dict().items()}
        return True

    def restore(self, module: nn.Module) -> None:
        """Load the best weights into ``module`` (unchanged if no loss was ever finite)."""
        if self.state is not None:
            module.load_state_dict(self.state)


def fit_early_stopping(
    module: nn.Module,
    loss: Callable[[nn.Module, Batch], torch.Tensor],
    train: Batch,
    validation_loss: Callable[[nn.Module], float],
    settings: TrainSettings,
    desc: str,
    progress: bool,
    clip_grad_norm: float | None = None,
    on_epoch: Callable[[int, float, float], None] | None = None,
    leave_bar: bool = True,
) -> float:
    """Adam on shuffled mini-batches of the first dimension of ``train``; after every epoch
    ``validation_loss(module)`` (called in eval mode, without gradients) decides whether the
    weights are the best so far. Stops after ``settings.patience`` epochs without improvement
    or when ``settings.max_seconds`` (if set) is exceeded, restores the best weights and leaves the
    module in eval mode. Returns the best validation loss.

    ``loss(module, batch)`` is the mean training loss of one mini-batch; ``clip_grad_norm``
    caps the gradient norm of every step; ``on_epoch(epoch, train_loss, validation_loss)``
    observes each epoch (e.g. TensorBoard scalars), ``train_loss`` being the mean of the
    mini-batch losses. The global torch RNG is not touched: seed it before building the module."""
    gen = torch.Generator().manual_seed(settings.seed)
    opt = torch.optim.Adam(module.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    n = len(next(iter(train.values())))
    best, bad, start = BestWeights(), 0, time.perf_counter()
    bar = tqdm(range(settings.epochs), desc=desc, disable=not progress, leave=leave_bar)
    for epoch in bar:
        module.train()
        running, steps = 0.0, 0
        for idx in torch.randperm(n, generator=gen).split(settings.batch_size):
            batch_loss = loss(module, {k: v[idx] for k, v in train.items()})
            opt.zero_grad()
            batch_loss.backward()
            if clip_grad_norm is not None:
                nn.utils.clip_grad_norm_(module.parameters(), clip_grad_norm)
            opt.step()
            running, steps = running + batch_loss.item(), steps + 1
        module.eval()
        with torch.no_grad():
            val = validation_loss(module)
        bar.set_postfix(train=f"{running / max(steps, 1):.4f}", val=f"{val:.4f}")
        if on_epoch is not None:
            on_epoch(epoch, running / max(steps, 1), val)
        bad = 0 if best.offer(module, val) else bad + 1
        over_time = settings.max_seconds is not None and time.perf_counter() - start > settings.max_seconds
        if bad >= settings.patience or over_time:
            break
    best.restore(module)
    module.eval()
    return best.loss
