"""Fused numba kernels of the step: one compiled loop over the users instead of ~100 numpy calls.

Why: at N = 1 a numpy step was ~100 calls on one-element arrays, each with a fixed overhead of
a microsecond or more, so a single env ran at a few thousand steps per second; at large N the
same calls each made a full pass over memory. A kernel does a whole part of the step (the
action checks, the outcome draws with money, reward, observation update and termination; a
new user's observation; TrueWorld's probabilities and hidden-state advance) in one pass.

There is still ONE implementation: ``CampaignVectorEnv`` calls these kernels for every world
and every N (a single env is N = 1), and the world-dependent part stays behind the ``World``
protocol (LearnedWorld keeps its torch step; only TrueWorld and the world-independent rules
moved here).

Same seed, same numbers: every kernel does the operations of the numpy code it replaced in the
same order and precision (float32 observation arithmetic stays float32, Python floats are
float64), so results are bit-identical (``tests/test_kernels.py`` pins digests of the numpy
implementation). Two things stay in numpy on purpose: ``np.exp`` / ``np.log`` (numpy's SIMD
versions differ from libm, which numba calls, in the last bit of a few percent of inputs) and
matrix products (BLAS sums in its own order, which also depends on the batch shape). A kernel
therefore stops where such an op is needed and the caller applies the numpy op to a buffer
the kernel wrote (e.g. ``TrueWorld.response_probs``: logits kernel, ``np.exp``, sigmoid kernel).

Kernels take few arguments (each argument costs ~0.2 us of dispatch): constants travel in one
float64 and one int64 parameter vector per env or world, indexed by the names below.
``cache=True`` compiles each kernel once per machine (a few seconds) into ``__pycache__``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# ------------------------------------------------------------------ counter-based RNG (envs.rng)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_TWO_POW_M53 = 1.0 / float(1 << 53)
NORMAL_U1, NORMAL_U2 = np.uint64(0x6E6F726D), np.uint64(0x616C)  # envs.rng.normal's two streams


@njit(cache=True)
def mix64(z: np.uint64) -> np.uint64:
    """``envs.rng.mix64`` of one uint64."""
    z = z + _GOLDEN
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@njit(cache=True)
def combine1(key: np.uint64, c1: np.uint64) -> np.uint64:
    """``envs.rng.combine(key, c1)`` for one key (counters as uint64)."""
    return mix64(key ^ mix64(c1))


@njit(cache=True)
def combine2(key: np.uint64, c1: np.uint64, c2: np.uint64) -> np.uint64:
    return combine1(combine1(key, c1), c2)


@njit(cache=True)
def combine3(key: np.uint64, c1: np.uint64, c2: np.uint64, c3: np.uint64) -> np.uint64:
    return combine1(combine2(key, c1, c2), c3)


@njit(cache=True)
def to_unit(bits: np.uint64) -> float:
    """The uniform in (0, 1) of ``envs.rng.uniform`` from a combined key."""
    return (np.float64(bits >> _S11) + 0.5) * _TWO_POW_M53


@njit(cache=True)
def uniform1(key: np.uint64, c1: np.uint64) -> float:
    return to_unit(combine1(key, c1))


@njit(cache=True)
def uniform2(key: np.uint64, c1: np.uint64, c2: np.uint64) -> float:
    return to_unit(combine2(key, c1, c2))


@njit(cache=True)
def uniform3(key: np.uint64, c1: np.uint64, c2: np.uint64, c3: np.uint64) -> float:
    return to_unit(combine3(key, c1, c2, c3))


@njit(cache=True)
def inverse_cdf(weights: np.ndarray, u: float) -> int:
    """``envs.rng.inverse_cdf`` of one row: the cumulative sum in order, the uniform scaled by
    the row total, the count of cdf entries at or below it, capped at the last index."""
    total = 0.0
    for j in range(weights.shape[0]):
        total += weights[j]
    x = u * total
    cdf, picked = 0.0, 0
    for j in range(weights.shape[0]):
        cdf += weights[j]
        if x >= cdf:
            picked += 1
    return min(picked, weights.shape[0] - 1)


@njit(cache=True)
def uniforms(keys: np.ndarray, c1: np.ndarray, c2: np.ndarray) -> np.ndarray:
    """``envs.rng.uniform(keys, c1, c2)`` for 1-d arrays of equal length (tests and tools)."""
    out = np.empty(keys.shape[0])
    for i in range(keys.shape[0]):
        out[i] = uniform2(keys[i], np.uint64(c1[i]), np.uint64(c2[i]))
    return out


# ------------------------------------------------------------------ the env's rules
# int64 parameters of an env (CampaignVectorEnv._iparams); the catalog's categories follow at I_CATEGORY
(I_HORIZON, I_CAP, I_N_ACTIONS, I_PENALIZE, I_DISABLED, I_OFFER_EXPOSURE, I_CATEGORY_EXPOSURE,
 I_CATEGORY_CLICKS, I_DECAYED_START, I_DECAYED_STOP, I_CLICKED_LAST, I_CONVERSIONS, I_SINCE_OFFER, I_SENDS,
 I_TIME_LEFT, I_BUDGET_LEFT, I_PROFILE_NUM, I_N_CATEGORICAL, I_CATEGORY) = range(19)
# float64 parameters of an env (CampaignVectorEnv._fparams); value, discount and worst-case cost follow
(F_CONTACT, F_W_CLICK, F_W_CONVERSION, F_W_PROFIT, F_INVALID_PENALTY, F_BUDGET, F_DECAY, F_CLIP,
 F_TABLE) = range(9)
# per-user integer state (CampaignVectorEnv._ints): step, steps since the last offer, then sends per offer
C_T, C_SINCE, C_SENDS = 0, 1, 2
# rows of the per-step bool outputs (what info carries) and float outputs; CampaignVectorEnv.step
# unpacks the rows in this order
B_ACTIVE, B_INVALID, B_CLICK, B_CONVERT, B_CHURN, B_SENT, B_TERMINATED, B_HALTED, N_BOOL = range(9)
M_REVENUE, M_COST, M_PROFIT, M_REWARD, N_MONEY = range(5)


@njit(cache=True)
def prepare(actions: np.ndarray, ints: np.ndarray, budget: np.ndarray, done: np.ndarray, fparams: np.ndarray,
            iparams: np.ndarray, effective: np.ndarray, flags: np.ndarray) -> tuple[int, int]:
    """Action checks, before any state changes: ``flags[B_ACTIVE]`` (not finished),
    ``flags[B_INVALID]`` (active and masked) and ``effective`` (the action, 0 where inactive or
    masked). Returns (-1, 0) if some action is out of range (nothing written then; the caller
    raises), else (number invalid, number finished)."""
    n, n_actions, cap = actions.shape[0], iparams[I_N_ACTIONS], iparams[I_CAP]
    n_offers = n_actions - 1
    for i in range(n):
        if actions[i] < 0 or actions[i] >= n_actions:
            return -1, 0
    n_invalid, n_done = 0, 0
    for i in range(n):
        a = actions[i]
        active = not done[i]
        n_done += done[i]
        capped = ints[i, C_SENDS + max(a - 1, 0)] >= cap
        allowed = a == 0 or (not capped and fparams[F_TABLE + 2 * n_offers + a] <= budget[i] + 1e-9)
        invalid = active and not allowed
        n_invalid += invalid
        flags[B_ACTIVE, i] = active
        flags[B_INVALID, i] = invalid
        effective[i] = a if active and allowed else 0
    return n_invalid, n_done


@njit(cache=True)
def action_masks(ints: np.ndarray, budget: np.ndarray, fparams: np.ndarray, iparams: np.ndarray) -> np.ndarray:
    """(N, n_actions) bool: "no offer" always; an offer below its frequency cap whose worst-case
    cost fits the budget left (+1e-9)."""
    n, n_actions, cap = ints.shape[0], iparams[I_N_ACTIONS], iparams[I_CAP]
    worst = F_TABLE + 2 * (n_actions - 1)
    mask = np.empty((n, n_actions), dtype=np.bool_)
    for i in range(n):
        room = budget[i] + 1e-9
        mask[i, 0] = fparams[worst] <= room
        for a in range(1, n_actions):
            mask[i, a] = ints[i, C_SENDS + a - 1] < cap and fparams[worst + a] <= room
    return mask


@njit(cache=True)
def apply_rules(effective: np.ndarray, p_click: np.ndarray, p_convert: np.ndarray, p_churn: np.ndarray,
                penalties: np.ndarray, halted: np.ndarray, user_keys: np.ndarray, ints: np.ndarray,
                budget: np.ndarray, done: np.ndarray, obs: np.ndarray, fparams: np.ndarray, iparams: np.ndarray,
                flags: np.ndarray, money: np.ndarray) -> int:
    """Everything of a step after the world's probabilities: the outcome draws (click,
    conversion given click, churn; counter-based streams 1, 2, 3 at the user's step), money,
    reward (minus ``penalties`` and the invalid-action penalty when given), the observable
    history (in ``obs``, for active users), steps, budget, termination (churn, horizon or
    ``halted``; under DISABLED a finished user stays terminated) and ``done``. Writes the rows
    of ``flags`` and ``money``; returns the number of terminated users. ``penalties`` and
    ``halted`` are empty when the world has none."""
    n = effective.shape[0]
    horizon, cap, n_offers = iparams[I_HORIZON], iparams[I_CAP], iparams[I_N_ACTIONS] - 1
    decay = np.float32(fparams[F_DECAY])
    one = np.float32(1.0)
    w_click, w_conv, w_profit = fparams[F_W_CLICK], fparams[F_W_CONVERSION], fparams[F_W_PROFIT]
    has_penalties, has_halted = penalties.shape[0] > 0, halted.shape[0] > 0
    n_terminated = 0
    for i in range(n):
        a = effective[i]
        active = flags[B_ACTIVE, i]
        sent = a > 0
        o = max(a - 1, 0)
        t = ints[i, C_T]
        key, tu = user_keys[i], np.uint64(t)
        click = sent and uniform2(key, tu, np.uint64(1)) < p_click[i]
        convert = click and uniform2(key, tu, np.uint64(2)) < p_convert[i]
        churn = active and uniform2(key, tu, np.uint64(3)) < p_churn[i]
        cv = 1.0 if convert else 0.0
        revenue, cost = 0.0, 0.0
        if sent:
            revenue = fparams[F_TABLE + o] * cv
            cost = fparams[F_CONTACT] + fparams[F_TABLE + n_offers + o] * cv
        reward = w_click * (1.0 if click else 0.0) + w_conv * cv + w_profit * (revenue - cost)
        if has_penalties:
            reward = reward - penalties[i]
        halt = has_halted and active and halted[i]
        if iparams[I_PENALIZE]:
            reward = reward - fparams[F_INVALID_PENALTY] * (1.0 if flags[B_INVALID, i] else 0.0)
        # observable history
        if active:
            for j in range(iparams[I_DECAYED_START], iparams[I_DECAYED_STOP]):
                obs[i, j] *= decay
        if sent:
            category = iparams[I_CATEGORY + o]
            obs[i, iparams[I_OFFER_EXPOSURE] + o] += one
            obs[i, iparams[I_CATEGORY_EXPOSURE] + category] += one
            if click:
                obs[i, iparams[I_CATEGORY_CLICKS] + category] += one
            ints[i, C_SENDS + o] += 1
            obs[i, iparams[I_SENDS] + o] = ints[i, C_SENDS + o] / cap
        since = ints[i, C_SINCE]
        since = 0 if sent else (since + 1 if active else since)
        ints[i, C_SINCE] = since
        t_new = t + 1 if active else t
        ints[i, C_T] = t_new
        left = budget[i] - cost
        left = left if left >= 0.0 else 0.0
        budget[i] = left
        if active:
            obs[i, iparams[I_CLICKED_LAST]] = one if click else np.float32(0.0)
            j = iparams[I_CONVERSIONS]
            obs[i, j] = min(np.float64(obs[i, j]) + cv / horizon, 1.0)
            obs[i, iparams[I_SINCE_OFFER]] = min(since, horizon) / horizon
            obs[i, iparams[I_TIME_LEFT]] = 1.0 - t_new / horizon
            obs[i, iparams[I_BUDGET_LEFT]] = left / fparams[F_BUDGET]
        terminated = active and (churn or t_new >= horizon or halt)
        if iparams[I_DISABLED]:
            terminated = terminated or done[i]
        done[i] = done[i] or terminated
        n_terminated += terminated
        flags[B_CLICK, i] = click
        flags[B_CONVERT, i] = convert
        flags[B_CHURN, i] = churn
        flags[B_SENT, i] = sent
        flags[B_TERMINATED, i] = terminated
        flags[B_HALTED, i] = halt
        money[M_REVENUE, i] = revenue
        money[M_COST, i] = cost
        money[M_PROFIT, i] = revenue - cost
        money[M_REWARD, i] = reward if active else 0.0
    return n_terminated


@njit(cache=True)
def user_keys(slots: np.ndarray, slot_keys: np.ndarray, episode: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``rng.combine(slot_keys[slots], episode[slots])``, also stored in ``out[slots]``."""
    keys = np.empty(slots.shape[0], dtype=np.uint64)
    for k in range(slots.shape[0]):
        i = slots[k]
        keys[k] = combine1(slot_keys[i], np.uint64(episode[i]))
        out[i] = keys[k]
    return keys


