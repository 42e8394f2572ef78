"""The one ``World`` protocol: everything that simulates users, batched over N users.

A world owns the *hidden* side of a user (latent taste, fatigue, interest, or a learned RNN
state) and answers one question: given the current state and an action per user, what are
the click, conversion and churn probabilities? The env samples outcomes from those
probabilities with shared counter-based randomness (so TrueWorld and LearnedWorld see the same
coin flips) and tells the world what happened so it can advance. Action 0 is "no offer";
action ``a >= 1`` is catalog offer ``a - 1``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Protocol, runtime_checkable

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
        if self.category.ndim != 1 or not np.issubdtype(self.category.dtype, np.integer) or self.category.min() < 0:
            raise ValueError("catalog.category: expected one non-negative integer code per offer")
        unused = sorted(set(range(int(self.category.max()) + 1)) - set(self.category.tolist()))
        if unused:
            raise ValueError(f"catalog.category: codes must be 0..{int(self.category.max())} with none unused "
                             f"(unused: {unused[:5]}); renumber the categories, each code sizes the observation")
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

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (the ``catalog.json`` of a simulator directory)."""
        return {"category": self.category.tolist(), "value": self.value.tolist(),
                "discount": self.discount.tolist(), "contact_cost": self.contact_cost}

    @classmethod
    def from_json(cls, d: Any) -> Catalog:
        """The inverse of ``to_json``; one-line errors for a missing key or a non-numeric value."""
        keys = ("category", "value", "discount", "contact_cost")
        if not isinstance(d, dict) or any(k not in d for k in keys):
            missing = [k for k in keys if not isinstance(d, dict) or k not in d]
            raise ValueError(f"catalog: missing {missing}; a catalog is a JSON object with {', '.join(keys)}")
        try:
            category = np.asarray(d["category"])
            if category.dtype.kind not in "iu":
                raise ValueError("category codes must be integers")
            return cls(category=category.astype(np.int64), value=np.asarray(d["value"], dtype=float),
                       discount=np.asarray(d["discount"], dtype=float), contact_cost=float(d["contact_cost"]))
        except (TypeError, ValueError) as exc:
            message = str(exc).splitlines()[0]
            raise ValueError(message if message.startswith("catalog") else f"catalog: {message}") from None

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


