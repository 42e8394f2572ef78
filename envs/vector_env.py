"""The batched core: one vectorised step for N users, as a ``gymnasium.vector.VectorEnv``.

Everything that acts on users (the single-user ``CampaignEnv``, the SB3 adapter, rollouts,
log generation) runs through this class; a single env is this core with N = 1.

Observation (float32, see ``observation_names``): the user's observable profile (one-hot
categoricals, standardised numerics clipped to [-5, 5]) followed by a summary of the
observable history: decayed exposures per offer and per category, decayed clicks per
category, whether the last offer was clicked, conversions so far, time since the last offer,
sends used per offer (of the frequency cap), time left and budget left. The observation
buffer *is* the history state, updated in place; the world's hidden state never enters it.

Action: ``Discrete(n_offers + 1)``; 0 sends nothing. ``action_masks()`` marks offers that hit
the per-offer frequency cap or whose worst-case cost (contact + discount) exceeds the budget
left, so the budget can never go negative. A masked action raises ``ValueError`` when
``invalid_action="error"`` (the default: a bug in a policy should be loud) or, with
``"penalize"``, is replaced by "no offer" and costs ``invalid_action_penalty`` reward (for
agents without masking, e.g. plain PPO).

Episodes end (``terminated``) on churn or at the end of the campaign horizon; the horizon is
part of the task (time left is observed), so it is not a truncation. A pessimistic world
(``envs.pessimism``) may also charge a penalty on each reward, halt users (a termination;
``info["halted"]``) and mark steps off the logged distribution (``info["uncertain"]``).

Autoreset follows gymnasium's ``AutoresetMode``: ``NEXT_STEP`` (gymnasium's default; the step
after a termination resets the slot and ignores its action), ``SAME_STEP`` (reset at once;
``info["final_obs"]``/``info["_final_obs"]`` hold the last observation; what the SB3 adapter
uses) or ``DISABLED`` (a finished user stays finished, with reward 0, until
``reset(options={"reset_mask": ...})``).

Randomness is counter-based (``envs.rng``): slot *i* reset with seed ``s`` gets the users and
coin flips a single env reset with seed ``s + i`` gets, whatever the other slots do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs import rng
from envs.campaign import CampaignConfig, outcome_money
from envs.observation import ObservationLayout
from envs.world import World

_NUMERIC_CLIP = 5.0
_STREAM_CLICK, _STREAM_CONVERT, _STREAM_CHURN = 1, 2, 3
_STREAMS = np.array([_STREAM_CLICK, _STREAM_CONVERT, _STREAM_CHURN])
_PREFETCH_USERS = 2048  # users an autoresetting env draws ahead in one batch (see _prefetch)


class CampaignVectorEnv(VectorEnv):
    """N users of one world, stepped together."""

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        world: World,
        campaign: CampaignConfig | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
    ) -> None:
        if not isinstance(world.n_users, int | np.integer) or world.n_users < 1:
            raise ValueError(f"num_envs: a batched env needs at least 1 user, got {world.n_users!r}")
        self.world = world
        self.campaign = campaign or CampaignConfig()
        self.catalog = world.catalog
        self.num_envs = world.n_users
        self.autoreset_mode = AutoresetMode(autoreset_mode)
        self.metadata = {**self.metadata, "autoreset_mode": self.autoreset_mode}
        self.layout = ObservationLayout(world)
        self.observation_names = tuple(self.layout.names)
        self.single_observation_space = self._observation_space()
        self.single_action_space = spaces.Discrete(self.catalog.n_actions)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.render_mode = None
        self.closed = False
        self._worst_cost = self.catalog.worst_case_cost()
        n, d = self.num_envs, len(self.layout.names)
        self._obs = np.zeros((n, d), dtype=np.float32)
        self._slot_keys = np.zeros(n, dtype=np.uint64)
        self._episode = np.zeros(n, dtype=np.int64)
        self._user_keys = np.zeros(n, dtype=np.uint64)
        self._t = np.zeros(n, dtype=np.int64)
        self._budget = np.zeros(n)
        self._sends = np.zeros((n, self.catalog.n_offers), dtype=np.int64)
        self._since_offer = np.zeros(n, dtype=np.int64)
        self._done = np.zeros(n, dtype=bool)
        self._seeded = False
        # worlds that can draw users ahead (LearnedWorld) get each slot's next episodes' users
        # in one batch; see _prefetch. _prefetched[i]: slot i's users are drawn up to that episode
        self._prefetch_users = getattr(world, "prefetch_users", None)
        # a pessimistic world (LearnedWorld, envs.pessimism) charges penalties on rewards and halts users
        pessimism = getattr(world, "pessimism", None)
        self._pessimism_step = world.pessimism_step if pessimism is not None and pessimism.shapes_steps else None
        self._prefetch_depth = max(4, -(-_PREFETCH_USERS // n))
        self._prefetched = np.zeros(n, dtype=np.int64)
        schema = world.profile_schema
        loc_scale = np.array(list(schema.numeric.values()), dtype=np.float64).reshape(-1, 2)
        self._num_loc, self._num_scale = loc_scale[:, 0], np.where(loc_scale[:, 1] > 0, loc_scale[:, 1], 1.0)
        self.profile_categorical = np.zeros((n, len(schema.categorical)), dtype=np.int64)
        self.profile_numeric = np.zeros((n, len(schema.numeric)))

    # ------------------------------------------------------------------ spaces
    def _observation_space(self) -> spaces.Box:
        lay, d = self.layout, len(self.layout.names)
        high = np.ones(d, dtype=np.float32)
        low = np.zeros(d, dtype=np.float32)
        low[lay.profile_num], high[lay.profile_num] = -_NUMERIC_CLIP, _NUMERIC_CLIP
        cap = np.float32(1.0 / (1.0 - self.campaign.history_decay))
        for s in (lay.offer_exposure, lay.category_exposure, lay.category_clicks):
            high[s] = cap
        return spaces.Box(low=low, high=high, dtype=np.float32)

    # ------------------------------------------------------------------ reset
    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        mask = np.ones(self.num_envs, dtype=bool)
        if options and "reset_mask" in options:
            mask = np.asarray(options["reset_mask"], dtype=bool)
            if mask.shape != (self.num_envs,):
                raise ValueError(f"options['reset_mask']: expected shape ({self.num_envs},), got {mask.shape}")
        if seed is not None:
            try:
                seeds = np.asarray(seed, dtype=np.int64)
            except (OverflowError, TypeError, ValueError):
                raise ValueError(f"seed: expected an int in [0, 2**63) or {self.num_envs} of them, got {seed!r}") from None
            if seeds.ndim == 0:
                seeds = seeds + np.arange(self.num_envs)
            if seeds.shape != (self.num_envs,):
                raise ValueError(f"seed: expected an int or {self.num_envs} ints, got shape {seeds.shape}")
            self._slot_keys[mask] = rng.seed_key(seeds[mask])
            self._episode[mask] = 0
            self._prefetched[mask] = 0
            self._seeded = True
        elif not self._seeded:
            entropy = np.random.SeedSequence().generate_state(self.num_envs, dtype=np.uint64)
            self._slot_keys[:] = entropy
            self._prefetched[:] = 0
            self._seeded = True
        else:
            self._episode[mask] += 1
        self._reset_slots(np.flatnonzero(mask))
        return self._obs.copy(), {}

    def _prefetch(self, slots: np.ndarray) -> None:
        """Before an autoreset of ``slots``: if the world can draw users ahead and some slot's
        next user is not drawn yet, draw the users of every slot's next ``_prefetch_depth``
        episodes in one batch (their keys are known: slot key and episode number). Autoresets
        hit a few slots per step, and drawing a handful of users costs nearly as much as
        drawing a thousand (LearnedWorld: ~2/3 of a step at N = 64 without this)."""
        if self._prefetch_users is None or np.all(self._episode[slots] < self._prefetched[slots]):
            return
        first = self._episode + 1  # the other slots' current users are drawn already
        first[slots] = self._episode[slots]
        episodes = first[:, None] + np.arange(self._prefetch_depth)[None]
        self._prefetch_users(rng.combine(self._slot_keys[:, None], episodes).ravel())
        self._prefetched = first + self._prefetch_depth

    def _reset_slots(self, slots: np.ndarray, autoreset: bool = False) -> None:
        if len(slots) == 0:
            return
        if autoreset:
            self._prefetch(slots)
        lay = self.layout
        self._user_keys[slots] = rng.combine(self._slot_keys[slots], self._episode[slots])
        profiles = self.world.reset_users(slots, self._user_keys[slots])
        self.profile_categorical[slots] = profiles.categorical
        self.profile_numeric[slots] = profiles.numeric
        obs = self._obs[slots]
        obs[:] = 0.0
        for j, s in enumerate(lay.profile_cat):
            codes = profiles.categorical[:, j]
            obs[np.arange(len(slots)), s.start + codes] = 1.0
        if self._num_loc.size:
            z = (profiles.numeric - self._num_loc) / self._num_scale
            obs[:, lay.profile_num] = np.clip(z, -_NUMERIC_CLIP, _NUMERIC_CLIP)
        obs[:, lay.since_offer] = 1.0
        obs[:, lay.time_left] = 1.0
        obs[:, lay.budget_left] = 1.0
        self._obs[slots] = obs
        self._t[slots] = 0
        self._budget[slots] = self.campaign.budget
        self._sends[slots] = 0
        self._since_offer[slots] = self.campaign.horizon
        self._done[slots] = False

    # ------------------------------------------------------------------ masks
    def action_masks(self) -> np.ndarray:
        """(N, n_actions) bool: which actions each user may receive now."""
        mask = np.empty((self.num_envs, self.catalog.n_actions), dtype=bool)
        mask[:, 0] = True
        mask[:, 1:] = self._sends < self.campaign.frequency_cap
        mask &= self._worst_cost[None, :] <= self._budget[:, None] + 1e-9
        return mask

    def _allowed(self, actions: np.ndarray) -> np.ndarray:
        """(N,) bool: ``action_masks()[i, actions[i]]``, without building the whole mask."""
        rows = np.arange(self.num_envs)
        capped = self._sends[rows, np.maximum(actions - 1, 0)] >= self.campaign.frequency_cap
        return (actions == 0) | (~capped & (self._worst_cost[actions] <= self._budget + 1e-9))

    def _check_actions(self, actions: np.ndarray) -> np.ndarray:
        if type(actions) is np.ndarray and actions.dtype == np.int64 and actions.shape == (self.num_envs,):
            if actions.size == 0 or (actions.min() >= 0 and actions.max() < self.catalog.n_actions):
                return actions  # the common case (SB3, rollouts), checked with two reductions
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,):  # (N, 1) from some agents is fine; (2, 4) for 8 users is not
            actions = actions.reshape(-1) if actions.shape == (self.num_envs, 1) else actions
        if actions.shape != (self.num_envs,):
            raise ValueError(f"actions: expected shape ({self.num_envs},), got {np.shape(actions)}")
        if actions.dtype.kind not in "iuf":  # bools, strings, objects, None: not action numbers
            raise ValueError(f"actions: expected integers in [0, {self.catalog.n_offers}], got dtype {actions.dtype}")
        if not np.issubdtype(actions.dtype, np.integer):
            if not np.all(np.isfinite(actions)) or np.any(actions != np.round(actions)):
                raise ValueError(f"actions: expected integers in [0, {self.catalog.n_offers}], got {actions.dtype} values")
            actions = actions.astype(np.int64)
        bad = (actions < 0) | (actions >= self.catalog.n_actions)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"actions[{i}]: got {int(actions[i])}, expected an integer in [0, {self.catalog.n_offers}] "
                "(0 = no offer, a = offer a-1)"
            )
        return actions.astype(np.int64, copy=False)

    # ------------------------------------------------------------------ step
    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if not self._seeded:
            raise RuntimeError("step: call reset() first (the env has no users yet)")
        actions = self._check_actions(actions)
        n = self.num_envs
        lay, cat, camp = self.layout, self.catalog, self.campaign
        # Finished users do not act this step: under NEXT_STEP they are reset below and their
        # action is ignored; under DISABLED they wait for reset(). (SAME_STEP has none.)
        active = ~self._done

        # validate before any state changes, so a raised error leaves the env untouched
        allowed = self._allowed(actions)
        invalid = active & ~allowed
        if invalid.any() and camp.invalid_action == "error":
            i = int(np.flatnonzero(invalid)[0])
            reason = (
                "frequency cap reached" if self._sends[i, actions[i] - 1] >= camp.frequency_cap
                else "worst-case cost exceeds the budget left"
            )
            raise ValueError(
                f"actions[{i}]: action {int(actions[i])} (offer {int(actions[i]) - 1}) is masked ({reason}); use action_masks() "
                "or set campaign.invalid_action=penalize"
            )
        if self.autoreset_mode is AutoresetMode.NEXT_STEP and self._done.any():
            reset_now = self._done.copy()
            self._episode[reset_now] += 1
            self._reset_slots(np.flatnonzero(reset_now), autoreset=True)
        effective = np.where(active & allowed, actions, 0)
        sent = effective > 0
        offers = np.maximum(effective - 1, 0)

        p = self.world.response_probs(effective)
        # before the world advances: the penalty is of the state the action was chosen in
        penalties, halted, uncertain = (None,) * 3 if self._pessimism_step is None else self._pessimism_step(effective, camp)
        t = self._t
        # one call for the three streams (elementwise, so the same numbers as three calls)
        u_click, u_convert, u_churn = rng.uniform(self._user_keys[:, None], t[:, None], _STREAMS).T
        click = sent & (u_click < p.click)
        convert = click & (u_convert < p.convert)
        churn = active & (u_churn < p.churn)
        revenue, cost = outcome_money(cat, effective, click, convert)
        profit = revenue - cost
        self.world.advance(effective, click, convert, active)

        # observable history, updated in place for active users
        obs, decay = self._obs, np.float32(camp.history_decay)
        rows = slice(None) if active.all() else np.flatnonzero(active)  # a slice skips fancy indexing
        obs[rows, lay.decayed] *= decay
        srows, soff = np.flatnonzero(sent), offers[sent]
        obs[srows, lay.offer_exposure.start + soff] += 1.0
        obs[srows, lay.category_exposure.start + cat.category[soff]] += 1.0
        crows = np.flatnonzero(click)
        obs[crows, lay.category_clicks.start + cat.category[offers[click]]] += 1.0
        self._sends[srows, soff] += 1
        obs[srows, lay.sends.start + soff] = self._sends[srows, soff] / camp.frequency_cap
        obs[rows, lay.clicked_last] = click[rows]
        obs[rows, lay.conversions] = np.minimum(obs[rows, lay.conversions] + convert[rows] / camp.horizon, 1.0)
        self._since_offer = np.where(sent, 0, np.where(active, self._since_offer + 1, self._since_offer))
        obs[rows, lay.since_offer] = np.minimum(self._since_offer[rows], camp.horizon) / camp.horizon
        self._t = t + active
        self._budget = np.maximum(self._budget - cost, 0.0)
        obs[rows, lay.time_left] = 1.0 - self._t[rows] / camp.horizon
        obs[rows, lay.budget_left] = self._budget[rows] / camp.budget

        terminated = active & (churn | (self._t >= camp.horizon))
        reward = camp.reward_of(cat, effective, click, convert)
        if penalties is not None:  # a pessimistic world charges its own uncertainty (LearnedWorld)
            reward = reward - penalties
        if halted is not None:  # MOReL's HALT is absorbing: the episode ends (a termination)
            halted = active & halted
            terminated = terminated | halted
        if camp.invalid_action == "penalize":
            reward = reward - camp.invalid_action_penalty * invalid
        reward = np.where(active, reward, 0.0)
        info: dict[str, Any] = {
            "click": click,
            "conversion": convert,
            "revenue": revenue,
            "cost": cost,
            "profit": profit,
            "churned": churn,
            "offer_sent": sent,
            "invalid_action": invalid,
            "active": active,
        }
        if halted is not None:
            info["halted"] = halted
        if uncertain is not None:  # the world's uncertainty above its threshold (off the logged distribution)
            info["uncertain"] = active & uncertain
        if self.autoreset_mode is AutoresetMode.DISABLED:
            terminated = terminated | self._done
        self._done = self._done | terminated

        observation = self._obs.copy()
        if self.autoreset_mode is AutoresetMode.SAME_STEP and terminated.any():
            info["final_obs"] = observation.copy()
            info["_final_obs"] = terminated.copy()
            self._episode[terminated] += 1
            self._reset_slots(np.flatnonzero(terminated), autoreset=True)
            observation = self._obs.copy()
        truncated = np.zeros(n, dtype=bool)
        return observation, reward.astype(np.float64), terminated, truncated, info

    # ------------------------------------------------------------------ introspection
    @property
    def done(self) -> np.ndarray:
        """(N,) bool: users whose episode has ended and not been reset yet."""
        return self._done.copy()

    @property
    def user_keys(self) -> np.ndarray:
        """(N,) uint64 keys of the current users (stable per slot seed and episode)."""
        return self._user_keys.copy()

    @property
    def steps(self) -> np.ndarray:
        """(N,) steps taken in the current episode."""
        return self._t.copy()

    @property
    def budget_left(self) -> np.ndarray:
        return self._budget.copy()


def episode_batches(make_env: Callable[[int], CampaignVectorEnv], n_users: int,
                    batch_size: int) -> Iterator[tuple[int, CampaignVectorEnv]]:
    """(first user, env) for ``n_users`` users in batches of at most ``batch_size``; every
    env has autoreset ``DISABLED`` (one episode per user), as rollouts and log generation
    need: user ``start + i`` is slot ``i`` of the batch starting at ``start``."""
    for start in range(0, n_users, batch_size):
        env = make_env(min(batch_size, n_users - start))
        if env.autoreset_mode is not AutoresetMode.DISABLED:
            env = CampaignVectorEnv(env.world, env.campaign, AutoresetMode.DISABLED)
        yield start, env
