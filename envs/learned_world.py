"""LearnedWorld: the simulator learned from logs only, behind the same ``World`` protocol.

Users are drawn from the user GAN (each profile a pure function of the user's key, like in
TrueWorld), responses come from the response model, and the model's history state (GRU hidden
vector or attention buffer) is the simulator's hidden user state, never observed by agents.
All N users advance with one batched torch forward per step.

The world takes its parts through the protocols of ``envs.world`` (``StepResponseModel``,
``UserSampler``); loading a fitted simulator directory is ``recsys.simulator.io``'s job.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from envs import rng
from envs.campaign import CampaignConfig
from envs.pessimism import Pessimism
from envs.world import Catalog, Profiles, ProfileSchema, ResponseProbs, StepResponseModel, UserSampler

_STREAM_MEMBER = 0x4D454D42  # "MEMB": the ensemble member a user follows (member_per_user)


def reward_spread(p_click: np.ndarray, p_convert: np.ndarray, actions: np.ndarray, catalog: Catalog,
                  campaign: CampaignConfig) -> np.ndarray:
    """Std over the members (axis 0) of the expected reward of ``actions`` given each member's
    p(click) and p(convert | click), shape (K, ...); 0 where the action is "no offer". The one
    u(s, a), in the simulator (``LearnedWorld``) and on logged data (its calibration)."""
    click = np.where(actions > 0, p_click, 0.0)
    return campaign.reward_of(catalog, actions, click, click * p_convert).std(axis=0)


def _where(keep_new: torch.Tensor, new: Any, old: Any) -> Any:
    """Row-wise select between two history states (tensors or dicts of tensors)."""
    if isinstance(new, dict):
        return {k: _where(keep_new, new[k], old[k]) for k in new}
    return torch.where(keep_new.view(-1, *([1] * (new.dim() - 1))), new, old)


def _assign(state: Any, rows: torch.Tensor, new: Any) -> None:
    """Write ``new`` into the ``rows`` of a history state (tensors or nested dicts of tensors)."""
    if isinstance(state, dict):
        for k in state:
            _assign(state[k], rows, new[k])
    else:
        state[rows] = new


def _merge(have: np.ndarray, old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Rows ``old`` where ``have``, ``new`` elsewhere."""
    out = np.empty((len(have), *old.shape[1:]), dtype=old.dtype)
    out[have], out[~have] = old, new
    return out