@dataclass(frozen=True)
class Profiles:
    """Observable profiles of a batch of users, one row each: what a world returns for new
    users, what ``recsys.data.profiles.profiles_from_logs`` reads from logs and what a user
    GAN fits, samples and is judged on.

    The arrays are all a world needs to return; the names, cardinalities and user ids are the
    optional description that fitting a profile model needs (each is checked against the
    arrays when given). Arrays are cast to int64 / float64 and checked: 2-d, one row per user,
    non-negative codes (below each cardinality when given), finite numerics."""

    categorical: np.ndarray  # (n, n_categorical) int64 codes
    numeric: np.ndarray  # (n, n_numeric) float64
    categorical_names: tuple[str, ...] | None = None
    numeric_names: tuple[str, ...] | None = None
    cardinalities: tuple[int, ...] | None = None  # number of codes of each categorical feature
    user_ids: np.ndarray | None = None  # (n,) int64, when the rows come from logs

    def __post_init__(self) -> None:
        cat = np.asarray(self.categorical, dtype=np.int64)
        num = np.asarray(self.numeric, dtype=np.float64)
        if cat.ndim != 2 or num.ndim != 2:
            raise ValueError(f"profiles: categorical and numeric must be 2-d, got shapes {cat.shape} and {num.shape}")
        if len(cat) != len(num):
            raise ValueError(f"profiles: categorical has {len(cat)} rows but numeric has {len(num)}")
        object.__setattr__(self, "categorical", cat)
        object.__setattr__(self, "numeric", num)
        for name, width in (("categorical_names", cat.shape[1]), ("numeric_names", num.shape[1]),
                            ("cardinalities", cat.shape[1])):
            value = getattr(self, name)
            if value is None:
                continue
            value = tuple(int(v) for v in value) if name == "cardinalities" else tuple(str(v) for v in value)
            if len(value) != width:
                raise ValueError(f"profiles.{name}: {len(value)} entries for {width} columns; they must match")
            object.__setattr__(self, name, value)
        if cat.size and cat.min() < 0:
            raise ValueError("profiles.categorical: codes must be >= 0")
        if self.cardinalities is not None and len(cat):
            for j, card in enumerate(self.cardinalities):
                if cat[:, j].max() >= card:
                    feature = self.categorical_names[j] if self.categorical_names is not None else j
                    raise ValueError(f"profiles.categorical.{feature}: codes must be in [0, {card})")
        if not np.all(np.isfinite(num)):
            raise ValueError("profiles.numeric: values must be finite")
        if self.user_ids is not None:
            ids = np.asarray(self.user_ids, dtype=np.int64)
            if ids.shape != (len(cat),):
                raise ValueError(f"profiles.user_ids: expected shape ({len(cat)},), got {ids.shape}")
            object.__setattr__(self, "user_ids", ids)

    @classmethod
    def trusted(cls, categorical: np.ndarray, numeric: np.ndarray) -> Profiles:
        """Profiles from arrays a world's own draw built (int64 codes below each cardinality,
        finite float64), without ``__post_init__``'s checks: they cost ~10 us, as much as
        drawing the user, on every reset of a one-user env. Never for data from outside."""
        profiles = object.__new__(cls)
        for f in fields(cls):
            object.__setattr__(profiles, f.name, None)
        object.__setattr__(profiles, "categorical", categorical)
        object.__setattr__(profiles, "numeric", numeric)
        return profiles

    def __len__(self) -> int:
        return len(self.categorical)

    @property
    def n_users(self) -> int:
        return len(self.categorical)

    def described(self, needed_by: str) -> Profiles:
        """``self``, after checking it carries the names and cardinalities ``needed_by`` uses."""
        missing = [n for n in ("categorical_names", "numeric_names", "cardinalities") if getattr(self, n) is None]
        if missing:
            raise ValueError(f"profiles: {needed_by} needs {', '.join(missing)}; pass them to Profiles "
                             "(profiles_from_logs does)")
        return self

    def subset(self, rows: np.ndarray) -> Profiles:
        """The profiles of ``rows`` (a boolean mask or integer indices), description kept."""
        return Profiles(self.categorical[rows], self.numeric[rows], self.categorical_names, self.numeric_names,
                        self.cardinalities, None if self.user_ids is None else self.user_ids[rows])


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


# ------------------------------------------------------------------ what a learned world is made of
@runtime_checkable
class UserSampler(Protocol):
    """Draws observable profiles, each a pure function of its user's uint64 key (the user GAN)."""

    categorical_names: tuple[str, ...]
    numeric_names: tuple[str, ...]

    def sample_keys(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(categorical codes (n, n_cat), numeric values (n, n_num)) of the users of ``keys``."""
        ...


@runtime_checkable
class StepResponseModel(Protocol):
    """A response model run step by step over a batch of users (torch tensors): what
    ``LearnedWorld`` needs. ``spec`` tells what it was fitted on: ``n_actions``,
    ``profile_schema`` (a ``ProfileSchema``), ``cat_names``, ``num_names`` and ``num_loc``."""

    spec: Any

    def initial_state(self, cat: Any, num: Any) -> tuple[Any, Any]:
        """(profile vector u, history state) of new users."""
        ...

    def step_logits(self, u: Any, state: Any, actions: Any) -> Any:
        """(N, 3) logits of click, conversion given click, churn for ``actions``."""
        ...

    def advance(self, state: Any, actions: Any, click: Any, convert: Any) -> Any:
        """The history state after the users saw ``actions`` with these outcomes."""
        ...
