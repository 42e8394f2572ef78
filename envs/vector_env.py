"""The batched core: one vectorised step for N users, as a ``gymnasium.vector.VectorEnv``.

Everything that acts on users (the single-user ``CampaignEnv``, the SB3 adapter, rollouts,
log generation) runs through this class; a single env is this core with N = 1. A step is a
few fused numba kernels (``envs.kernels``: action checks; outcome draws, money, reward,
observation update and termination; a new user's observation) around the world's
``response_probs`` and ``advance``, so N = 1 pays a handful of calls instead of ~100 numpy ones.

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

import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs import kernels, rng
from envs.campaign import CampaignConfig
from envs.observation import ObservationLayout
from envs.world import ResponseProbs, World

_NUMERIC_CLIP = 5.0
_NONE_F, _NONE_B = np.zeros(0), np.zeros(0, dtype=bool)  # "no penalties" / "no halts" for kernels.apply_rules
_RECYCLE_BYTES = 1 << 20  # observation copies at least this large reuse dropped copies (see _copy_obs)
_RECYCLE_POOL = 4


def _refs_when_unused() -> int:
    """``sys.getrefcount`` of an array only a pool list refers to, seen from ``_copy_obs``'s loop."""
    pool = [np.empty(1)]
    for buf in pool:
        return sys.getrefcount(buf)
    raise AssertionError("unreachable")


