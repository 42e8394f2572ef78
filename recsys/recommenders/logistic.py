"""``logistic``: a logistic-regression CTR model on [observation, one-hot offer].

logit p(target | x, a) = w·z + b_a + u_a·z, with z the standardised observation. The
observation×offer interaction u_a (``interactions=True``) is one (obs_dim, n_offers) linear
layer, so it costs nothing extra and all offers are scored in one matrix product; without it
the offer ranking would be the same for every user. The problem is convex, so it is solved
to convergence by full-batch L-BFGS on the mean log-loss + l2/2·|weights|² (biases free),
for each ``l2`` in the grid (largest first, warm-started), keeping the one with the lowest
validation log-loss. The same class with ``target="conversion"`` is the p(convert | click)
model of ``value_ranker``. Written here (not DeepCTR-Torch: pinned deps, pickle loads broken
by torch >= 2.6, network calls at import) because it is one linear layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from recsys.recommenders.base import TARGETS, PointwiseRecommender, Standardise, require
from recsys.training import BestWeights


@dataclass
class LogisticConfig:
    section: ClassVar[str] = "recommender.logistic"
    target: str = "click"  # click | conversion (p(convert | click), fitted on clicked rows)
    interactions: bool = True  # observation x offer weights (one per offer and feature)
    l2: tuple[float, ...] = (1.0, 1e-1, 1e-2, 1e-3)  # penalties tried; the best on validation is kept
    max_iter: int = 200  # L-BFGS iterations per penalty
    seed: int = 0

    def __post_init__(self) -> None:
        require(self, "target", self.target in TARGETS, f"one of {TARGETS}")
        self.l2 = tuple(float(v) for v in self.l2)
        require(self, "l2", len(self.l2) > 0 and all(math.isfinite(v) and v >= 0 for v in self.l2),
                "a non-empty list of finite penalties >= 0")
        require(self, "max_iter", self.max_iter >= 1, ">= 1")


class _LogisticNet(nn.Module):
    def __init__(self, obs_dim: int, n_offers: int, interactions: bool) -> None:
        super().__init__()
        self.norm = Standardise(obs_dim)
        self.shared = nn.Linear(obs_dim, 1)
        self.offer_bias = nn.Parameter(torch.zeros(n_offers))
        self.cross = nn.Linear(obs_dim, n_offers, bias=False) if interactions else None
        for w in (self.shared.weight, *([] if self.cross is None else [self.cross.weight])):
            nn.init.zeros_(w)

    def fit_standardiser(self, x: np.ndarray) -> None:
        self.norm.fit(x)

    def penalty(self) -> torch.Tensor:
        return sum(((w**2).sum() for n, w in self.named_parameters() if n.endswith("weight")), torch.zeros(()))

    def forward(self, x: torch.Tensor, offers: torch.Tensor | None) -> torch.Tensor:
        z = self.norm(x)
        logits = self.shared(z) + self.offer_bias
        if self.cross is not None:
            logits = logits + self.cross(z)
        return logits if offers is None else logits.gather(1, offers)


class LogisticRecommender(PointwiseRecommender):
    name = "logistic"
    config_class = LogisticConfig

    def _build(self) -> nn.Module:
        return _LogisticNet(self.spec.obs_dim, self.spec.n_offers, self.config.interactions)

    def _train(self, loss: Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor],
               train: dict[str, torch.Tensor], validation: dict[str, torch.Tensor], progress: bool) -> None:
        net = self.module
        rate = float(train["y"].mean().clamp(1e-4, 1 - 1e-4))
        with torch.no_grad():
            net.shared.bias.fill_(math.log(rate / (1 - rate)))
        best = BestWeights(min_improvement=0.0)
        for l2 in tqdm(sorted(self.config.l2, reverse=True), desc=f"logistic ({self.target})",
                       disable=not progress, leave=False):
            opt = torch.optim.LBFGS(net.parameters(), max_iter=self.config.max_iter, line_search_fn="strong_wolfe",
                                    tolerance_grad=1e-6, tolerance_change=1e-9)

            def closure(l2: float = l2, opt: torch.optim.LBFGS = opt) -> torch.Tensor:
                opt.zero_grad()
                objective = loss(net, train) + 0.5 * l2 * net.penalty()
                objective.backward()
                return objective

            opt.step(closure)
            with torch.no_grad():
                best.offer(net, float(loss(net, validation)))
        best.restore(net)
        net.eval()
