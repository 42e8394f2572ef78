"""Exposure counts: how often, and how recently, a user was shown each offer and each category.

Why explicit counts next to the GRU. A learned simulator is judged where agents and
recommenders take it, and greedy policies show the same offer again and again, far more often
than any logging policy did. The GRU has to infer "this offer was shown k times" from its
state, and beyond the repeat counts it saw in the logs it extrapolates arbitrarily: on the
narrow world (seed 0 of the 2026-12-04 sweep) a policy that always sends one offer got 25-40%
more clicks in the learned world than in TrueWorld, and ``popularity`` / ``mf`` were overrated
by 17-20% (docs/experiments.md). Wear-out with repeated exposure is the oldest fact of
advertising response; giving the heads the counts themselves, with a *linear* weight, makes
the model extrapolate along a line instead.

What they are: per user, for each offer and for each catalog category, exponentially decayed
counts of past sends, ``x <- d x + 1[shown]``, at the fixed time scales ``DECAYS`` (a line
through two scales fits any decay in between). The shown action's counts (offer and category,
each at every scale) enter every head's logit through a linear layer initialised at zero, so
a model starts as the one without them. "No offer" is never counted and gets no term.

Layout: the state ``x`` is (N, D, A + C): D decays, A action columns (column 0, "no offer",
stays 0), then C category columns (none for a model fitted without a catalog). ``columns``
(A, 2) holds each action's offer and category column. Used by ``network.ResponseModel`` (``config.exposure_features``) and by the fused
``ensemble.EnsembleResponseModel`` step, which share these functions.
"""

from __future__ import annotations

import torch

DECAYS = (0.5, 0.9)  # half-lives of 1 and ~6.6 steps


def columns(action_category: list[int], n_actions: int) -> torch.Tensor:
    """(A, 2) column of each action's offer count and of its category's count in ``x``; (A, 1),
    offer counts only, for a model fitted without categories (empty ``action_category``)."""
    offers = torch.arange(n_actions)
    if not action_category:
        return offers[:, None]
    return torch.stack([offers, n_actions + torch.tensor(action_category, dtype=torch.long)], dim=1)


def n_features(cols: torch.Tensor) -> int:
    """Features per (user, action): each of its count columns at each decay."""
    return cols.shape[1] * len(DECAYS)


def initial(n_users: int, decays: torch.Tensor, width: int) -> torch.Tensor:
    """(N, D, width) counts of users who have seen nothing yet."""
    return torch.zeros(n_users, len(decays), width)


def update(x: torch.Tensor, actions: torch.Tensor, decays: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Counts after the users were sent ``actions`` (a new tensor; "no offer" counts nothing)."""
    out = x * decays[:, None]
    sent = (actions > 0).to(x.dtype)[:, None, None].expand(-1, x.shape[1], cols.shape[1])
    return out.scatter_add_(-1, cols[actions][:, None, :].expand(-1, x.shape[1], -1), sent)


def before_each(actions: torch.Tensor, decays: torch.Tensor, cols: torch.Tensor, width: int) -> torch.Tensor:
    """(B, T, D, width) counts before every step of whole logged sequences ``actions`` (B, T)."""
    x = initial(actions.shape[0], decays, width)
    steps = [x]
    for t in range(actions.shape[1] - 1):
        x = update(x, actions[:, t], decays, cols)
        steps.append(x)
    return torch.stack(steps, dim=1)


def features_all(x: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """(..., A, 2D) features of every action from counts (..., D, width): [offer, category] x decay."""
    picked = x[..., cols.flatten()].unflatten(-1, cols.shape)  # (..., D, A, 2)
    return picked.movedim(-3, -1).flatten(-2)  # (..., A, 2, D) -> (..., A, 2D)


def features_shown(x: torch.Tensor, cols: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """(N, 2D) features of the shown ``actions`` from counts (N, D, width), as ``features_all``."""
    picked = x.gather(-1, cols[actions][:, None, :].expand(-1, x.shape[1], -1))  # (N, D, 2)
    return picked.transpose(1, 2).flatten(1)