_UNUSED_REFS = _refs_when_unused()
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
        # the rule state the kernels read and write: step, steps since the last offer and sends
        # per offer in one int64 array (envs.kernels C_*); the named attributes are its views
        self._ints = np.zeros((n, 2 + self.catalog.n_offers), dtype=np.int64)
        self._t, self._since_offer, self._sends = self._ints[:, 0], self._ints[:, 1], self._ints[:, 2:]
        self._budget = np.zeros(n)
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
        self._fparams, self._iparams = self._kernel_params()
        self._cat_starts = np.array([s.start for s in self.layout.profile_cat], dtype=np.int64)
        self._all_slots = np.arange(n)
        self._obs_pool: list[np.ndarray] | None = [] if self._obs.nbytes >= _RECYCLE_BYTES else None

    def _kernel_params(self) -> tuple[np.ndarray, np.ndarray]:
        """The constants of the rules, as the kernels read them (envs.kernels F_* and I_*)."""
        cat, camp, lay = self.catalog, self.campaign, self.layout
        w_click, w_conversion, w_profit = camp.weights()
        fparams = np.array([cat.contact_cost, w_click, w_conversion, w_profit, camp.invalid_action_penalty,
                            camp.budget, np.float32(camp.history_decay), _NUMERIC_CLIP,
                            *cat.value, *cat.discount, *self._worst_cost], dtype=np.float64)
        iparams = np.array([camp.horizon, camp.frequency_cap, cat.n_actions, camp.invalid_action == "penalize",
                            self.autoreset_mode is AutoresetMode.DISABLED, lay.offer_exposure.start,
                            lay.category_exposure.start, lay.category_clicks.start, lay.decayed.start,
                            lay.decayed.stop, lay.clicked_last, lay.conversions, lay.since_offer, lay.sends.start,
                            lay.time_left, lay.budget_left, lay.profile_num.start, len(lay.profile_cat),
                            *cat.category], dtype=np.int64)
        return fparams, iparams

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
        if seed is None and not options and self._seeded:  # the common case: every slot's next user
            self._episode += 1
            self._reset_slots(self._all_slots)
            return self._copy_obs(), {}
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
        return self._copy_obs(), {}

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
        keys = kernels.user_keys(slots, self._slot_keys, self._episode, self._user_keys)
        profiles = self.world.reset_users(slots, keys)
        kernels.reset_rows(slots, profiles.categorical, profiles.numeric, self._num_loc, self._num_scale,
                           self._cat_starts, self.profile_categorical, self.profile_numeric, self._obs, self._ints,
                           self._budget, self._done, self._fparams, self._iparams)

    # ------------------------------------------------------------------ masks
    def action_masks(self) -> np.ndarray:
        """(N, n_actions) bool: which actions each user may receive now."""
        return kernels.action_masks(self._ints, self._budget, self._fparams, self._iparams)

    def _allowed(self, actions: np.ndarray) -> np.ndarray:
        """(N,) bool: ``action_masks()[i, actions[i]]`` by the rule ``step`` applies
        (``kernels.prepare``), without building the whole mask."""
        n = self.num_envs
        flags, effective = np.empty((kernels.N_BOOL, n), dtype=bool), np.empty(n, dtype=np.int64)
        kernels.prepare(self._check_actions(actions), self._ints, self._budget, np.zeros(n, dtype=bool),
                        self._fparams, self._iparams, effective, flags)
        return ~flags[kernels.B_INVALID]

    def _check_actions(self, actions: np.ndarray) -> np.ndarray:
        if type(actions) is np.ndarray and actions.dtype == np.int64 and actions.shape == (self.num_envs,):
            return actions  # the common case (SB3, rollouts); kernels.prepare checks the range
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
        n, camp = self.num_envs, self.campaign
        # Finished users do not act this step: under NEXT_STEP they are reset below and their
        # action is ignored; under DISABLED they wait for reset(). (SAME_STEP has none.)
        # Validate before any state changes, so a raised error leaves the env untouched.
        flags = np.empty((kernels.N_BOOL, n), dtype=bool)
        effective = np.empty(n, dtype=np.int64)
        n_invalid, n_done = self._prepare(actions, effective, flags)
        # the rows of flags, in the order of kernels.B_* (unpacking makes the views in one go)
        active, invalid, click, convert, churn, sent, terminated, halted_rows = flags
        if n_invalid and camp.invalid_action == "error":
            i = int(np.flatnonzero(invalid)[0])
            reason = (
                "frequency cap reached" if self._sends[i, actions[i] - 1] >= camp.frequency_cap
                else "worst-case cost exceeds the budget left"
            )
            raise ValueError(
                f"actions[{i}]: action {int(actions[i])} (offer {int(actions[i]) - 1}) is masked ({reason}); use action_masks() "
                "or set campaign.invalid_action=penalize"
            )
        if n_done and self.autoreset_mode is AutoresetMode.NEXT_STEP:
            reset_now = np.flatnonzero(self._done)
            self._episode[reset_now] += 1
            self._reset_slots(reset_now, autoreset=True)

        p = self.world.response_probs(effective)
        # before the world advances: the penalty is of the state the action was chosen in
        penalties, halted, uncertain = (None,) * 3 if self._pessimism_step is None else self._pessimism_step(effective, camp)
        money = np.empty((kernels.N_MONEY, n))
        n_terminated = self._apply_rules(effective, p, penalties, halted, flags, money)
        self.world.advance(effective, click, convert, active)

        revenue, cost, profit, reward = money  # the rows, in the order of kernels.M_*
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
            info["halted"] = halted_rows
        if uncertain is not None:  # the world's uncertainty above its threshold (off the logged distribution)
            info["uncertain"] = active & uncertain

        observation = self._copy_obs()
        if n_terminated and self.autoreset_mode is AutoresetMode.SAME_STEP:
            info["final_obs"] = observation
            info["_final_obs"] = terminated.copy()
            self._episode[terminated] += 1
            self._reset_slots(np.flatnonzero(terminated), autoreset=True)
            observation = self._copy_obs()
        return observation, reward, terminated, np.zeros(n, dtype=bool), info

    def _copy_obs(self) -> np.ndarray:
        """A copy of the observation for the caller. A large fresh array costs more in page
        faults than the copy itself (at N = 16,384 about 3x), so large copies go into an earlier
        step's copy that nothing outside this env refers to any more (its reference count says
        so; a kept observation, a view of it or an info dict holding it all count), else into a
        new array kept for later."""
        pool = self._obs_pool
        if pool is None:
            return self._obs.copy()
        for buf in pool:
            if sys.getrefcount(buf) == _UNUSED_REFS:
                np.copyto(buf, self._obs)
                return buf
        buf = self._obs.copy()
        if len(pool) < _RECYCLE_POOL:
            pool.append(buf)
        return buf

    def _prepare(self, actions: np.ndarray, effective: np.ndarray, flags: np.ndarray) -> tuple[int, int]:
        """(number of invalid actions, number of finished users); writes the effective actions
        and the active and invalid rows of ``flags`` (``kernels.prepare``)."""
        n_invalid, n_done = kernels.prepare(actions, self._ints, self._budget, self._done, self._fparams,
                                            self._iparams, effective, flags)
        if n_invalid < 0:  # some action out of range: the full check names it and raises
            self._check_actions(actions.tolist())
            raise AssertionError("unreachable: kernels.prepare found an action out of range")
        return n_invalid, n_done

    def _apply_rules(self, effective: np.ndarray, p: ResponseProbs, penalties: np.ndarray | None,
                     halted: np.ndarray | None, flags: np.ndarray, money: np.ndarray) -> int:
        """Outcome draws, money, reward, observation update and termination (``kernels.apply_rules``);
        returns the number of terminated users."""
        return kernels.apply_rules(
            effective, p.click, p.convert, p.churn, _NONE_F if penalties is None else penalties,
            _NONE_B if halted is None else halted, self._user_keys, self._ints, self._budget, self._done, self._obs,
            self._fparams, self._iparams, flags, money)

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