class LearnedWorld:
    """Batched learned simulator; implements the ``World`` protocol."""

    def __init__(self, response_model: StepResponseModel, user_sampler: UserSampler, catalog: Catalog,
                 n_users: int = 1, pessimism: Pessimism | None = None) -> None:
        spec = response_model.spec
        self.pessimism = pessimism or Pessimism()
        self.n_members = int(getattr(response_model, "n_members", 1))
        if self.pessimism.active and self.n_members < 2:
            raise ValueError("simulator.pessimism: needs an ensemble response model "
                             "(simulator.response_model.ensemble_size >= 2) to measure disagreement")
        self._member_probs: tuple[np.ndarray, np.ndarray] | None = None  # (actions, (K, N, 3)) of this step
        self._member = torch.zeros(n_users, dtype=torch.long)  # member_per_user: each slot's member
        if spec.n_actions != catalog.n_actions:
            raise ValueError(
                f"simulator: response model was trained for {spec.n_actions - 1} offers but the catalog has "
                f"{catalog.n_offers}; refit the simulator on logs from this catalog"
            )
        if tuple(user_sampler.categorical_names) != tuple(spec.cat_names) or tuple(user_sampler.numeric_names) != tuple(spec.num_names):
            raise ValueError(
                "simulator: the user GAN and the response model were fitted on different profile features "
                f"({list(user_sampler.categorical_names) + list(user_sampler.numeric_names)} vs "
                f"{spec.cat_names + spec.num_names}); refit both on the same logs"
            )
        self.model, self.sampler, self.catalog, self.n_users = response_model.eval(), user_sampler, catalog, n_users
        self.profile_schema: ProfileSchema = spec.profile_schema
        with torch.inference_mode():
            cat = torch.zeros(n_users, len(spec.cat_names), dtype=torch.long)
            num = torch.tensor(spec.num_loc, dtype=torch.float32).expand(n_users, -1).clone()
            self._u, self._state = self.model.initial_state(cat, num)
        # users drawn ahead by prefetch_users: sorted keys and their (cat, num) profile rows
        self._cache_keys = np.zeros(0, dtype=np.uint64)
        self._cache: tuple[np.ndarray, np.ndarray] | None = None

    def _draw(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Profiles (categorical, numeric) of the users of ``keys``."""
        cat, num = self.sampler.sample_keys(keys)
        return np.asarray(cat, dtype=np.int64), np.asarray(num, dtype=np.float64)

    def prefetch_users(self, keys: np.ndarray) -> None:
        """Draw the profiles of ``keys`` now, in one batch, for later ``reset_users`` calls; the
        store then holds exactly these users (rows already drawn are reused, others dropped).

        Drawing a profile costs a fixed per-call overhead (the user GAN runs on fixed chunks of
        256 rows), so an autoresetting env that resets a few slots per step would spend most of
        its step there; ``CampaignVectorEnv`` prefetches the next episodes' users of every slot
        instead. A profile is a pure function of the key (bitwise: the GAN runs on fixed
        chunks), so prefetching changes no profile. The response model's initial state is
        computed when the users arrive (``reset_users``): its cost is per row, and storing it
        meant copying (users, K, hidden) tensors at every prefetch (a third of an ensemble
        step at N = 4,096)."""
        keys = np.unique(np.asarray(keys, dtype=np.uint64))  # sorted
        rows = self._cached_rows(keys)
        have = rows >= 0
        old = None if self._cache is None else tuple(part[rows[have]] for part in self._cache)
        if have.all():
            self._cache = old
        else:
            new = self._draw(keys[~have])
            self._cache = new if not have.any() else tuple(_merge(have, o, n) for o, n in zip(old, new, strict=True))
        self._cache_keys = keys

    def _cached_rows(self, keys: np.ndarray) -> np.ndarray:
        """Row of each key in the prefetched store, -1 where it is not there."""
        stored = self._cache_keys
        if not len(stored):
            return np.full(len(keys), -1, dtype=np.int64)
        rows = np.minimum(np.searchsorted(stored, keys), len(stored) - 1)
        return np.where(stored[rows] == keys, rows, -1)

    def reset_users(self, slots: np.ndarray, keys: np.ndarray) -> Profiles:
        self._member_probs = None  # new users in some slots: cached member probabilities are stale
        keys = np.asarray(keys, dtype=np.uint64)
        rows = self._cached_rows(keys)
        slots_t = torch.from_numpy(np.asarray(slots, dtype=np.int64))
        if len(rows) and rows.min() >= 0:  # every user was prefetched
            cat, num = (part[rows] for part in self._cache)
        else:
            cat, num = self._draw(keys)
        with torch.inference_mode():
            u, state = self.model.initial_state(torch.as_tensor(cat), torch.as_tensor(num, dtype=torch.float32))
            self._u[slots_t] = u
            _assign(self._state, slots_t, state)
            if self.pessimism.member_per_user:  # a pure function of the user's key, like its profile
                member = (rng.uniform(keys, _STREAM_MEMBER) * self.n_members).astype(np.int64)
                self._member[slots_t] = torch.from_numpy(np.minimum(member, self.n_members - 1))
        return Profiles(categorical=cat, numeric=num)

    def response_probs(self, actions: np.ndarray) -> ResponseProbs:
        a = torch.as_tensor(np.asarray(actions, dtype=np.int64))
        with torch.inference_mode():
            if self.pessimism.active:  # one ensemble forward serves the probabilities and the pessimism
                members = self.model.member_logits(self._u, self._state, a)
                if self.pessimism.member_per_user:
                    logits = members[self._member, torch.arange(len(a))]
                else:
                    logits = self.model.mean_logits(members)
                if self.pessimism.shapes_steps:  # pessimism_step reads them this step
                    self._member_probs = (np.array(actions, copy=True), torch.sigmoid(members).double().numpy())
            else:
                logits = self.model.step_logits(self._u, self._state, a)
            p = torch.sigmoid(logits).double().numpy()
        rest = np.asarray(actions) == 0
        return ResponseProbs(click=np.where(rest, 0.0, p[:, 0]), convert=np.where(rest, 0.0, p[:, 1]), churn=p[:, 2])

    def reward_uncertainty(self, actions: np.ndarray, campaign: CampaignConfig) -> np.ndarray:
        """(N,) u(s, a): the standard deviation over the ensemble's members of the expected
        reward (``campaign.reward``, in its units) of each user's action now; 0 for "no offer".
        Every pessimism mechanism (``envs.pessimism``) reads it: the plausible worlds disagree
        off the logged distribution, where the simulator cannot be trusted."""
        a = np.asarray(actions, dtype=np.int64)
        cached = self._member_probs
        if cached is not None and np.array_equal(cached[0], a):  # this step's response_probs computed them
            p = cached[1]
        else:
            with torch.inference_mode():
                p = torch.sigmoid(self.model.member_logits(self._u, self._state, torch.as_tensor(a))).double().numpy()
        return reward_spread(p[..., 0], p[..., 1], a, self.catalog, campaign)

    def pessimism_step(self, actions: np.ndarray, campaign: CampaignConfig
                       ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """(what the env subtracts from each reward, which users halt now, which steps are
        above the threshold), None where the world's pessimism has no such part; computed on
        the state the action was chosen in."""
        pess = self.pessimism
        if not pess.shapes_steps:
            return None, None, None
        u = self.reward_uncertainty(actions, campaign)
        penalty = pess.reward_penalty * u if pess.reward_penalty else None
        uncertain = None if pess.threshold is None else u > pess.threshold
        halted = uncertain if pess.halt else None
        if halted is not None and pess.halt_penalty:
            penalty = pess.halt_penalty * halted + (0.0 if penalty is None else penalty)
        return penalty, halted, uncertain

    def advance(self, actions: np.ndarray, click: np.ndarray, convert: np.ndarray, active: np.ndarray) -> None:
        self._member_probs = None  # the state moves on: this step's member probabilities are stale
        if not np.any(active):
            return
        # advancing every row and selecting is cheaper than gathering and scattering the active ones
        a = torch.as_tensor(np.asarray(actions, dtype=np.int64))
        c = torch.as_tensor(np.asarray(click, dtype=np.float32))
        v = torch.as_tensor(np.asarray(convert, dtype=np.float32))
        with torch.inference_mode():
            new = self.model.advance(self._state, a, c, v)
            self._state = new if np.all(active) else _where(torch.as_tensor(np.asarray(active)), new, self._state)
