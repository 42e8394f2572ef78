"""The one ``World`` protocol: everything that simulates users, batched over N users.

A world owns the *hidden* side of a user (latent taste, fatigue, interest, or a learned RNN
state) and answers one question: given the current state and an action per user, what are
the click, conversion and churn probabilities? The env samples outcomes from those
probabilities with shared counter-based randomness (so TrueWorld and LearnedWorld see the same
coin flips) and tells the world what happened so it can advance. Action 0 is "no offer";
action ``a >= 1`` is catalog offer ``a - 1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Catalog:
    """What the business knows about its offers (observable, unlike user tastes)."""

    category: np.ndarray  # (n_offers,) int, category of each offer
    value: np.ndarray  # (n_offers,) float, revenue when the offer converts
    discount: np.ndarray  # (n_offers,) float, cost to the business when it converts
    contact_cost: float  # cost of sending any offer (paid whether or not it converts)

    def __post_init__(self) -> None:
        n = len(self.category)
        if n == 0:
            raise ValueError("catalog: needs at least one offer")
        for name in ("value", "discount"):
            arr = getattr(self, name)
            if arr.shape != (n,):
                raise ValueError(f"catalog.{name}: expected shape ({n},), got {arr.shape}")
            if not np.all(np.isfinite(arr)) or np.any(arr < 0):
                raise ValueError(f"catalog.{name}: must be finite and >= 0")
        if self.contact_cost < 0:
            raise ValueError("catalog.contact_cost: must be >= 0")

    @property
    def n_offers(self) -> int:
        return len(self.category)

    @property
    def n_actions(self) -> int:
        return self.n_offers + 1

    @property
    def n_categories(self) -> int:
        return int(self.category.max()) + 1

    def worst_case_cost(self) -> np.ndarray:
        """(n_actions,) the most an action can cost: contact plus a discount if it converts."""
        return np.concatenate([[0.0], self.contact_cost + self.discount])


@dataclass(frozen=True)
class ProfileSchema:
    """The observable profile: categorical features (with cardinality) and numeric ones
    (with a location and scale used to standardise them in observations)."""

    categorical: dict[str, int]
    numeric: dict[str, tuple[float, float]]

    @property
    def n_encoded(self) -> int:
        return sum(self.categorical.values()) + len(self.numeric)


@dataclass
class Profiles:
    """Observable profiles of a batch of users."""

    categorical: np.ndarray  # (n, n_categorical) int64 codes
    numeric: np.ndarray  # (n, n_numeric) float64


@dataclass
class ResponseProbs:
    """Per-user probabilities for one action each; for action 0 click and conversion are 0."""

    click: np.ndarray  # p(click)
    convert: np.ndarray  # p(conversion | click)
    churn: np.ndarray  # p(churn at this step)


@runtime_checkable
class World(Protocol):
    """Batched user simulator (TrueWorld, LearnedWorld, ...)."""

    catalog: Catalog
    profile_schema: ProfileSchema
    n_users: int

    def reset_users(self, slots: np.ndarray, keys: np.ndarray) -> Profiles:
        """Draw a new user into each of ``slots`` from the uint64 ``keys``; return profiles."""
        ...

    def response_probs(self, actions: np.ndarray) -> ResponseProbs:
        """Probabilities for every slot's user if shown ``actions`` (shape (n_users,))."""
        ...

    def advance(
        self, actions: np.ndarray, click: np.ndarray, convert: np.ndarray, active: np.ndarray
    ) -> None:
        """Update the hidden state of ``active`` users after they saw ``actions``."""
        ...