@njit(cache=True)
def reset_rows(slots: np.ndarray, categorical: np.ndarray, numeric: np.ndarray, loc: np.ndarray,
               scale: np.ndarray, cat_starts: np.ndarray, profile_categorical: np.ndarray,
               profile_numeric: np.ndarray, obs: np.ndarray, ints: np.ndarray, budget: np.ndarray,
               done: np.ndarray, fparams: np.ndarray, iparams: np.ndarray) -> None:
    """The first observation and rule state of new users in ``slots`` from their profiles:
    one-hot categoricals, standardised numerics clipped to +-clip, time since offer, time and
    budget left 1; step 0, no sends, the full budget, not done."""
    clip = fparams[F_CLIP]
    for k in range(slots.shape[0]):
        i = slots[k]
        for j in range(obs.shape[1]):
            obs[i, j] = 0.0
        for j in range(categorical.shape[1]):
            profile_categorical[i, j] = categorical[k, j]
            obs[i, cat_starts[j] + categorical[k, j]] = 1.0
        for j in range(numeric.shape[1]):
            profile_numeric[i, j] = numeric[k, j]
            z = (numeric[k, j] - loc[j]) / scale[j]
            obs[i, iparams[I_PROFILE_NUM] + j] = min(max(z, -clip), clip)
        obs[i, iparams[I_SINCE_OFFER]] = 1.0
        obs[i, iparams[I_TIME_LEFT]] = 1.0
        obs[i, iparams[I_BUDGET_LEFT]] = 1.0
        for j in range(ints.shape[1]):
            ints[i, j] = 0
        ints[i, C_SINCE] = iparams[I_HORIZON]
        budget[i] = fparams[F_BUDGET]
        done[i] = False
