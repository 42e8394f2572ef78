"""TrueWorld: the ground truth with hidden parameters, batched over N users in numpy.

Users have a latent taste vector drawn from a mixture of segments; their observable profile is
correlated with the latent but does not reveal it. Responses have long-term effects, so a
greedy one-step policy is beatable:

* click:       sigmoid(base + affinity - offer fatigue - category fatigue)
* conversion:  sigmoid(base + interest + affinity + incentive), given a click; interest is
               built by earlier relevant touches and clicks (nurturing) and drops after a
               conversion (satiation)
* churn:       sigmoid(base + annoyance), where annoyance grows with every send, with
               irrelevant offers and with repeats of a category (too frequent / irrelevant).

It also exposes the oracle: true probabilities for any action (``probs_all``) and the segment
oracle, the same with each user's latent replaced by its segment's mean latent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs import rng
from envs import true_world_kernels as kernels
from envs.checks import check_field_types, require
from envs.world import Catalog, Profiles, ProfileSchema, ResponseProbs

_REGIONS = 6
_DEVICES = 3
_SCHEMA_SAMPLE = 20_000  # users drawn once to standardise numeric features


@dataclass
class TrueWorldConfig:
    """Hidden parameters of the ground truth. ``seed`` fixes the world (catalog, segments)."""

    seed: int = 0
    n_offers: int = 24
    n_categories: int = 6
    latent_dim: int = 6
    n_segments: int = 4
    segment_spread: float = 1.2  # sd of segment means per latent dimension
    within_segment_sd: float = 0.6
    region_concentration: float = 0.5  # Dirichlet concentration of region given segment (lower = more revealing)
    contact_cost: float = 0.3
    value_min: float = 10.0  # revenue of a conversion, drawn uniformly per offer
    value_max: float = 60.0
    incentive_max: float = 0.4  # discount as a share of value, drawn from U(0, max)
    # click
    click_base: float = -2.2
    click_affinity: float = 1.0
    fatigue_offer: float = 1.0
    fatigue_category: float = 0.9
    fatigue_decay: float = 0.7
    # conversion given click
    conv_base: float = -3.5
    conv_interest: float = 1.0
    conv_affinity: float = 0.5
    conv_incentive: float = 3.0
    interest_gain: float = 0.3
    interest_click_gain: float = 1.0
    interest_decay: float = 0.9
    satiation: float = 0.5  # share of interest lost on conversion
    # churn
    churn_base: float = -5.0
    churn_rest: float = -7.0
    churn_annoyance: float = 1.3
    annoy_send: float = 0.8
    annoy_irrelevant: float = 0.8
    annoy_repeat: float = 0.4
    annoy_decay: float = 0.7

    def __post_init__(self) -> None:
        check_field_types(self, "world")
        for name in ("n_offers", "n_categories", "latent_dim", "n_segments"):
            if getattr(self, name) < 1:
                raise ValueError(f"world.{name}: must be >= 1, got {getattr(self, name)}")
        if self.n_categories > self.n_offers:
            raise ValueError("world.n_categories: must be <= world.n_offers")
        for name in ("fatigue_decay", "interest_decay", "annoy_decay", "satiation"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"world.{name}: must be in [0, 1], got {getattr(self, name)}")
        if self.contact_cost < 0:
            raise ValueError(f"world.contact_cost: must be >= 0, got {self.contact_cost}")
        require(0 <= self.value_min <= self.value_max, "world.value_min / world.value_max",
                "0 <= value_min <= value_max", (self.value_min, self.value_max))
        require(0 <= self.incentive_max < 1, "world.incentive_max", "in [0, 1) (a share of the value)", self.incentive_max)
        for name in ("segment_spread", "within_segment_sd", "region_concentration"):
            require(getattr(self, name) > 0, f"world.{name}", "> 0", getattr(self, name))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class TrueWorld:
    """Ground-truth world; implements the ``World`` protocol."""

    def __init__(self, config: TrueWorldConfig | None = None, n_users: int = 1) -> None:
        self.config = cfg = config or TrueWorldConfig()
        self.n_users = n_users
        g = np.random.default_rng(cfg.seed)
        d, a, c, k = cfg.latent_dim, cfg.n_offers, cfg.n_categories, cfg.n_segments
        # --- hidden parameters -------------------------------------------------------------
        self.segment_weights = g.dirichlet(np.full(k, 4.0))
        self.segment_means = g.normal(0.0, cfg.segment_spread, size=(k, d))
        category = np.concatenate([np.arange(c), g.integers(0, c, size=a - c)])
        category_centres = g.normal(0.0, 1.0, size=(c, d))
        self.offer_embedding = category_centres[category] + g.normal(0.0, 0.5, size=(a, d))
        self.offer_bias = g.normal(0.0, 0.3, size=a)
        value = g.uniform(cfg.value_min, cfg.value_max, size=a)
        self.incentive = g.uniform(0.0, cfg.incentive_max, size=a)
        self.region_probs = g.dirichlet(np.full(_REGIONS, cfg.region_concentration), size=k)
        self.device_weights = g.normal(0.0, 1.0, size=(d, _DEVICES))
        self.segment_activity = g.permutation(np.linspace(1.5, 1.5 + 2.5 * (k - 1), k))
        self.catalog = Catalog(
            category=category,
            value=value,
            discount=value * self.incentive,
            contact_cost=cfg.contact_cost,
        )
        # --- kernel parameters (envs.true_world_kernels: W_*, T_*) -------------------------------------
        self._fparams = np.array([
            cfg.click_base, cfg.click_affinity, cfg.fatigue_offer, cfg.fatigue_category, cfg.fatigue_decay,
            cfg.conv_base, cfg.conv_interest, cfg.conv_affinity, cfg.conv_incentive, cfg.interest_gain,
            cfg.interest_click_gain, cfg.interest_decay, 1.0 - cfg.satiation, cfg.churn_base, cfg.churn_rest,
            cfg.churn_annoyance, cfg.annoy_send, cfg.annoy_irrelevant, cfg.annoy_repeat, cfg.annoy_decay,
            cfg.churn_annoyance * cfg.annoy_decay, np.sqrt(d), cfg.within_segment_sd,
            *self.incentive, *self.offer_bias], dtype=np.float64)
        self._iparams = np.array([a, c, d, *category], dtype=np.int64)
        self.profile_schema = ProfileSchema(
            categorical={"region": _REGIONS, "device": _DEVICES},
            numeric={"age": (0.0, 1.0), "tenure_months": (0.0, 1.0), "activity": (0.0, 1.0)},
        )
        sample = self._draw(rng.seed_key(np.arange(_SCHEMA_SAMPLE) + cfg.seed * 7919 + 1))[-1]
        self.profile_schema = ProfileSchema(
            categorical=self.profile_schema.categorical,
            numeric={
                name: (float(sample.numeric[:, j].mean()), float(sample.numeric[:, j].std()))
                for j, name in enumerate(self.profile_schema.numeric)
            },
        )
        # --- per-user state ----------------------------------------------------------------
        # what the step kernels read and write sits in one array (one kernel argument); the
        # named attributes are views of its columns
        self.segment = np.zeros(n_users, dtype=np.int64)
        self.latent = np.zeros((n_users, d))
        self.segment_affinity = np.zeros((n_users, a))
        self._state = np.zeros((n_users, 2 * a + c + 2))
        self.affinity = self._state[:, :a]
        self.offer_fatigue = self._state[:, a:2 * a]
        self.category_fatigue = self._state[:, 2 * a:2 * a + c]
        self.interest = self._state[:, 2 * a + c]
        self.annoyance = self._state[:, 2 * a + c + 1]

    # ------------------------------------------------------------------ users
    def _draw(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Profiles]:
        """(segment, latent, affinity, segment affinity, profiles) of the users of ``keys``.

        Kernels draw and combine; ``np.log``, ``np.exp`` and the matrix products stay numpy's
        (see ``envs.true_world_kernels``), each one call on the whole batch, in the shapes they always had."""
        cfg = self.config
        n, d = len(keys), cfg.latent_dim
        seg, region = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
        u1, u2 = np.empty((n, d + 3)), np.empty((n, d + 3))
        kernels.true_draw_uniforms(keys, self.segment_weights, self.region_probs, d, seg, region, u1, u2)
        np.log(u1, out=u1)
        latent, noise, segment_latent = np.empty((n, d)), np.empty((n, 3)), np.empty((n, d))
        kernels.true_draw_normals(u1, u2, seg, self.segment_means, cfg.within_segment_sd, latent, noise,
                                  segment_latent)
        exps = np.empty((n, _DEVICES + 1))
        kernels.true_exp_args(latent @ self.device_weights, latent, noise, exps)
        np.exp(exps, out=exps)
        categorical, numeric = np.empty((n, 2), dtype=np.int64), np.empty((n, 3))
        affinity = latent @ self.offer_embedding.T
        segment_affinity = segment_latent @ self.offer_embedding.T
        kernels.true_profiles(keys, exps, latent, noise, seg, region, self.segment_activity, affinity,
                              segment_affinity, self._fparams, self._iparams, categorical, numeric)
        return seg, latent, affinity, segment_affinity, Profiles.trusted(categorical, numeric)

    def _affinity(self, latent: np.ndarray) -> np.ndarray:
        return latent @ self.offer_embedding.T / np.sqrt(self.config.latent_dim) + self.offer_bias

    def reset_users(self, slots: np.ndarray, keys: np.ndarray) -> Profiles:
        seg, latent, affinity, segment_affinity, profiles = self._draw(np.asarray(keys, dtype=np.uint64))
        kernels.true_store_users(np.asarray(slots, dtype=np.int64), seg, latent, affinity, segment_affinity,
                                 self.segment, self.latent, self.segment_affinity, self._state, self._iparams)
        return profiles

    # ------------------------------------------------------------------ responses
    def _offer_probs(
        self, offers: np.ndarray, affinity: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Probabilities for offer indices ``offers`` of shape (N, k); also the annoyance
        each user would have after receiving that offer."""
        cfg = self.config
        rows = np.arange(self.n_users)[:, None]
        s = affinity[rows, offers]
        cat = self.catalog.category[offers]
        cat_fatigue = self.category_fatigue[rows, cat]
        click = _sigmoid(
            cfg.click_base
            + cfg.click_affinity * s
            - cfg.fatigue_offer * self.offer_fatigue[rows, offers]
            - cfg.fatigue_category * cat_fatigue
        )
        convert = _sigmoid(
            cfg.conv_base
            + cfg.conv_interest * self.interest[:, None]
            + cfg.conv_affinity * s
            + cfg.conv_incentive * self.incentive[offers]
        )
        annoyance = (
            cfg.annoy_decay * self.annoyance[:, None]
            + cfg.annoy_send
            + cfg.annoy_irrelevant * np.maximum(-s, 0.0)
            + cfg.annoy_repeat * cat_fatigue
        )
        churn = _sigmoid(cfg.churn_base + cfg.churn_annoyance * annoyance)
        return click, convert, churn, annoyance

    def _probs(self, actions: np.ndarray, affinity: np.ndarray) -> ResponseProbs:
        """Probabilities for actions of shape (N, k) (0 = no offer)."""
        cfg = self.config
        offers = np.maximum(actions - 1, 0)
        click, convert, churn, _ = self._offer_probs(offers, affinity)
        rest = actions == 0
        rest_churn = _sigmoid(
            cfg.churn_rest + cfg.churn_annoyance * cfg.annoy_decay * self.annoyance
        )[:, None]
        return ResponseProbs(
            click=np.where(rest, 0.0, click),
            convert=np.where(rest, 0.0, convert),
            churn=np.where(rest, rest_churn, churn),
        )

    def response_probs(self, actions: np.ndarray) -> ResponseProbs:
        actions = np.asarray(actions, dtype=np.int64)
        p = np.empty((3, self.n_users))
        kernels.true_neg_logits(actions, self._state, self._fparams, self._iparams, p)
        np.exp(p, out=p)  # numpy's exp, as the numpy implementation had (see envs.kernels)
        kernels.sigmoid_finish(p)
        return ResponseProbs(p[0], p[1], p[2])

    def probs_all(self, segment_oracle: bool = False) -> ResponseProbs:
        """Oracle: (N, n_actions) probabilities of every action for every user."""
        actions = np.broadcast_to(np.arange(self.catalog.n_actions), (self.n_users, self.catalog.n_actions))
        return self._probs(actions, self.segment_affinity if segment_oracle else self.affinity)

    def advance(
        self, actions: np.ndarray, click: np.ndarray, convert: np.ndarray, active: np.ndarray
    ) -> None:
        kernels.true_advance(np.asarray(actions, dtype=np.int64), np.asarray(click, dtype=bool),
                             np.asarray(convert, dtype=bool), np.asarray(active, dtype=bool), self._state,
                             self._fparams, self._iparams)


