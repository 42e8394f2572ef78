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


# ------------------------------------------------------------------ TrueWorld
# float64 parameters of a TrueWorld (TrueWorld._fparams); incentive and offer bias per offer follow
(W_CLICK_BASE, W_CLICK_AFFINITY, W_FATIGUE_OFFER, W_FATIGUE_CATEGORY, W_FATIGUE_DECAY, W_CONV_BASE,
 W_CONV_INTEREST, W_CONV_AFFINITY, W_CONV_INCENTIVE, W_INTEREST_GAIN, W_INTEREST_CLICK_GAIN, W_INTEREST_DECAY,
 W_KEEP_ON_CONVERSION, W_CHURN_BASE, W_CHURN_REST, W_CHURN_ANNOYANCE, W_ANNOY_SEND, W_ANNOY_IRRELEVANT,
 W_ANNOY_REPEAT, W_ANNOY_DECAY, W_REST_ANNOYANCE, W_SQRT_DIM, W_WITHIN_SD, W_TABLE) = range(24)
# int64 parameters of a TrueWorld (TrueWorld._iparams); the offers' categories follow at T_CATEGORY
T_OFFERS, T_CATEGORIES, T_DIM, T_CATEGORY = range(4)
# columns of TrueWorld's per-user state (affinity, offer fatigue, category fatigue, interest, annoyance)
# are at offsets 0, A, 2A, 2A + C, 2A + C + 1 (A offers, C categories)


@njit(cache=True)
def true_neg_logits(actions: np.ndarray, state: np.ndarray, fparams: np.ndarray, iparams: np.ndarray,
                    out: np.ndarray) -> None:
    """Minus the click, conversion and churn logits of TrueWorld for ``actions`` into rows 0, 1, 2
    of ``out`` (the caller applies ``np.exp`` and ``sigmoid_finish``). For "no offer", +inf for
    click and conversion (probability exactly 0) and the resting churn logit."""
    a_n, c_n = iparams[T_OFFERS], iparams[T_CATEGORIES]
    interest_col, annoy_col = 2 * a_n + c_n, 2 * a_n + c_n + 1
    for i in range(actions.shape[0]):
        a = actions[i]
        annoyance = state[i, annoy_col]
        if a == 0:
            out[0, i] = np.inf
            out[1, i] = np.inf
            out[2, i] = -(fparams[W_CHURN_REST] + fparams[W_REST_ANNOYANCE] * annoyance)
            continue
        o = a - 1
        s = state[i, o]
        cat_fatigue = state[i, 2 * a_n + iparams[T_CATEGORY + o]]
        click = (fparams[W_CLICK_BASE] + fparams[W_CLICK_AFFINITY] * s
                 - fparams[W_FATIGUE_OFFER] * state[i, a_n + o] - fparams[W_FATIGUE_CATEGORY] * cat_fatigue)
        convert = (fparams[W_CONV_BASE] + fparams[W_CONV_INTEREST] * state[i, interest_col]
                   + fparams[W_CONV_AFFINITY] * s + fparams[W_CONV_INCENTIVE] * fparams[W_TABLE + o])
        irrelevant = -s if -s >= 0.0 else 0.0
        annoyed = (fparams[W_ANNOY_DECAY] * annoyance + fparams[W_ANNOY_SEND]
                   + fparams[W_ANNOY_IRRELEVANT] * irrelevant + fparams[W_ANNOY_REPEAT] * cat_fatigue)
        out[0, i] = -click
        out[1, i] = -convert
        out[2, i] = -(fparams[W_CHURN_BASE] + fparams[W_CHURN_ANNOYANCE] * annoyed)


@njit(cache=True)
def sigmoid_finish(exp_neg: np.ndarray) -> None:
    """In place: ``1 / (1 + x)`` of ``x = exp(-logit)``, the sigmoid of the logit."""
    flat = exp_neg.reshape(-1)
    for i in range(flat.shape[0]):
        flat[i] = 1.0 / (1.0 + flat[i])


