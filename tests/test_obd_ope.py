"""The Open Bandit Dataset OPE experiment (experiments.obd): the BTS action distribution,
IPS/SNIPS on the Random policy itself, the end-to-end `experiment=obd` run, one-line errors."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from experiments import config as config_module
from experiments.obd import (
    Rows,
    bts_action_dist,
    fit_reward_model,
    load_bts_prior,
    ope_data,
    uniform_action_dist,
)
from experiments.ope import IPS, SNIPS
from recsys.data.obd import load_obd, obd_item_context

try:
    importlib_metadata.distribution("obp")
except importlib_metadata.PackageNotFoundError:  # pragma: no cover
    pytest.skip("obp wheel (OBD sample files, BTS prior) not installed: pip install --no-deps obp==0.4.1",
                allow_module_level=True)

ROOT = Path(__file__).resolve().parent.parent
CAMPAIGNS = ("all", "men", "women")
ESTIMATORS = {"dm", "ips", "snips", "dr", "sndr", "switch_dr", "dr_os"}
N_ITEMS = {"all": 80, "men": 34, "women": 46}


@pytest.fixture(scope="module")
def random_all() -> Rows:
    return Rows.from_table(load_obd("random", "all"))


# --------------------------------------------------------------------------- BTS action distribution
@pytest.mark.parametrize("campaign", CAMPAIGNS)
def test_bts_action_dist_is_a_distribution_over_items_per_position(campaign):
    alpha, beta = load_bts_prior(campaign, N_ITEMS[campaign])
    dist = bts_action_dist(alpha, beta, n_positions=3, n_sim=20_000, seed=0)
    assert dist.shape == (N_ITEMS[campaign], 3)
    assert (dist >= 0).all()
    assert np.allclose(dist.sum(axis=0), 1.0)  # every draw shows exactly one item per position
    assert (dist.sum(axis=1) <= 1.0 + 1e-12).all()  # an item sits in at most one position per draw
    assert np.array_equal(dist, bts_action_dist(alpha, beta, 3, 20_000, seed=0))  # seeded
    # the item with the best prior mean is the most likely one at the top position
    best = int(np.argmax(alpha / (alpha + beta)))
    assert dist[best, 0] == dist[:, 0].max()


def test_bts_action_dist_ranks_by_the_beta_draws():
    # item 2 is (almost) surely best, item 0 surely worst: position 0 <- 2, 1 <- 1, and 0 never shown
    alpha, beta = np.array([1.0, 50.0, 500.0]), np.array([1000.0, 500.0, 50.0])
    dist = bts_action_dist(alpha, beta, n_positions=2, n_sim=2_000, seed=1)
    assert np.allclose(dist, [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0]])


# --------------------------------------------------------------------------- estimators on OBD
def test_random_policy_ips_and_snips_equal_the_mean_click(random_all):
    """pi = propensity (uniform over items at every position): every weight is 1."""
    data = ope_data(random_all, uniform_action_dist(80))
    assert np.allclose(data.weights(), 1.0)
    mean_click = random_all.click.mean()
    half = ope_data(Rows(**{**vars(random_all), **{k: getattr(random_all, k)[: len(random_all.item) // 4]
                                                      for k in ("item", "position", "click", "propensity", "user")}}),
                    uniform_action_dist(80))
    for est in (IPS(), SNIPS()):
        iv = est.estimate(data, n_boot=200)
        assert iv.mean == pytest.approx(mean_click, abs=1e-12), est.name
        # a quarter of the rows: the percentile CI is about twice as wide (1 / sqrt(n))
        quarter = est.estimate(half, n_boot=200)
        ratio = (quarter.ci_high - quarter.ci_low) / (iv.ci_high - iv.ci_low)
        assert 1.5 < ratio < 2.7, (est.name, ratio)


def test_each_row_is_weighted_by_its_position(random_all):
    alpha, beta = load_bts_prior("all", 80)
    dist = bts_action_dist(alpha, beta, n_sim=5_000, seed=0)
    data = ope_data(random_all, dist)
    expected = dist[random_all.item, random_all.position] / random_all.propensity
    assert np.allclose(data.weights()[:, 0], expected)
    assert np.allclose(data.pi[:, 0], dist[:, random_all.position].T)


def test_reward_model_predicts_every_item_cross_fitted(random_all):
    items = obd_item_context("random", "all")
    q = fit_reward_model(random_all, items, folds=2, l2=0.01, seed=0)
    assert q.shape == (len(random_all.item), 80) and ((q > 0) & (q < 1)).all()
    assert abs(q[np.arange(len(q)), random_all.item].mean() - random_all.click.mean()) < 0.002
    # a training fold without clicks has nothing to fit: the constant (zero) rate
    no_clicks = Rows(**{**vars(random_all), "click": np.zeros_like(random_all.click)})
    assert (fit_reward_model(no_clicks, items, folds=2) == 0.0).all()


# --------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def obd_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("obd")
    cmd = [sys.executable, "-m", "experiments.run", "experiment=obd", f"hydra.run.dir={out}",
           "experiment.progress=false", "experiment.obd.n_sim=5000", "experiment.obd.n_bootstrap=100"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def test_experiment_obd_writes_every_campaign_and_estimator(obd_run):
    results = json.loads((obd_run / "results.json").read_text())
    assert set(results["ope"]) == {f"bts_{c}" for c in CAMPAIGNS}
    for policy, res in results["ope"].items():
        campaign = policy.removeprefix("bts_")
        truth, (lo, hi) = res["true_value"], res["true_value_ci"]
        assert truth == pytest.approx(Rows.from_table(load_obd("bts", campaign)).click.mean())  # the BTS logs
        assert 0 < lo and hi < 0.05, policy  # OBD click rates are well below 1%
        assert set(res["estimators"]) == ESTIMATORS
        for name, e in res["estimators"].items():
            values = [e["estimate"], e["ci_low"], e["ci_high"], e["rel_error"]]
            assert all(isinstance(v, float) and math.isfinite(v) for v in values), (policy, name, e)
            assert e["rel_error"] == pytest.approx(abs(e["estimate"] - truth) / truth)
        # IPS by hand: mean over Random rows of pi(item | position) / propensity * click, with the
        # run's BTS distribution (its seed is [experiment seed, campaign index])
        random = Rows.from_table(load_obd("random", campaign))
        alpha, beta = load_bts_prior(campaign, N_ITEMS[campaign])
        dist = bts_action_dist(alpha, beta, 3, 5000, seed=[0, CAMPAIGNS.index(campaign)])
        ips = np.mean(dist[random.item, random.position] / random.propensity * random.click)
        assert res["estimators"]["ips"]["estimate"] == pytest.approx(ips, rel=1e-9), policy
    assert results["config"]["experiment"]["kind"] == "obd" and results["provenance"]["packages"]["numpy"]
    for name in ("report.md", "report.html", "obd_ope.png", "logs.parquet"):
        assert (obd_run / name).stat().st_size > 0, name
    assert "data:image/png;base64," in (obd_run / "report.html").read_text()
    assert list((obd_run / "tensorboard").glob("events.out.tfevents.*"))


# --------------------------------------------------------------------------- errors
def _load(overrides: list[str]) -> config_module.Config:
    config_module.register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return config_module.load(compose("config", overrides=["experiment=obd", *overrides]))


@pytest.mark.parametrize("override, message", [
    ("experiment.obd.campaigns=[kids]", "experiment.obd.campaigns: got ['kids']"),
    ("experiment.obd.estimators.names=[ips,pdis]", "['pdis'] are not per-decision estimators"),
    ("experiment.kind=obp", "experiment.kind: got 'obp'"),
])
def test_bad_config_fails_in_one_line(override, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")) as err:
        _load([override])
    assert "\n" not in str(err.value)


def test_default_obd_config_loads():
    obd = _load([]).experiment.obd
    assert obd.campaigns == list(CAMPAIGNS) and set(obd.estimators.names) == ESTIMATORS


def test_bad_prior_fails_in_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="no BTS prior file at") as err:
        load_bts_prior("all", 80, tmp_path / "missing.yaml")
    assert "\n" not in str(err.value)
    only_men = tmp_path / "prior.yaml"
    only_men.write_text("men:\n  alpha: [1.0, 2.0]\n  beta: [3.0, 4.0]\n")
    with pytest.raises(ValueError, match="has no campaign 'all' \\(it has: men\\)"):
        load_bts_prior("all", 2, only_men)
    with pytest.raises(ValueError, match="has 2 alphas and 2 betas, expected 34"):
        load_bts_prior("men", 34, only_men)
    only_men.write_text("men:\n  alpha: [1.0, -2.0]\n  beta: [3.0, 4.0]\n")
    with pytest.raises(ValueError, match="must be finite and > 0"):
        load_bts_prior("men", 2, only_men)