def replay_oracle(
    config: TrueWorldConfig,
    user_ids: np.ndarray,
    actions: np.ndarray,
    clicks: np.ndarray,
    conversions: np.ndarray,
    mask: np.ndarray,
    all_actions: bool = False,
) -> dict[str, np.ndarray]:
    """True and segment-oracle probabilities of every logged decision, by replaying logs.

    Logs generated by ``experiments.collect.generate_logs`` use ``user_id`` as the slot seed of the
    user's first episode, so the same users are rebuilt and fed the logged actions and
    outcomes. Arrays are (U, T) with ``mask`` marking real steps; returns (U, T) arrays
    ``click``, ``convert``, ``churn`` (truth) and ``segment_click``, ``segment_convert``;
    with ``all_actions`` also (U, T, A) ``click_all``, ``convert_all`` of every action.
    """
    n_users, horizon = actions.shape
    world = TrueWorld(config, n_users=n_users)
    world.reset_users(np.arange(n_users), rng.combine(rng.seed_key(np.asarray(user_ids)), 0))
    out = {k: np.zeros((n_users, horizon)) for k in ("click", "convert", "churn", "segment_click", "segment_convert")}
    rows = np.arange(n_users)
    if all_actions:
        n_actions = world.catalog.n_actions
        out["click_all"], out["convert_all"] = np.zeros((2, n_users, horizon, n_actions))
    for t in range(horizon):
        a = np.where(mask[:, t], actions[:, t], 0)
        if all_actions:
            every = world.probs_all()
            out["click_all"][:, t], out["convert_all"][:, t] = every.click, every.convert
        p = world.response_probs(a)
        seg = world._probs(a[:, None], world.segment_affinity)
        out["click"][:, t], out["convert"][:, t], out["churn"][:, t] = p.click, p.convert, p.churn
        out["segment_click"][:, t], out["segment_convert"][:, t] = seg.click[rows, 0], seg.convert[rows, 0]
        world.advance(a, clicks[:, t].astype(bool), conversions[:, t].astype(bool), mask[:, t].astype(bool))
    return out
