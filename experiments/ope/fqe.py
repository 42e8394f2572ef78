"""Fitted Q evaluation (Le et al. 2019): regress Q^pi on logged transitions, then average
V^pi(s_0) = sum_a pi(a|s_0) Q(s_0, a) over the logged users' first states.

Each iteration k fits Q_{k+1}(s_t, a_t) to r_t + gamma * sum_a pi(a|s_{t+1}) Q_k(s_{t+1}, a)
(0 after the episode's last step), warm-starting from Q_k. The observation holds the time
left, so ``iterations >= horizon`` backs values up over the whole episode. Rewards are
scaled by their standard deviation during fitting.

The CI resamples users' V(s_0) for a fixed fitted Q: it leaves out the variance of fitting Q
itself, so it is too narrow; the validation report measures its coverage.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from experiments.ope.data import OPEData
from experiments.ope.estimators import SEQUENTIAL, Estimator
from recsys.numerics import flush_denormals


@dataclass
class FQE(Estimator):
    """``fit(data, obs)`` first (``obs`` (U, T, D): the logged observations), then
    ``estimate(data)``. ``q_values`` after fitting is Q on every logged state, (U, T, A),
    WDR's control variate."""

    name = "fqe"
    kind = SEQUENTIAL
    hidden: tuple[int, ...] = (64, 64)
    iterations: int = 20
    epochs: int = 2
    batch_size: int = 1024
    learning_rate: float = 1e-3
    seed: int = 0
    progress: bool = False
    q_values: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in ("iterations", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"ope.fqe.{name}: must be >= 1, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ValueError(f"ope.fqe.learning_rate: must be > 0, got {self.learning_rate}")

    def fit(self, data: OPEData, obs: np.ndarray) -> np.ndarray:
        """Fit Q^pi on the logged transitions; returns (and keeps) Q on every logged state."""
        if obs.shape[:2] != data.mask.shape:
            raise ValueError(f"ope.fqe: obs must be (users, steps, obs_dim) matching mask {data.mask.shape}, got {obs.shape}")
        torch.manual_seed(self.seed)
        mask = data.mask
        u, t = np.nonzero(mask)
        last = t + 1 >= mask.shape[1]
        nxt = np.where(last, t, t + 1)
        has_next = ~last & mask[u, nxt]
        scale = float(data.rewards[mask].std()) or 1.0
        s = torch.as_tensor(obs[u, t], dtype=torch.float32)
        s_next = torch.as_tensor(obs[u, nxt], dtype=torch.float32)
        a = torch.as_tensor(data.actions[u, t])
        r = torch.as_tensor(data.rewards[u, t] / scale, dtype=torch.float32)
        pi_next = torch.as_tensor(data.pi[u, nxt] * has_next[:, None], dtype=torch.float32)
        gamma = float(data.gamma)

        layers: list[nn.Module] = []
        width = obs.shape[-1]
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        net = nn.Sequential(*layers, nn.Linear(width, data.n_actions))
        opt = torch.optim.Adam(net.parameters(), lr=self.learning_rate)
        gen = torch.Generator().manual_seed(self.seed)
        iterations = range(self.iterations)
        if self.progress:
            from tqdm.auto import tqdm
            iterations = tqdm(iterations, desc="fqe", leave=False)
        with flush_denormals():
            self._iterate(net, opt, iterations, (s, a, r, s_next, pi_next), gamma, gen)
        q_all = np.zeros((*mask.shape, data.n_actions))
        q_all[u, t] = _forward(net, s).numpy() * scale
        self.q_values = q_all
        return q_all

    def _iterate(self, net: nn.Module, opt: torch.optim.Optimizer, iterations, tensors, gamma: float,
                 gen: torch.Generator) -> None:
        s, a, r, s_next, pi_next = tensors
        for _ in iterations:
            with torch.no_grad():
                target = r + gamma * (pi_next * _forward(net, s_next)).sum(dim=1)
            for _ in range(self.epochs):
                order = torch.randperm(len(s), generator=gen)
                for start in range(0, len(s), self.batch_size):
                    idx = order[start:start + self.batch_size]
                    q = net(s[idx]).gather(1, a[idx, None])[:, 0]
                    loss = nn.functional.mse_loss(q, target[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()

    def statistics(self, data: OPEData) -> np.ndarray:
        if self.q_values is None or self.q_values.shape[:2] != data.mask.shape:
            raise ValueError("ope.fqe: call fit(data, obs) on these logs before estimate()")
        return (data.pi[:, 0] * self.q_values[:, 0]).sum(axis=1)[:, None]


@torch.no_grad()
def _forward(net: nn.Module, x: torch.Tensor, batch: int = 65536) -> torch.Tensor:
    return torch.cat([net(x[i:i + batch]) for i in range(0, len(x), batch)])
