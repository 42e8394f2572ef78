"""``deepfm``: DeepFM (Guo et al., 2017) CTR model: a factorisation machine and an MLP sharing
the field embeddings, logit = linear + FM + deep.

Fields: each categorical profile feature (its code, read off the one-hot block of the
observation), the offer id and the offer's category; every other observation column
(standardised profile numerics and the history summary) is a dense field whose embedding is
scaled by its value. The user fields and the offer fields are embedded separately, so scoring
all offers costs one pass over the user fields: the FM's pairwise term is
0.5·(|Σ e|² − Σ |e|²) with Σ e = user sum + offer sum, and the MLP's first layer is linear in
the concatenated embeddings, so it splits into a user part plus an offer part. The same class
with ``target="conversion"`` can be ``value_ranker``'s conversion model. Written here instead
of using DeepCTR-Torch (pinned deps, pickle loads broken by torch >= 2.6, network calls at
import).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from recsys.data.replay import FeatureSpec
from recsys.recommenders.base import TARGETS, PointwiseRecommender, Standardise, TrainConfig, require


@dataclass
class DeepFMConfig(TrainConfig):
    section: ClassVar[str] = "recommender.deepfm"
    target: str = "click"  # click | conversion (p(convert | click), fitted on clicked rows)
    batch_size: int = 1024
    embed_dim: int = 8
    hidden_dim: int = 64  # width of the MLP's first layer (the second is half)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self, "target", self.target in TARGETS, f"one of {TARGETS}")
        for name in ("embed_dim", "hidden_dim"):
            require(self, name, getattr(self, name) >= 2, ">= 2")


class _DeepFMNet(nn.Module):
    def __init__(self, spec: FeatureSpec, k: int, hidden: int) -> None:
        super().__init__()
        self.cat_slices = [tuple(s) for s in spec.cat_slices]
        cards = [e - s for s, e in self.cat_slices]
        n_categories = max(spec.offer_category) + 1
        self.register_buffer("dense", torch.as_tensor(spec.dense))
        self.register_buffer("offer_category", torch.as_tensor(spec.offer_category))
        self.norm = Standardise(len(spec.dense))
        self.cat_embed = nn.ModuleList(nn.Embedding(c, k) for c in cards)
        self.cat_linear = nn.ModuleList(nn.Embedding(c, 1) for c in cards)
        self.dense_embed = nn.Parameter(0.01 * torch.randn(len(spec.dense), k))
        self.dense_linear = nn.Linear(len(spec.dense), 1)
        self.offer_embed, self.offer_linear = nn.Embedding(spec.n_offers, k), nn.Embedding(spec.n_offers, 1)
        self.category_embed, self.category_linear = nn.Embedding(n_categories, k), nn.Embedding(n_categories, 1)
        for emb in (*self.cat_embed, self.offer_embed, self.category_embed):
            nn.init.normal_(emb.weight, std=0.01)
        self.deep_user = nn.Linear((len(cards) + len(spec.dense)) * k, hidden)
        self.deep_offer = nn.Linear(2 * k, hidden, bias=False)
        self.deep = nn.Sequential(nn.ReLU(), nn.Linear(hidden, hidden // 2), nn.ReLU(), nn.Linear(hidden // 2, 1))

    def fit_standardiser(self, x: np.ndarray) -> None:
        self.norm.fit(x[:, self.dense.numpy()])

    def forward(self, x: torch.Tensor, offers: torch.Tensor | None) -> torch.Tensor:
        """(N, m) logits for offer indices ``offers`` (N, m), or all offers when None."""
        codes = [x[:, s:e].argmax(dim=1) for s, e in self.cat_slices]
        z = self.norm(x[:, self.dense])
        user = torch.cat([*(emb(c)[:, None] for emb, c in zip(self.cat_embed, codes, strict=True)),
                          z[:, :, None] * self.dense_embed], dim=1)  # (N, F, k)
        first_user = self.dense_linear(z)  # (N, 1)
        for lin, c in zip(self.cat_linear, codes, strict=True):
            first_user = first_user + lin(c)
        if offers is None:
            offers = torch.arange(self.offer_embed.num_embeddings)[None]  # (1, A): broadcasts over users
        category = self.offer_category[offers]
        offer = torch.stack([self.offer_embed(offers), self.category_embed(category)], dim=2)  # (N, m, 2, k)
        first_offer = (self.offer_linear(offers) + self.category_linear(category))[..., 0]
        sum_user, sum_offer = user.sum(dim=1)[:, None], offer.sum(dim=2)
        squares = (user**2).sum(dim=(1, 2))[:, None] + (offer**2).sum(dim=(2, 3))
        fm = 0.5 * (((sum_user + sum_offer) ** 2).sum(dim=-1) - squares)
        deep = self.deep(self.deep_user(user.flatten(1))[:, None] + self.deep_offer(offer.flatten(2)))[..., 0]
        return first_user + first_offer + fm + deep


class DeepFMRecommender(PointwiseRecommender):
    name = "deepfm"
    config_class = DeepFMConfig

    def _build(self) -> nn.Module:
        return _DeepFMNet(self.spec, self.config.embed_dim, self.config.hidden_dim)
