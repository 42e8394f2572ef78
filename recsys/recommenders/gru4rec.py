"""``gru4rec``: GRU4Rec (Hidasi et al., 2016), a GRU over the user's sequence of events
predicting which offer the user clicks next.

Each logged step is an event: the offer shown (or "no offer") plus its outcome (nothing,
click, click and conversion). The hidden state before step t summarises events 0..t-1; a
linear layer maps it to logits over offers, trained with cross-entropy on the offer clicked at
t, the softmax restricted to the offers allowed at t (the user cannot click what cannot be
sent). Departures from the paper, both small: the initial hidden state is a function of the
profile (every user is new, so a session-only model would start every user at the same
point; ``profile_init=False`` restores the paper's zero state), and mini-batches are padded
per-user sequences rather than session-parallel ones. While acting, ``observe`` advances a
per-user hidden state with the same GRU. Logits rank offers; they are not click
probabilities (no logloss). Written here rather than with RecBole (pinned ray, pickle loads
broken by torch >= 2.6, network calls at import).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from recsys.data.replay import FeatureSpec, LoggedData
from recsys.recommenders.base import Standardise, State, TorchRecommender, TrainConfig, require, train_module

_OUTCOMES = 3  # nothing, click, click + conversion


@dataclass
class GRU4RecConfig(TrainConfig):
    section: ClassVar[str] = "recommender.gru4rec"
    batch_size: int = 256  # users per gradient step
    embed_dim: int = 16
    hidden_dim: int = 64
    profile_init: bool = True  # initial hidden state from the profile (False: zeros, as in the paper)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("embed_dim", "hidden_dim"):
            require(self, name, getattr(self, name) >= 1, ">= 1")


class _GRU4RecNet(nn.Module):
    def __init__(self, spec: FeatureSpec, config: GRU4RecConfig) -> None:
        super().__init__()
        self.profile = slice(*spec.profile)
        n_profile, h = spec.profile[1] - spec.profile[0], config.hidden_dim
        self.norm = Standardise(n_profile)
        self.init = nn.Linear(n_profile, h) if config.profile_init else None
        self.action = nn.Embedding(spec.n_actions, config.embed_dim)
        self.outcome = nn.Embedding(_OUTCOMES, config.embed_dim)
        self.gru = nn.GRU(config.embed_dim, h, batch_first=True)
        self.out = nn.Linear(h, spec.n_offers)

    def initial(self, obs: torch.Tensor) -> torch.Tensor:
        if self.init is None:
            return obs.new_zeros(len(obs), self.gru.hidden_size)
        return torch.tanh(self.init(self.norm(obs[:, self.profile])))

    def event(self, actions: torch.Tensor, click: torch.Tensor, conversion: torch.Tensor) -> torch.Tensor:
        return self.action(actions) + self.outcome(click.long() + (click & conversion).long())

    def before_each(self, obs0: torch.Tensor, events: torch.Tensor) -> torch.Tensor:
        """(U, T, H) hidden state before every step, teacher-forced on the logged events."""
        h0 = self.initial(obs0)
        if events.shape[1] == 1:
            return h0[:, None]
        out, _ = self.gru(events[:, :-1], h0[None].contiguous())
        return torch.cat([h0[:, None], out], dim=1)

    def step(self, h: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
        return self.gru(event[:, None], h[None].contiguous())[1][0]


class GRU4RecRecommender(TorchRecommender):
    name = "gru4rec"
    config_class = GRU4RecConfig
    stateful = True
    predicts_probabilities = False

    def _build(self) -> nn.Module:
        return _GRU4RecNet(self.spec, self.config)

    def _fit(self, train: LoggedData, validation: LoggedData, progress: bool) -> None:
        for split, logged in (("training", train), ("validation", validation)):
            if not (logged.data.click[logged.selection("click")] > 0).any():
                raise ValueError(f"logs: the {split} users never clicked; gru4rec learns from clicks")
        torch.manual_seed(self.config.seed)
        self.module = self._build()
        self.module.norm.fit(train.obs[:, 0, self.module.profile])

        def tensors(logged: LoggedData) -> dict[str, torch.Tensor]:
            d = logged.data
            return {"obs0": torch.as_tensor(logged.obs[:, 0]), "actions": torch.as_tensor(d.actions),
                    "click": torch.as_tensor(d.click > 0), "conversion": torch.as_tensor(d.conversion > 0),
                    "target": torch.as_tensor(logged.selection("click") & (d.click > 0)),
                    "allowed": torch.as_tensor(logged.masks[..., 1:])}

        def loss(net: nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
            hidden = net.before_each(b["obs0"], net.event(b["actions"], b["click"], b["conversion"]))
            rows = b["target"]
            logits = net.out(hidden[rows]).masked_fill(~b["allowed"][rows], -1e9)
            return F.cross_entropy(logits, b["actions"][rows] - 1) if rows.any() else logits.sum() * 0.0

        train_module(self.module, loss, tensors(train), tensors(validation), self.config, "gru4rec", progress)

    @torch.no_grad()
    def initial_state(self, obs: np.ndarray) -> State:
        return {"h": self.module.initial(torch.as_tensor(obs, dtype=torch.float32))}

    @torch.no_grad()
    def advance(self, state: State | None, obs: np.ndarray, actions: np.ndarray, click: np.ndarray,
                conversion: np.ndarray, active: np.ndarray) -> State:
        h = (self.initial_state(obs) if state is None else state)["h"]
        click_t = torch.as_tensor(np.asarray(click, dtype=bool))
        event = self.module.event(torch.as_tensor(np.asarray(actions, dtype=np.int64)), click_t,
                                  torch.as_tensor(np.asarray(conversion, dtype=bool)))
        stepped = self.module.step(h, event)
        return {"h": torch.where(torch.as_tensor(np.asarray(active, dtype=bool))[:, None], stepped, h)}

    @torch.no_grad()
    def predict(self, obs: np.ndarray, state: State | None = None) -> np.ndarray:
        h = (self.initial_state(obs) if state is None else state)["h"]
        logits = self.module.out(h).numpy().astype(np.float64)
        return np.concatenate([np.zeros((len(logits), 1)), logits], axis=1)
