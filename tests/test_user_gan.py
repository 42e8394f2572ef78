"""User GAN and profile fidelity: profiles from logs, per-key determinism, save/load,
config validation, the independent-marginals baseline, the C2ST and that training helps.

Every GAN here is tiny (a few hundred steps of a 32-wide network); the quality claim lives in
``python -m benchmarks.gan_fidelity``, not in a test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from gymnasium.vector import AutoresetMode

from agents.reference import LoggingPolicy
from envs import rng
from envs.campaign import CampaignConfig
from envs.true_world import TrueWorld, TrueWorldConfig
from envs.vector_env import CampaignVectorEnv
from envs.world import Profiles
from experiments.collect import generate_logs
from experiments.report.plots import plot_marginals
from recsys.artifacts import ModelDirError
from recsys.data.profiles import profiles_from_logs
from recsys.simulator.profile_fidelity import (
    c2st_auc,
    correlation_matrices,
    marginal_ks,
    marginal_tv,
    profile_fidelity,
)
from recsys.simulator.user_gan import (
    IndependentMarginalsSampler,
    UserGAN,
    UserGANConfig,
    fit_user_gan,
)

torch.set_num_threads(1)
WORLD = TrueWorldConfig(seed=0)
TINY = dict(
    steps=150, batch_size=100, latent_dim=8, generator_hidden=(32, 32), critic_hidden=(32, 32),
    n_quantiles=100, calibration_samples=2000, max_seconds=None, log_every=25,
)


def _true_profiles(n: int, first_seed: int = 0) -> Profiles:
    """n TrueWorld profiles drawn straight from the world (no logging needed)."""
    world = TrueWorld(WORLD, n_users=n)
    p = world.reset_users(np.arange(n), rng.seed_key(np.arange(n) + first_seed))
    schema = world.profile_schema
    return Profiles(p.categorical, p.numeric, tuple(schema.categorical), tuple(schema.numeric),
                       tuple(schema.categorical.values()))


@pytest.fixture(scope="module")
def logs() -> pa.Table:
    return generate_logs(
        lambda n: CampaignVectorEnv(TrueWorld(WORLD, n_users=n), CampaignConfig(), AutoresetMode.DISABLED),
        LoggingPolicy, n_users=400, seed=5,
    )


@pytest.fixture(scope="module")
def data() -> Profiles:
    return _true_profiles(3000)


@pytest.fixture(scope="module")
def gan(data: Profiles) -> UserGAN:
    return fit_user_gan(data, UserGANConfig(**TINY), progress=False)


# ------------------------------------------------------------------------------------ from logs
def test_profiles_from_logs_one_row_per_user(logs: pa.Table) -> None:
    data = profiles_from_logs(logs)
    assert data.categorical_names == ("region", "device")
    assert data.numeric_names == ("age", "tenure_months", "activity")
    assert data.cardinalities == (6, 3)  # from the metadata, not from the codes seen
    assert len(data) == 400 and data.categorical.dtype == np.int64 and data.numeric.dtype == np.float64
    np.testing.assert_array_equal(data.user_ids, np.arange(5, 405))
    first = logs.filter(pa.compute.equal(logs.column("step"), 0))
    order = np.argsort(first.column("user_id").to_numpy())
    np.testing.assert_array_equal(data.categorical[:, 1], first.column("cat_device").to_numpy()[order])
    np.testing.assert_array_equal(data.numeric[:, 2], first.column("num_activity").to_numpy()[order])


def test_profiles_from_logs_cardinality_without_metadata(logs: pa.Table) -> None:
    data = profiles_from_logs(logs.replace_schema_metadata(None))
    assert data.cardinalities == tuple(int(data.categorical[:, j].max()) + 1 for j in range(2))


def test_profiles_from_logs_errors(logs: pa.Table) -> None:
    keep = [c for c in logs.column_names if not c.startswith(("cat_", "num_"))]
    with pytest.raises(ValueError, match="no profile columns") as e:
        profiles_from_logs(logs.select(keep))
    assert "\n" not in str(e.value)
    few = logs.filter(pa.compute.less(logs.column("user_id"), 50))
    with pytest.raises(ValueError, match="45 users, need at least 100"):
        profiles_from_logs(few)


# --------------------------------------------------------------------------------- determinism
def test_sample_keys_depends_only_on_the_key(gan: UserGAN) -> None:
    keys = rng.seed_key(np.arange(700) + 123)
    cat, num = gan.sample_keys(keys)
    again = gan.sample_keys(keys)
    np.testing.assert_array_equal(cat, again[0])
    np.testing.assert_array_equal(num, again[1])
    g = np.random.default_rng(0)
    for size in (1, 3, 255, 256, 257, 500):
        idx = g.choice(len(keys), size=size, replace=False)
        sub_cat, sub_num = gan.sample_keys(keys[idx])
        np.testing.assert_array_equal(sub_cat, cat[idx])  # bitwise, whatever the batch
        np.testing.assert_array_equal(sub_num, num[idx])
    other = gan.sample_keys(rng.seed_key(np.arange(700) + 9999))
    assert not np.array_equal(other[1], num)
    sample = gan.sample(300, seed=4)
    np.testing.assert_array_equal(gan.sample(100, seed=4).numeric, sample.numeric[:100])


def test_codes_within_cardinality(gan: UserGAN, data: Profiles) -> None:
    cat, num = gan.sample_keys(rng.seed_key(np.arange(3000)))
    assert cat.shape == (3000, 2) and cat.dtype == np.int64
    assert num.shape == (3000, 3) and num.dtype == np.float64 and np.all(np.isfinite(num))
    for j, k in enumerate(data.cardinalities):
        assert cat[:, j].min() >= 0 and cat[:, j].max() < k


def test_fit_is_reproducible(data: Profiles, gan: UserGAN) -> None:
    seen: list[int] = []
    same = fit_user_gan(data, UserGANConfig(**TINY), progress=False, callback=lambda step, _: seen.append(step))
    assert seen == [25, 50, 75, 100, 125, 150]  # observing training does not change it:
    for k, v in gan.generator.state_dict().items():
        assert torch.equal(v, same.generator.state_dict()[k]), k
    assert same.calibration == gan.calibration
    other = fit_user_gan(data, UserGANConfig(**{**TINY, "steps": 20, "seed": 1}), progress=False)
    assert not torch.equal(other.generator.trunk[0].weight, gan.generator.trunk[0].weight)


# ------------------------------------------------------------------------------------- save/load
def test_save_load_round_trip(gan: UserGAN, tmp_path: Path) -> None:
    gan.metrics["note"] = "round trip"
    path = gan.save(tmp_path / "gan")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "generator.pt", "metrics.json"]
    state = torch.load(path / "generator.pt", weights_only=True)
    assert set(state) == set(gan.generator.state_dict())
    config = json.loads((path / "config.json").read_text())
    assert config["encoder"]["categorical_names"] == ["region", "device"]
    assert config["encoder"]["cardinalities"] == [6, 3]
    loaded = UserGAN.load(path)
    keys = rng.seed_key(np.arange(500))
    for a, b in zip(gan.sample_keys(keys), loaded.sample_keys(keys), strict=True):
        np.testing.assert_array_equal(a, b)
    assert loaded.metrics["note"] == "round trip"
    gan.save(path)  # overwriting an existing directory works and leaves no temp dirs
    assert [p.name for p in tmp_path.iterdir()] == ["gan"]


@pytest.mark.parametrize("name,content", [
    ("config.json", None), ("generator.pt", None), ("metrics.json", None),
    ("config.json", b"{not json"), ("generator.pt", b"garbage"), ("metrics.json", b"[1,"),
])
def test_load_errors_name_the_file(gan: UserGAN, tmp_path: Path, name: str, content: bytes | None) -> None:
    path = gan.save(tmp_path / "gan")
    if content is None:
        (path / name).unlink()
    else:
        (path / name).write_bytes(content)
    with pytest.raises(ModelDirError, match=name) as e:
        UserGAN.load(path)
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("field,value", [
    ("steps", -1), ("batch_size", 0), ("batch_size", 105), ("latent_dim", 0), ("generator_hidden", []),
    ("critic_hidden", [16, 0]), ("lr", 0.0), ("gp_weight", -1.0), ("n_critic", 0), ("pac", 0),
    ("critic_dropout", 1.0), ("tau", -1.0), ("numeric_transform", "log"), ("ema_decay", 1.0),
    ("max_seconds", 0.0), ("head_hidden", -1), ("n_quantiles", 1),
])
def test_config_errors_name_the_field(field: str, value) -> None:
    with pytest.raises(ValueError, match=f"user_gan.{field}:") as e:
        UserGANConfig(**{field: value})
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------------- baseline
def test_independent_marginals_match_marginals_but_not_dependence(data: Profiles) -> None:
    n = 20_000
    synthetic = IndependentMarginalsSampler(data).sample(n, seed=1)
    n_eff = len(data) * n / (len(data) + n)
    for name, tv in marginal_tv(data, synthetic).items():
        k = data.cardinalities[data.categorical_names.index(name)]
        assert tv < 2.0 * np.sqrt(k / n_eff), name  # E[TV] ~ sqrt(k / (2 pi n)) for two samples
    for name, ks in marginal_ks(data, synthetic).items():
        assert ks < 1.95 / np.sqrt(n_eff), name  # the KS test's 0.1 % critical value
    real, fake, owner = correlation_matrices(data, synthetic)
    across = owner[:, None] != owner[None, :]
    i, j = np.unravel_index(np.argmax(np.abs(real) * across), real.shape)
    assert abs(real[i, j]) > 0.3  # TrueWorld profiles are correlated (segment -> activity, region)
    assert abs(fake[i, j]) < 4.0 / np.sqrt(n)
    cat, num = IndependentMarginalsSampler(data).sample_keys(rng.seed_key(np.arange(10)))
    np.testing.assert_array_equal(num, IndependentMarginalsSampler(data).sample_keys(rng.seed_key(np.arange(10)))[1])


# ----------------------------------------------------------------------------------------- C2ST
def test_c2st_is_half_for_one_distribution_and_near_one_for_different_ones() -> None:
    n = 1500
    a, b = _true_profiles(n, 0), _true_profiles(n, 10_000)
    # under H0 the AUC's standard error is ~sqrt((2n + 1) / (12 n^2)) = 0.0105 here; allow ~5 of them
    assert abs(c2st_auc(a, b) - 0.5) < 0.05
    shifted = Profiles(b.categorical, b.numeric + np.array([40.0, 0.0, 0.0]), b.categorical_names,
                          b.numeric_names, b.cardinalities)
    assert c2st_auc(a, shifted) > 0.97
    swapped = (np.roll(b.categorical, 1, axis=1) % 3, b.numeric)  # (categorical, numeric) tuples work too
    assert c2st_auc((a.categorical, a.numeric), swapped) > 0.9


def test_training_reduces_c2st(data: Profiles) -> None:
    """Calibration is switched off so that only what the networks learned is measured."""
    holdout = _true_profiles(2000, 50_000)
    untrained = fit_user_gan(data, UserGANConfig(**{**TINY, "steps": 0, "calibrate": False}), progress=False)
    trained = fit_user_gan(data, UserGANConfig(**{**TINY, "steps": 600, "batch_size": 200, "calibrate": False}),
                           progress=False)
    auc_untrained = c2st_auc(holdout, untrained.sample(2000, 3), n_folds=3)
    auc_trained = c2st_auc(holdout, trained.sample(2000, 3), n_folds=3)
    assert auc_trained < auc_untrained - 0.05, (auc_untrained, auc_trained)  # measured: 0.92 -> 0.78


def test_calibration_matches_training_marginals(gan: UserGAN, data: Profiles) -> None:
    synthetic = gan.sample(20_000, seed=2)
    n_eff = len(data) * 20_000 / (len(data) + 20_000)
    assert max(marginal_tv(data, synthetic).values()) < 2.0 * np.sqrt(6 / n_eff)
    assert max(marginal_ks(data, synthetic).values()) < 1.95 / np.sqrt(n_eff)


def test_fidelity_report_plot_and_tensorboard(data: Profiles, gan: UserGAN, tmp_path: Path) -> None:
    holdout = _true_profiles(600, 70_000)
    report = profile_fidelity(holdout, gan.sample(600, 1), IndependentMarginalsSampler(data).sample(600, 1), n_folds=3)
    for key in ("c2st_auc", "c2st_auc_marginals_baseline", "correlation_diff"):
        assert 0.0 <= report[key] <= 1.0 or key == "correlation_diff"
    assert set(report["marginal_tv"]) == {"region", "device"}
    assert set(report["marginal_ks"]) == set(report["marginal_wasserstein"]) == {"age", "tenure_months", "activity"}
    png = plot_marginals(holdout, gan.sample(600, 1), tmp_path / "plots" / "marginals.png", baseline=data)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fit_user_gan(data, UserGANConfig(**{**TINY, "steps": 30, "log_every": 10}), progress=False,
                 tensorboard_dir=tmp_path / "tb")
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_default_gan_meets_the_fidelity_target() -> None:
    """The issue's target with the default config (~2-3 CPU minutes): held-out C2ST <= 0.6 and
    below the independent-marginals baseline (measured: 0.54-0.55 vs 0.77)."""
    from recsys.data.splits import split_users

    table = generate_logs(
        lambda n: CampaignVectorEnv(TrueWorld(WORLD, n_users=n), CampaignConfig(), AutoresetMode.DISABLED),
        LoggingPolicy, n_users=20_000, seed=0,
    )
    data = profiles_from_logs(table)
    train_rows = split_users(data.user_ids)["train"]
    train, heldout = data.subset(train_rows), data.subset(~train_rows)
    gan = fit_user_gan(train, UserGANConfig(max_seconds=None), progress=False)
    auc = c2st_auc(heldout, gan.sample(len(heldout), 1))
    baseline = c2st_auc(heldout, IndependentMarginalsSampler(train).sample(len(heldout), 1))
    assert auc <= 0.6 and auc < baseline, (auc, baseline)
