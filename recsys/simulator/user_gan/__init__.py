"""A GAN that generates user profiles like the logged population, and a marginals baseline.

Pipeline: ``profiles_from_logs`` (``envs.world.Profiles``, one row per user) -> ``fit_user_gan`` -> ``UserGAN``, whose
``sample_keys(keys)`` draws one profile per uint64 user key. Every random number a profile
needs (latent noise, Gumbel noise) comes from ``envs.rng`` keyed by the user, so a user's
profile depends only on its key, never on the batch it is drawn in.

Model (a CTGAN-style WGAN-GP, Xu et al. 2019, with three changes that mattered here):

* Encoding: categoricals are one-hot. Numerics use CTGAN's mode-specific normalisation by
  default (a BIC-chosen Gaussian mixture per column; value = (mode one-hot, offset within the
  mode)), which turns a multimodal column such as TrueWorld's ``activity`` into a discrete
  choice plus a small continuous part; ``"quantile"`` (empirical CDF -> standard normal) is the
  alternative and handles skew but not well-separated modes (benchmark C2ST 0.68 vs 0.54-0.55).
* Generator: an MLP trunk (residual concatenation) and one head per encoded block, run in
  order: all one-hots first (categoricals, then numeric modes), then the numeric offsets. Each
  head reads the trunk output and the blocks already generated, and one-hots are sampled hard
  (straight-through Gumbel-softmax in training, argmax(logits + Gumbel) when sampling) before
  the next head runs, so continuous parts are conditioned on the codes actually drawn.
* Critic: an MLP over packs of ``pac`` rows (PacGAN), Wasserstein loss plus gradient penalty.
* The returned generator is an exponential moving average of the trained weights: without
  it the C2ST of consecutive checkpoints jumped between 0.61 and 0.83 in our runs.
* Post-hoc marginal calibration (``UserGAN.calibrate_marginals``): per-code logit offsets and a
  monotone quantile map per numeric column make every marginal match the training data, so the
  network's capacity goes to the dependence between features.

Artifacts (``UserGAN.save``/``load``): a model directory (``recsys.artifacts.save_model_dir``)
with ``generator.pt`` (a state_dict, loads with ``torch.load(..., weights_only=True)``),
``config.json`` (architecture, feature names, cardinalities, numeric transform and calibration
parameters, plain JSON) and ``metrics.json``.

Modules: ``config`` (UserGANConfig), ``encoding`` (ProfileEncoder, Span, the quantile and mode
transforms), ``networks`` (Generator, Critic, Gumbel picks, gradient penalty), ``keys`` (user
keys and rng streams), ``model`` (UserGAN: sampling by key, calibration, save/load), ``fit``
(fit_user_gan) and ``marginals`` (IndependentMarginalsSampler, the baseline; ResampledProfiles, the logged users).
"""

from recsys.simulator.user_gan.config import TRANSFORMS, UserGANConfig
from recsys.simulator.user_gan.encoding import ProfileEncoder, Span
from recsys.simulator.user_gan.fit import fit_user_gan
from recsys.simulator.user_gan.keys import sample_keys_for
from recsys.simulator.user_gan.marginals import IndependentMarginalsSampler, ResampledProfiles
from recsys.simulator.user_gan.model import UserGAN
from recsys.simulator.user_gan.networks import Critic, Generator

__all__ = [
    "TRANSFORMS", "Critic", "Generator", "IndependentMarginalsSampler", "ProfileEncoder", "ResampledProfiles", "Span", "UserGAN",
    "UserGANConfig", "fit_user_gan", "sample_keys_for",
]
