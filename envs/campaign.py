"""Campaign rules shared by every world: horizon, budget, caps, and what a reward is.

``reward_of`` is the one expected-reward formula: the env's step, the reference policies, the
value ranker and the OPE reward models all call it, so every one of them follows
``campaign.reward``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from envs.checks import check_field_types, require
from envs.world import Catalog

REWARDS = ("click", "conversion", "profit", "weighted")


@dataclass
class CampaignConfig:
    """Campaign rules: horizon, budget, caps, reward. Same for every world."""

    horizon: int = 20
    budget: float = 40.0  # per user, covers contact costs and discounts
    frequency_cap: int = 3  # sends of the same offer per user and campaign
    reward: str = "profit"  # click | conversion | profit | weighted
    reward_weights: dict[str, float] = field(
        default_factory=lambda: {"click": 0.0, "conversion": 0.0, "profit": 1.0}
    )
    invalid_action: str = "error"  # error | penalize
    invalid_action_penalty: float = 1.0
    history_decay: float = 0.8  # decay of the exposure/click summaries in observations

    def __post_init__(self) -> None:
        check_field_types(self, "campaign")
        if self.horizon < 1:
            raise ValueError(f"campaign.horizon: must be >= 1, got {self.horizon}")
        if self.budget <= 0:
            raise ValueError(f"campaign.budget: must be > 0, got {self.budget}")
        if self.frequency_cap < 1:
            raise ValueError(f"campaign.frequency_cap: must be >= 1, got {self.frequency_cap}")
        if self.reward not in REWARDS:
            raise ValueError(f"campaign.reward: got {self.reward!r}, expected one of {REWARDS}")
        unknown = set(self.reward_weights) - {"click", "conversion", "profit"}
        if unknown:
            raise ValueError(
                f"campaign.reward_weights: unknown key(s) {sorted(unknown)}, "
                "expected click, conversion, profit"
            )
        if self.invalid_action not in ("error", "penalize"):
            raise ValueError(
                f"campaign.invalid_action: got {self.invalid_action!r}, expected 'error' or 'penalize'"
            )
        require(self.invalid_action_penalty >= 0, "campaign.invalid_action_penalty", ">= 0 (a cost subtracted "
                "from the reward)", self.invalid_action_penalty)
        if self.reward == "weighted":
            w = [self.reward_weights.get(k, 0.0) for k in ("click", "conversion", "profit")]
            require(all(isinstance(x, int | float) and math.isfinite(x) for x in w) and any(x != 0 for x in w),
                    "campaign.reward_weights", "finite numbers, not all 0, with reward=weighted", self.reward_weights)
        if not 0.0 <= self.history_decay < 1.0:
            raise ValueError(f"campaign.history_decay: must be in [0, 1), got {self.history_decay}")

    def weights(self) -> tuple[float, float, float]:
        """(click, conversion, profit) weights of the reward."""
        if self.reward == "weighted":
            w = self.reward_weights
            return (w.get("click", 0.0), w.get("conversion", 0.0), w.get("profit", 0.0))
        return {"click": (1.0, 0.0, 0.0), "conversion": (0.0, 1.0, 0.0), "profit": (0.0, 0.0, 1.0)}[
            self.reward
        ]

    def reward_of(self, catalog: Catalog, actions: np.ndarray, click: np.ndarray, convert: np.ndarray) -> np.ndarray:
        """The reward of outcomes; with probabilities (``click`` = p(click), ``convert`` =
        p(click and convert)) the *expected* reward, as the reward is linear in the outcomes.
        ``actions`` broadcasts against the outcomes (e.g. ``arange(n_actions)`` for all)."""
        revenue, cost = outcome_money(catalog, actions, click, convert)
        w_click, w_conv, w_profit = self.weights()
        return w_click * click + w_conv * convert + w_profit * (revenue - cost)

    def expected_reward(self, catalog: Catalog, p_click: np.ndarray, p_convert: np.ndarray) -> np.ndarray:
        """(..., A) expected immediate reward of *every* action from p(click) and
        p(convert | click) of shape (..., A); action 0 sends nothing (no click, no cost). What
        greedy policies rank by: the oracle, the value ranker, OPE's reward models."""
        actions = np.arange(p_click.shape[-1])
        click = np.where(actions > 0, p_click, 0.0)
        return self.reward_of(catalog, actions, click, click * p_convert)


def outcome_money(catalog: Catalog, actions: np.ndarray, click: np.ndarray, convert: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(revenue, cost) of sending ``actions`` (0 = nothing) with these conversions: the
    offer's value on conversion; contact cost per send plus the discount on conversion."""
    actions = np.asarray(actions)
    offers = np.maximum(actions - 1, 0)
    sent = actions > 0
    revenue = np.where(sent, catalog.value[offers] * convert, 0.0)
    cost = np.where(sent, catalog.contact_cost + catalog.discount[offers] * convert, 0.0)
    return revenue, cost
