"""Fitted Q evaluation (Le et al. 2019) with its fitting variance: a bootstrap ensemble.

FQE regresses Q^pi on logged transitions, then averages V^pi(s_0) = sum_a pi(a|s_0) Q(s_0, a)
over the logged users' first states. Iteration k fits Q_{k+1}(s_t, a_t) to the target
r_t + gamma * sum_a pi(a|s_{t+1}) Q_k(s_{t+1}, a) (0 after the episode's last step), computed
per minibatch with a frozen copy of Q_k. The observation holds the time left, so
``iterations >= horizon`` backs values up over the whole episode.

Why it is built like this (the old FQE was off by 30-45% and its CI covered the truth almost
never, README):

* **fixed cost**: ``steps`` gradient steps of ``batch_size`` transitions per iteration, whatever
  the data size, so more data means less noise, not a different fit;
* **regularised**: inputs standardised, decoupled weight decay, and every target clipped to
  what a return-to-go can be, ``[min(0, r_min), max(0, r_max)] x steps left``;
* **honest CI**: ``1 + n_refits`` networks are trained at once (one batched forward): member 0
  on all users (the point estimate), member b on bootstrap resample b of the users
  (``recsys.stats.bootstrap_counts``, as per-user loss weights). Each member's own estimate
  on its own resample is a bootstrap replicate that includes refitting Q, so the CI
  (``estimators.refit_interval``) carries the fitting variance;
* **diagnostics**: per iteration, the Bellman error (RMSE of Q against its target, reward
  units) on the training users and on the users *held out* of each resample (weight 0), and
  the value estimate; shown in the report.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from experiments.ope.data import OPEData
from experiments.ope.estimators import SEQUENTIAL, Estimator, Refits
from recsys.numerics import flush_denormals
from recsys.stats import bootstrap_counts

log = logging.getLogger("campaign_gym")


class EnsembleMLP(nn.Module):
    """``members`` independent MLPs evaluated in one batched matmul: (N, D) -> (M, N, A)."""

    def __init__(self, members: int, sizes: list[int]) -> None:
        super().__init__()
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
            bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default initialisation, per member
            self.weights.append(nn.Parameter(torch.empty(members, fan_in, fan_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(members, 1, fan_out).uniform_(-bound, bound)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.baddbmm(b, x, w) if x.dim() == 3 else torch.matmul(x, w) + b
            if i < len(self.weights) - 1:
                x = torch.relu(x)
        return x


@dataclass
class FQE(Estimator):
    """``fit(data, obs)`` (``obs`` (U, T, D): the logged observations) returns Q of member 0
    on every logged state, (U, T, A); pass it as ``OPEData.q_pi`` to ``estimate`` (and to WDR,
    whose control variate it is). ``replicate_q(b)`` is member b's Q, ``counts`` its resample."""

    name = "fqe"
    kind = SEQUENTIAL
    reads_return_model = True
    hidden: tuple[int, ...] = (64, 64)
    iterations: int = 30
    steps: int = 80  # gradient steps per iteration, independent of the data size
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 1e-2
    n_refits: int = 10  # bootstrap members (0: the CI resamples users for a fixed Q)
    seed: int = 0
    diagnostics: dict[str, Any] = field(default_factory=dict, repr=False)
    counts: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in ("iterations", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"ope.fqe.{name}: must be >= 1, got {getattr(self, name)}")
        if self.n_refits != 0 and self.n_refits < 2:
            raise ValueError(f"ope.fqe.n_refits: must be 0 (no refit) or >= 2, got {self.n_refits}")
        if not self.learning_rate > 0 or self.weight_decay < 0:
            raise ValueError(f"ope.fqe: learning_rate must be > 0 and weight_decay >= 0, got "
                             f"{self.learning_rate}, {self.weight_decay}")

    def statistics(self, data: OPEData) -> np.ndarray:
        if data.q_pi is None:
            raise ValueError("ope.fqe: needs its Q-function (OPEData.q_pi); call fit(data, obs) and pass its result")
        return (data.pi[:, 0] * data.q_pi[:, 0]).sum(axis=1)[:, None]

    # ------------------------------------------------------------------ fitting
    def fit(self, data: OPEData, obs: np.ndarray) -> np.ndarray:
        """Fit all members on the logged transitions; returns member 0's Q, (U, T, A)."""
        if obs.shape[:2] != data.mask.shape:
            raise ValueError(f"ope.fqe: obs must be (users, steps, obs_dim) matching mask {data.mask.shape}, got {obs.shape}")
        torch.manual_seed(self.seed)
        mask, horizon = data.mask, data.mask.shape[1]
        longest = int(mask.sum(axis=1).max()) if mask.size else 0
        if self.iterations < longest:  # iteration k backs values up over k steps: the rest of the return is lost
            log.warning("ope.fqe.iterations: %d < the longest logged episode (%d steps), so FQE estimates only the "
                        "first %d steps' return; set experiment.ope.estimators.fqe_iterations >= %d",
                        self.iterations, longest, self.iterations, longest)
        u, t = np.nonzero(mask)
        last = t + 1 >= horizon
        nxt = np.where(last, t, t + 1)
        has_next = ~last & mask[u, nxt]
        rewards = data.rewards[mask]
        scale = float(rewards.std()) or 1.0
        steps_left = (horizon - t).astype(np.float32)
        lo, hi = min(0.0, rewards.min()) / scale, max(0.0, rewards.max()) / scale
        self._obs_mean = obs[mask].mean(axis=0)
        self._obs_std = obs[mask].std(axis=0) + 1e-6
        self._scale, self._obs, self._mask = scale, obs, mask
        counts = (np.ones((1, data.n_users)) if not self.n_refits else
                  np.concatenate([np.ones((1, data.n_users)), bootstrap_counts(data.n_users, self.n_refits, self.seed)]))
        self.counts = counts[1:] if self.n_refits else None
        tensors = {
            "s": self._standardise(obs[u, t]), "s_next": self._standardise(obs[u, nxt]),
            "a": torch.as_tensor(data.actions[u, t]),
            "r": torch.as_tensor(data.rewards[u, t] / scale, dtype=torch.float32),
            "pi_next": torch.as_tensor(data.pi[u, nxt] * has_next[:, None], dtype=torch.float32),
            "lo": torch.as_tensor(lo * steps_left), "hi": torch.as_tensor(hi * steps_left),
            "w": torch.as_tensor(counts[:, u], dtype=torch.float32),  # (M, N) loss weight of each transition
        }
        self.net = EnsembleMLP(len(counts), [obs.shape[-1], *self.hidden, data.n_actions])
        with flush_denormals():
            self._iterate(tensors, float(data.gamma), data, u, t)
        return self.replicate_q(0)

    def _standardise(self, x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor((x - self._obs_mean) / self._obs_std, dtype=torch.float32)

    def _iterate(self, d: dict[str, torch.Tensor], gamma: float, data: OPEData, u: np.ndarray, t: np.ndarray) -> None:
        opt = torch.optim.AdamW(self.net.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        gen = torch.Generator().manual_seed(self.seed)
        first = torch.as_tensor(t == 0)
        pi0 = torch.as_tensor(data.pi[u, t], dtype=torch.float32)[first]
        s0 = d["s"][first]
        held_out = (d["w"][1:] == 0).float()  # transitions of users left out of resample b
        history: dict[str, list[float | None]] = {"bellman_error_train": [], "bellman_error_held_out": [], "value": [],
                                           "clipped_share": []}
        n, taken = len(d["s"]), 0
        for _ in range(self.iterations):
            target_net = _frozen_copy(self.net)  # Q_k, fixed during iteration k
            sq_train, sq_held, wt_train, wt_held, clipped = 0.0, 0.0, 0.0, 0.0, 0.0
            for _ in range(self.steps):
                idx = torch.randint(0, n, (self.batch_size,), generator=gen)
                with torch.no_grad():
                    v_next = (d["pi_next"][idx] * target_net(d["s_next"][idx])).sum(-1)  # (M, batch)
                    raw = d["r"][idx] + gamma * v_next
                    target = torch.clamp(raw, d["lo"][idx], d["hi"][idx])
                    clipped += float((raw != target).float().mean())
                q = self.net(d["s"][idx]).gather(2, d["a"][idx].expand(len(target), -1)[..., None])[..., 0]
                err = (q - target) ** 2
                w = d["w"][:, idx]
                loss = ((w * err).sum(1) / w.sum(1).clamp_min(1.0)).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                taken += 1
                with torch.no_grad():
                    sq_train += float((w[0] * err[0]).sum())
                    wt_train += float(w[0].sum())
                    if len(held_out):
                        h = held_out[:, idx]
                        sq_held += float((h * err[1:]).sum())
                        wt_held += float(h.sum())
            with torch.no_grad():
                v0 = (pi0 * self.net(s0)[0]).sum(-1) * self._scale
            history["bellman_error_train"].append(self._scale * math.sqrt(sq_train / max(wt_train, 1.0)))
            history["bellman_error_held_out"].append(self._scale * math.sqrt(sq_held / wt_held) if wt_held else
                                                     None)
            history["value"].append(float(v0.mean()))
            history["clipped_share"].append(clipped / self.steps)
        self.diagnostics = {"iterations": self.iterations, "covers_episodes": self.iterations >= int(
                                data.mask.sum(axis=1).max()), "steps_per_iteration": self.steps, "gradient_steps": taken,
                            "batch_size": self.batch_size, "n_refits": self.n_refits, **history}

    def refits(self) -> Refits | None:
        """The bootstrap members as ``Refits`` (None with ``n_refits = 0`` or before ``fit``)."""
        if self.counts is None:
            return None
        return Refits(self.counts, lambda b: self.replicate_q(b + 1))

    @torch.no_grad()
    def replicate_q(self, member: int) -> np.ndarray:
        """(U, T, A) member ``member``'s Q (0: the full-data fit) on every logged state; 0 on padding."""
        u, t = np.nonzero(self._mask)
        s = self._standardise(self._obs[u, t])
        one = EnsembleMLP(1, [1, 1])
        one.weights = nn.ParameterList([nn.Parameter(w[member:member + 1]) for w in self.net.weights])
        one.biases = nn.ParameterList([nn.Parameter(b[member:member + 1]) for b in self.net.biases])
        q = torch.cat([one(s[i:i + 65536])[0] for i in range(0, len(s), 65536)]).numpy() * self._scale
        out = np.zeros((*self._mask.shape, q.shape[-1]))
        out[u, t] = q
        return out


def _frozen_copy(net: EnsembleMLP) -> EnsembleMLP:
    copy = EnsembleMLP(net.weights[0].shape[0], [1, 1])
    copy.weights = nn.ParameterList([nn.Parameter(w.detach().clone(), requires_grad=False) for w in net.weights])
    copy.biases = nn.ParameterList([nn.Parameter(b.detach().clone(), requires_grad=False) for b in net.biases])
    return copy