@njit(cache=True)
def true_advance(actions: np.ndarray, click: np.ndarray, convert: np.ndarray, active: np.ndarray,
                 state: np.ndarray, fparams: np.ndarray, iparams: np.ndarray) -> None:
    """TrueWorld's hidden state after ``active`` users saw ``actions`` with these outcomes:
    fatigue decays and grows with the offer and its category, interest decays, grows with
    relevant sends and clicks and drops on conversion, annoyance decays or becomes what the
    send caused (computed on the fatigue before this step's send)."""
    a_n, c_n = iparams[T_OFFERS], iparams[T_CATEGORIES]
    interest_col, annoy_col = 2 * a_n + c_n, 2 * a_n + c_n + 1
    decay = fparams[W_FATIGUE_DECAY]
    for i in range(actions.shape[0]):
        if not active[i]:
            continue
        a = actions[i]
        sent = a > 0
        o = max(a - 1, 0)
        category = iparams[T_CATEGORY + o]
        s = state[i, o]
        cat_fatigue = state[i, 2 * a_n + category]
        annoyance = state[i, annoy_col]
        irrelevant = -s if -s >= 0.0 else 0.0
        annoyed = (fparams[W_ANNOY_DECAY] * annoyance + fparams[W_ANNOY_SEND]
                   + fparams[W_ANNOY_IRRELEVANT] * irrelevant + fparams[W_ANNOY_REPEAT] * cat_fatigue)
        for j in range(a_n, 2 * a_n + c_n):
            state[i, j] *= decay
        if sent:
            state[i, a_n + o] += 1.0
            state[i, 2 * a_n + category] += 1.0
        relevant = s if s >= 0.0 else 0.0
        interest = (fparams[W_INTEREST_DECAY] * state[i, interest_col]
                    + ((1.0 if sent else 0.0) * fparams[W_INTEREST_GAIN]) * relevant
                    + fparams[W_INTEREST_CLICK_GAIN] * (1.0 if click[i] else 0.0))
        state[i, interest_col] = interest * (fparams[W_KEEP_ON_CONVERSION] if convert[i] else 1.0)
        state[i, annoy_col] = annoyed if sent else fparams[W_ANNOY_DECAY] * annoyance


@njit(cache=True)
def true_draw_uniforms(keys: np.ndarray, segment_weights: np.ndarray, region_probs: np.ndarray, dim: int,
                       segment: np.ndarray, region: np.ndarray, u1: np.ndarray, u2: np.ndarray) -> None:
    """First part of drawing TrueWorld users: the segment (stream 1), the region given the
    segment (stream 3), and the two uniforms of the normals of the latent (stream 2, columns
    0..dim-1) and of the profile noise (stream 5, columns dim..dim+2). The caller takes
    ``np.log(u1)`` and calls ``true_draw_normals``."""
    for i in range(keys.shape[0]):
        key = keys[i]
        seg = inverse_cdf(segment_weights, uniform1(key, np.uint64(1)))
        segment[i] = seg
        region[i] = inverse_cdf(region_probs[seg], uniform1(key, np.uint64(3)))
        for j in range(u1.shape[1]):
            stream, col = (np.uint64(2), np.uint64(j)) if j < dim else (np.uint64(5), np.uint64(j - dim))
            u1[i, j] = uniform3(key, stream, col, NORMAL_U1)
            u2[i, j] = uniform3(key, stream, col, NORMAL_U2)


@njit(cache=True)
def true_draw_normals(log_u1: np.ndarray, u2: np.ndarray, segment: np.ndarray, segment_means: np.ndarray,
                      within_sd: float, latent: np.ndarray, noise: np.ndarray, segment_latent: np.ndarray) -> None:
    """Box-Muller normals from ``log(u1)`` and ``u2`` (``envs.rng.normal``); the latent (segment
    mean + sd * normal), the profile noise and each user's segment mean (for the segment oracle)."""
    dim = latent.shape[1]
    two_pi = 2.0 * np.pi
    for i in range(log_u1.shape[0]):
        for j in range(log_u1.shape[1]):
            z = np.sqrt(-2.0 * log_u1[i, j]) * np.cos(two_pi * u2[i, j])
            if j < dim:
                mean = segment_means[segment[i], j]
                segment_latent[i, j] = mean
                latent[i, j] = mean + within_sd * z
            else:
                noise[i, j - dim] = z


