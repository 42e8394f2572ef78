"""``value_ranker``: send the offer with the highest expected reward, or nothing.

The reward is the campaign's (``campaign.reward``, through the one formula
``envs.campaign.CampaignConfig.expected_reward``); for profit, expected profit(a) =
p(click | x, a) · p(convert | click, x, a) · (value_a − discount_a) − contact_cost, and 0 for
"no offer", so unlike the click rankers it rests whenever no offer is expected to pay for its
contact (``always_sends = False``). Both probabilities come from
the same pointwise model class (``model``: logistic or DeepFM): the click model on all
exposures, the conversion model on clicked exposures, where p(convert | click) is observed
(exposures are chosen by the logging policy, not by clicks, so conditioning on the click is
the only selection; the ESMM alternative is what ``recsys.simulator.response_model`` does). It is
myopic by construction: the one-step value, not the campaign's. Written here rather than
with DeepCTR-Torch (pinned deps, pickle loads broken by torch >= 2.6, network calls at
import).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np
import torch

from recsys.data.replay import LoggedData
from recsys.recommenders.base import PointwiseRecommender, Recommender, State, require
from recsys.recommenders.deepfm import DeepFMConfig, DeepFMRecommender
from recsys.recommenders.logistic import LogisticConfig, LogisticRecommender

MODELS: dict[str, type[PointwiseRecommender]] = {"logistic": LogisticRecommender, "deepfm": DeepFMRecommender}
_PARTS = ("click", "conversion")


@dataclass
class ValueRankerConfig:
    section: ClassVar[str] = "recommender.value_ranker"
    model: str = "logistic"  # logistic | deepfm, for both probabilities
    click: dict[str, Any] = field(default_factory=dict)  # overrides of the click model's config
    conversion: dict[str, Any] = field(default_factory=dict)  # overrides of the conversion model's config

    def __post_init__(self) -> None:
        require(self, "model", self.model in MODELS, f"one of {tuple(MODELS)}")
        for part in _PARTS:
            self.part(part)  # validates the overrides now, not after the click model has trained

    def part(self, target: str) -> LogisticConfig | DeepFMConfig:
        overrides = {**getattr(self, target), "target": target}
        config_class = MODELS[self.model].config_class
        unknown = set(overrides) - {f.name for f in fields(config_class)}
        require(self, target, not unknown, f"a dict of {config_class.__name__} fields (unknown: {sorted(unknown)})")
        return config_class(**overrides)


class ValueRankerRecommender(Recommender):
    name = "value_ranker"
    config_class = ValueRankerConfig
    always_sends = False

    def _parts(self) -> dict[str, PointwiseRecommender]:
        parts = {p: MODELS[self.config.model](self.config.part(p)) for p in _PARTS}
        for part in parts.values():
            part.spec = self.spec
        return parts

    def _fit(self, train: LoggedData, validation: LoggedData, progress: bool) -> None:
        self.models = self._parts()
        for part in self.models.values():
            part.fit(train, validation, progress)

    def predict(self, obs: np.ndarray, state: State | None = None) -> np.ndarray:
        return self.models["click"].predict(obs)

    def scores(self, obs: np.ndarray, state: State | None = None) -> np.ndarray:
        """(N, n_actions) expected one-step reward under the logs' ``campaign.reward`` (profit:
        p(click) p(convert | click) (value - discount) - contact cost); 0 for "no offer"."""
        return self.spec.expected_reward(self.models["click"].predict(obs), self.models["conversion"].predict(obs))

    def offline_metrics(self, test: LoggedData, k: int = 5) -> dict[str, float]:
        """The click model's metrics and the conversion model's (on clicked exposures)."""
        return {**self.models["click"].offline_metrics(test, k), **self.models["conversion"].offline_metrics(test, k)}

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {f"{p}.{k}": v for p, part in self.models.items() for k, v in part._tensors().items()}

    def _restore(self, tensors: dict[str, torch.Tensor]) -> None:
        self.models = self._parts()
        for p, part in self.models.items():
            part._restore({k[len(p) + 1:]: v for k, v in tensors.items() if k.startswith(f"{p}.")})
