"""TrueWorld's fused step kernels (response logits, hidden-state advance, user draws).

Split from ``envs.kernels`` (the world-independent rules and the counter-based RNG) so each
module stays small; the same rules apply: the numpy code's operations in its order, exp and log
left to numpy (numba's differ from numpy's in the last bit on this CPU).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from envs.kernels import NORMAL_U1, NORMAL_U2, inverse_cdf, uniform1, uniform3

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