@njit(cache=True)
def true_exp_args(device_logits: np.ndarray, latent: np.ndarray, noise: np.ndarray, out: np.ndarray) -> None:
    """What TrueWorld exponentiates for a new user: device logits minus their row max
    (columns 0..2 of ``out``) and the log of tenure (column 3); the caller applies ``np.exp``."""
    n_dev = device_logits.shape[1]
    for i in range(device_logits.shape[0]):
        top = device_logits[i, 0]
        for j in range(1, n_dev):
            if device_logits[i, j] > top:
                top = device_logits[i, j]
        for j in range(n_dev):
            out[i, j] = device_logits[i, j] - top
        out[i, n_dev] = 2.5 + 0.3 * latent[i, 1] + 0.6 * noise[i, 1]


@njit(cache=True)
def true_profiles(keys: np.ndarray, exps: np.ndarray, latent: np.ndarray, noise: np.ndarray, segment: np.ndarray,
                  region: np.ndarray, segment_activity: np.ndarray, affinity: np.ndarray,
                  segment_affinity: np.ndarray, fparams: np.ndarray, iparams: np.ndarray, categorical: np.ndarray,
                  numeric: np.ndarray) -> None:
    """Last part of drawing TrueWorld users: the device (softmax of the logits, stream 4), the
    numeric profile (age, tenure, activity) and, in place, the affinities from the products
    ``latent @ offer_embedding.T`` and ``segment mean @ offer_embedding.T`` (computed by BLAS):
    product / sqrt(dim) + offer bias."""
    n_dev, a_n, root = exps.shape[1] - 1, iparams[T_OFFERS], fparams[W_SQRT_DIM]
    probs = np.empty(n_dev)
    for i in range(keys.shape[0]):
        total = 0.0
        for j in range(n_dev):
            total += exps[i, j]
        for j in range(n_dev):
            probs[j] = exps[i, j] / total
        categorical[i, 0] = region[i]
        categorical[i, 1] = inverse_cdf(probs, uniform1(keys[i], np.uint64(4)))
        numeric[i, 0] = 40.0 + 6.0 * latent[i, 0] + 8.0 * noise[i, 0]
        numeric[i, 1] = exps[i, n_dev]
        numeric[i, 2] = segment_activity[segment[i]] + 0.5 * latent[i, 2] + 0.6 * noise[i, 2]
        for o in range(a_n):
            affinity[i, o] = affinity[i, o] / root + fparams[W_TABLE + a_n + o]
            segment_affinity[i, o] = segment_affinity[i, o] / root + fparams[W_TABLE + a_n + o]


@njit(cache=True)
def true_store_users(slots: np.ndarray, segment: np.ndarray, latent: np.ndarray, affinity: np.ndarray,
                     segment_affinity: np.ndarray, world_segment: np.ndarray, world_latent: np.ndarray,
                     world_segment_affinity: np.ndarray, state: np.ndarray, iparams: np.ndarray) -> None:
    """New users in ``slots``: their segment, latent, affinities; no fatigue, interest or annoyance."""
    a_n = iparams[T_OFFERS]
    for k in range(slots.shape[0]):
        i = slots[k]
        world_segment[i] = segment[k]
        for j in range(latent.shape[1]):
            world_latent[i, j] = latent[k, j]
        for j in range(a_n):
            world_segment_affinity[i, j] = segment_affinity[k, j]
            state[i, j] = affinity[k, j]
        for j in range(a_n, state.shape[1]):
            state[i, j] = 0.0
