"""``mf``: implicit-feedback matrix factorisation (ALS, Hu, Koren & Volinsky 2008) over
(user, offer) clicks.

Training: p_ui = 1 if user u clicked offer i, confidence c_ui = 1 + alpha · clicks_ui, and
alternating closed-form least squares for the user and offer factors. Users are the logged
ones, and every logged user is new at act time, so the prior of a user factor is not 0 but
the mean factor of the user's *profile cohort* (the groups of one categorical profile
feature, e.g. region), re-estimated after every user step:
u = (VᵀCᵤV + λI)⁻¹ (VᵀCᵤpᵤ + λ·m_cohort).

Acting: the same formula folds in a user from the clicks seen so far in the episode (tracked
through ``observe`` as per-user click counts), so a user with no click yet gets the cohort
prior shrunk exactly as a click-less training user was, and each click moves the user towards
the clicked offers. Scores u·v are rankings, not probabilities (no logloss). The number of
sweeps is fixed; the validation users choose lambda (by click AUC: with one short episode per
user, the cohort prior usually has to dominate). Written here rather than with RecBole
(pinned ray, pickle loads broken by torch >= 2.6, network calls at import) or the
``implicit`` package (not a dependency; 40 lines of numpy suffice).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from recsys.data.replay import LoggedData
from recsys.recommenders.base import Recommender, State, require


def _weighted_grams(weights: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """(N, k, k) sum_i weights[n, i] * outer(factors[i], factors[i]), as one matrix product."""
    k = factors.shape[1]
    return (weights @ (factors[:, :, None] * factors[:, None, :]).reshape(len(factors), k * k)).reshape(-1, k, k)


@dataclass
class MFConfig:
    section: ClassVar[str] = "recommender.mf"
    factors: int = 8
    iterations: int = 10  # ALS sweeps (users, cohort means, offers)
    alpha: float = 1.0  # extra confidence per click
    # lambda (pull of the cohort prior on users, of 0 on offers): each is fitted, and the one
    # with the best click AUC on the validation users is kept
    regularization: tuple[float, ...] = (10.0, 30.0, 100.0, 300.0)
    cohort: str | None = None  # categorical profile feature defining cohorts; None = the first one
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("factors", "iterations"):
            require(self, name, getattr(self, name) >= 1, ">= 1")
        require(self, "alpha", math.isfinite(self.alpha) and self.alpha >= 0, "finite and >= 0")
        self.regularization = tuple(float(v) for v in self.regularization)
        require(self, "regularization", len(self.regularization) > 0 and all(
            math.isfinite(v) and v > 0 for v in self.regularization), "a non-empty list of finite values > 0")


class MFRecommender(Recommender):
    name = "mf"
    config_class = MFConfig
    stateful = True
    predicts_probabilities = False

    def _cohort_slice(self) -> tuple[int, int] | None:
        names, cohort = self.spec.cat_names, self.config.cohort
        if cohort is not None and cohort not in names:
            raise ValueError(f"{self.config.section}.cohort: got {cohort!r}, expected one of {names}")
        if not names:
            return None
        return tuple(self.spec.cat_slices[names.index(cohort) if cohort is not None else 0])

    def _cohorts(self, obs: np.ndarray) -> np.ndarray:
        s = self._cohort_slice()
        return np.zeros(len(obs), dtype=np.int64) if s is None else obs[:, s[0]:s[1]].argmax(axis=1)

    def _solve_users(self, clicks: np.ndarray, cohorts: np.ndarray) -> np.ndarray:
        """Closed-form user factors (N, k) from click counts (N, n_offers) and cohorts (N,)."""
        v, lam, alpha = self.offer_factors, self.lam, self.config.alpha
        a = v.T @ v + lam * np.eye(v.shape[1]) + alpha * _weighted_grams(clicks, v)
        b = ((1.0 + alpha * clicks) * (clicks > 0)) @ v + lam * self.cohort_means[cohorts]
        return np.linalg.solve(a, b[..., None])[..., 0]

    def _fit(self, train: LoggedData, validation: LoggedData, progress: bool) -> None:
        best = None
        for lam in tqdm(self.config.regularization, desc="mf (als)", disable=not progress, leave=False):
            self.lam = lam
            self._als(train)
            auc = self.offline_metrics(validation)["click_auc"]
            if best is None or auc > best[0]:
                best = (auc, lam, self.offer_factors, self.cohort_means)
        _, self.lam, self.offer_factors, self.cohort_means = best

    def _als(self, train: LoggedData) -> None:
        d, k, lam, alpha = train.data, self.config.factors, self.lam, self.config.alpha
        clicked = train.selection("click") & (d.click > 0)
        users, _ = np.nonzero(clicked)
        clicks = np.zeros((d.n_users, self.spec.n_offers))
        np.add.at(clicks, (users, d.actions[clicked] - 1), 1.0)
        cohorts = self._cohorts(train.obs[:, 0])
        s = self._cohort_slice()
        n_cohorts = 1 if s is None else s[1] - s[0]
        self.offer_factors = np.random.default_rng(self.config.seed).normal(0.0, 0.1, (self.spec.n_offers, k))
        self.cohort_means = np.zeros((n_cohorts, k))
        size = np.maximum(np.bincount(cohorts, minlength=n_cohorts), 1)[:, None]
        for _ in range(self.config.iterations):
            u = self._solve_users(clicks, cohorts)
            self.cohort_means = np.stack([np.bincount(cohorts, u[:, j], n_cohorts) for j in range(k)], 1) / size
            a = u.T @ u + lam * np.eye(k) + alpha * _weighted_grams(clicks.T, u)
            b = ((1.0 + alpha * clicks) * (clicks > 0)).T @ u
            self.offer_factors = np.linalg.solve(a, b[..., None])[..., 0]

    def initial_state(self, obs: np.ndarray) -> State:
        return {"clicks": np.zeros((len(obs), self.spec.n_offers)), "cohort": self._cohorts(obs)}

    def advance(self, state: State | None, obs: np.ndarray, actions: np.ndarray, click: np.ndarray,
                conversion: np.ndarray, active: np.ndarray) -> State:
        state = self.initial_state(obs) if state is None else state
        rows = np.flatnonzero(np.asarray(active) & np.asarray(click) & (np.asarray(actions) > 0))
        clicks = state["clicks"].copy()
        np.add.at(clicks, (rows, np.asarray(actions)[rows] - 1), 1.0)
        return {"clicks": clicks, "cohort": state["cohort"]}

    def predict(self, obs: np.ndarray, state: State | None = None) -> np.ndarray:
        state = self.initial_state(obs) if state is None else state
        out = np.zeros((len(obs), self.spec.n_actions))
        out[:, 1:] = self._solve_users(state["clicks"], state["cohort"]) @ self.offer_factors.T
        return out

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {"offer_factors": torch.as_tensor(self.offer_factors), "cohort_means": torch.as_tensor(self.cohort_means),
                "regularization": torch.tensor(self.lam)}

    def _restore(self, tensors: dict[str, torch.Tensor]) -> None:
        self.offer_factors = tensors["offer_factors"].numpy().astype(np.float64)
        self.cohort_means = tensors["cohort_means"].numpy().astype(np.float64)
        self.lam = float(tensors["regularization"])
