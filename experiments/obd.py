"""Open Bandit Dataset OPE: Bernoulli TS's click rate estimated from the Random logs.

    python -m experiments.obd                                      # all, men, women; < 2 min on 2 cores
    python -m experiments.obd experiment.obd.campaigns=[men] experiment.obd.reward_l2=0.1
    python -m experiments.run experiment=obd                       # the same, through the main entry point

The standard OBD experiment (Saito et al. 2021, "Open Bandit Dataset and Pipeline"): ZOZOTOWN
ran two policies side by side on the same traffic, uniform Random and Bernoulli Thompson
Sampling (BTS). For each campaign we estimate BTS's click rate from the **Random** logs alone
with the per-decision estimators of ``experiments.ope.estimators`` and compare every estimate
with BTS's *on-policy* click rate, the mean click of the BTS logs of the same campaign.

Reads top to bottom:

1. **Evaluation policy.** BTS with the production prior shipped in the obp wheel
   (``obp/policy/conf/prior_bts.yaml``, read as a file; obp is never imported): one Beta(alpha,
   beta) per item and campaign. Like obp's ``BernoulliTS.compute_batch_action_dist``, we draw
   ``n_sim`` samples of every item's Beta, rank the items by their draw, and the item at rank k
   is the one shown at position k; ``action_dist[a, k]`` is the share of draws in which item a
   sits at position k. It is context-free: one distribution for every row.
2. **Positions.** OBD shows 3 items per impression and logs one row per (item, position), with
   the propensity of *that item at that position*. Positions enter per position, as in obp:
   the row (x, item a, position k) is one decision whose evaluation probabilities are the column
   ``pi(. | k) = action_dist[:, k]`` (a distribution over items); its importance weight is
   ``pi(a | k) / propensity`` and the reward model is conditioned on the position too,
   ``q(x, a, k)``. So DM's term for that row is ``sum_a pi(a | k) q(x, a, k)``. The estimand is
   the click rate per shown item, positions weighted as in the logs, which is what the BTS logs'
   mean click measures. Like obp's standard benchmark this treats the three slots as
   independent (the item in slot 1 is assumed not to change clicks in slot 2).
3. **Reward model** (DM and the DR family), fitted on the Random logs only: an L2-regularised
   logistic regression of click on one-hot user features, one-hot item id, one-hot position
   and the item's context (``item_context.csv``: the numeric feature, standardised, and the three
   categorical ones one-hot). It is additive on the logit, so p(click | x, a, k) for all items
   is ``sigmoid(row score + item score)``. Cross-fitted (Narita et al. 2021): rows are split in
   ``cross_fit_folds`` folds and each fold's predictions come from the model fitted on the
   others. A training fold without a single click gets the constant click rate.
4. **Estimates and CIs.** Each logged row is its own one-step "user" (``OPEData`` with T = 1),
   so the estimators' percentile bootstrap resamples rows; the reward model stays fixed during
   the bootstrap (its fitting variance is left out). The on-policy value gets its own bootstrap
   CI over the BTS rows. ``rel_error = |estimate - on-policy| / on-policy``.
5. **Outputs** in the Hydra run dir: ``results.json`` (``ope.bts_<campaign>``, the same shape as the
   main job's ``ope`` entries, plus config, provenance, data summaries and how well the prior-only BTS matches the
   logged BTS traffic), ``logs.parquet`` (the Random logs used, a ``campaign`` column added),
   ``obd_ope.png``, ``report.md`` / ``report.html`` (``experiments.report.obd``) and TensorBoard scalars.

Caveat the report states: the production BTS updated its posterior during the week, the
prior-only simulation does not, so the "on-policy" value belongs to a policy close to, not equal
to, the evaluated one; and with ~40-70 clicks per 10,000 rows every number is noisy (the
on-policy CI alone is about +-30%).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pyarrow as pa
import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from scipy import sparse
from scipy.special import expit
from sklearn.linear_model import LogisticRegression
from tqdm.auto import tqdm

from experiments import config as config_module
from experiments import setup_torch
from experiments.aggregate import write_failure_marker
from experiments.artifacts import provenance
from experiments.ope.data import OPEData
from experiments.report.html import write_report
from experiments.report.obd import obd_sections
from experiments.report.plots import plot_estimates
from recsys.artifacts import atomic_write_json
from recsys.data.io import write_logs
from recsys.data.obd import CAMPAIGNS, N_USER_FEATURES, load_obd, obd_item_context
from recsys.data.schema import CAT_PREFIX, log_metadata, validate_logs, with_metadata
from recsys.stats import bootstrap_mean, log_loss, roc_auc

log = logging.getLogger("campaign_gym")
_LOGLOSS_EPS = 1e-12  # probability clip of the reward model's log loss
N_POSITIONS = 3  # OBD shows three items per impression (positions 1..3 in the files)
PRIOR_IN_WHEEL = "obp/policy/conf/prior_bts.yaml"
SIM_CHUNK = 10_000  # Beta draws simulated at once (memory: chunk x items floats)


# --------------------------------------------------------------------------- 1. evaluation policy
def bts_prior_file(path: str | Path | None = None) -> Path:
    """The BTS prior yaml: ``path`` if given, else the file in the installed obp wheel."""
    if path is None:
        try:
            path = Path(str(importlib_metadata.distribution("obp").locate_file(PRIOR_IN_WHEEL)))
        except importlib_metadata.PackageNotFoundError:
            raise FileNotFoundError("obd: the BTS prior comes with the obp wheel, which is not installed; "
                                    "run `pip install --no-deps obp==0.4.1` or set experiment.obd.prior_path") from None
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"obd: no BTS prior file at {str(path)!r}; set experiment.obd.prior_path to "
                                f"a yaml like {PRIOR_IN_WHEEL} ({{campaign: {{alpha: [...], beta: [...]}}}})")
    return path


def load_bts_prior(campaign: str, n_items: int, path: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, beta) of the production BTS prior for ``campaign``: one Beta per item id."""
    file = bts_prior_file(path)
    try:
        prior = yaml.safe_load(file.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"obd: BTS prior {str(file)!r} is not valid yaml ({' '.join(str(e).split())[:120]})") from None
    if not isinstance(prior, dict) or campaign not in prior:
        has = ", ".join(map(str, prior)) if isinstance(prior, dict) else type(prior).__name__
        raise ValueError(f"obd: BTS prior {str(file)!r} has no campaign {campaign!r} (it has: {has})")
    entry = prior[campaign]
    if not isinstance(entry, dict) or not {"alpha", "beta"} <= set(entry):
        raise ValueError(f"obd: BTS prior {campaign!r} must hold lists 'alpha' and 'beta', got {entry!r:.80}")
    alpha, beta = (np.asarray(entry[k], dtype=np.float64) for k in ("alpha", "beta"))
    if alpha.shape != (n_items,) or beta.shape != (n_items,):
        raise ValueError(f"obd: BTS prior {campaign!r} has {alpha.size} alphas and {beta.size} betas, "
                         f"expected {n_items} each (one per item of item_context.csv)")
    if not (np.isfinite(alpha).all() and np.isfinite(beta).all() and (alpha > 0).all() and (beta > 0).all()):
        raise ValueError(f"obd: BTS prior {campaign!r}: alpha and beta must be finite and > 0")
    return alpha, beta


def bts_action_dist(alpha: np.ndarray, beta: np.ndarray, n_positions: int = N_POSITIONS, n_sim: int = 100_000,
                    seed: int = 0, progress: bool = False) -> np.ndarray:
    """(items, positions) Bernoulli TS's distribution over items at each position, by Monte
    Carlo: per draw, sample every item's Beta(alpha, beta), rank the items by the sample (highest
    first); the item at rank k is shown at position k. Column k sums to 1; a row's sum is the
    chance the item is shown at all (<= 1)."""
    n_items = alpha.size
    if not 1 <= n_positions <= n_items:
        raise ValueError(f"obd: n_positions must be in [1, {n_items}] (the number of items), got {n_positions}")
    rng = np.random.default_rng(seed)
    counts = np.zeros((n_items, n_positions))
    sizes = [min(SIM_CHUNK, n_sim - start) for start in range(0, n_sim, SIM_CHUNK)]
    for size in tqdm(sizes, desc="bts draws", leave=False, disable=not progress):
        shown = np.argsort(-rng.beta(alpha, beta, size=(size, n_items)), axis=1)[:, :n_positions]
        for k in range(n_positions):
            counts[:, k] += np.bincount(shown[:, k], minlength=n_items)
    return counts / n_sim


def uniform_action_dist(n_items: int, n_positions: int = N_POSITIONS) -> np.ndarray:
    """(items, positions) the Random policy: every item equally likely at every position."""
    return np.full((n_items, n_positions), 1.0 / n_items)


# --------------------------------------------------------------------------- 2. reward model
@dataclass(frozen=True)
class Rows:
    """One campaign's logs as arrays; ``position`` is 0-based here (the files' slot - 1)."""

    item: np.ndarray  # (n,) item id = action
    position: np.ndarray  # (n,) 0..N_POSITIONS-1
    click: np.ndarray  # (n,) 0/1
    propensity: np.ndarray  # (n,) logging probability of the item at that position
    user: np.ndarray  # (n, N_USER_FEATURES) codes of the hashed user features
    user_cards: tuple[int, ...]  # number of codes of each user feature

    @classmethod
    def from_table(cls, table: pa.Table) -> Rows:
        cards = log_metadata(table)["categorical_cardinality"]
        names = [f"user_feature_{k}" for k in range(N_USER_FEATURES)]
        return cls(
            item=table["action"].to_numpy(), position=table["position"].to_numpy() - 1,
            click=table["click"].to_numpy().astype(np.float64), propensity=table["propensity"].to_numpy(),
            user=np.stack([table[CAT_PREFIX + n].to_numpy() for n in names], axis=1),
            user_cards=tuple(cards[n] for n in names),
        )


def _one_hot(codes: np.ndarray, n: int) -> sparse.csr_matrix:
    return sparse.csr_matrix((np.ones(len(codes)), (np.arange(len(codes)), codes)), shape=(len(codes), n))


def row_features(rows: Rows) -> sparse.csr_matrix:
    """(n, d_row) one-hot user features and position: what the click depends on besides the item."""
    blocks = [_one_hot(rows.user[:, k], card) for k, card in enumerate(rows.user_cards)]
    return sparse.hstack([*blocks, _one_hot(rows.position, N_POSITIONS)], format="csr")


def item_features(items: pa.Table) -> sparse.csr_matrix:
    """(n_items, d_item) one-hot item id plus the item context (numeric standardised,
    categorical one-hot), so that items with few logged rows borrow strength from similar ones."""
    n = items.num_rows
    num = items["num_item_feature_0"].to_numpy()
    num = (num - num.mean()) / (num.std() or 1.0)
    cards = log_metadata(items)["categorical_cardinality"]
    cats = [_one_hot(items[CAT_PREFIX + name].to_numpy(), card) for name, card in sorted(cards.items())]
    return sparse.hstack([sparse.identity(n, format="csr"), sparse.csr_matrix(num[:, None]), *cats], format="csr")


def fit_reward_model(rows: Rows, items: pa.Table, folds: int = 2, l2: float = 1.0, seed: int = 0) -> np.ndarray:
    """(n, n_items) cross-fitted p(click | x_i, item a, position k_i) for every row i and item a.

    Logistic regression, additive on the logit: ``sigmoid(row_x @ w_row + b + item_x[a] @ w_item)``.
    Each fold's rows are predicted by the model fitted on the other folds (``folds=1``: in-sample).
    """
    row_x, item_x = row_features(rows), item_features(items)
    n, d_row = row_x.shape
    fold = np.random.default_rng(seed).permutation(n) % folds
    q = np.zeros((n, item_x.shape[0]))
    for f in range(folds):
        test = fold == f
        train = ~test if folds > 1 else test
        y = rows.click[train]
        if y.min() == y.max():  # one class only: nothing to fit, predict its constant rate
            q[test] = y.mean()
            continue
        x = sparse.hstack([row_x[train], item_x[rows.item[train]]], format="csr")
        model = LogisticRegression(C=l2, max_iter=2000).fit(x, y)
        w = model.coef_[0]
        row_score = row_x[test] @ w[:d_row] + model.intercept_[0]
        q[test] = expit(row_score[:, None] + (item_x @ w[d_row:])[None, :])
    return q


# --------------------------------------------------------------------------- 3. OPE per campaign
def ope_data(rows: Rows, action_dist: np.ndarray, q_hat: np.ndarray | None = None) -> OPEData:
    """The Random logs as OPEData: each row a one-step user whose evaluation probabilities are
    the column of its position, ``pi(. | k_i) = action_dist[:, k_i]``."""
    n = len(rows.item)
    pi = action_dist[:, rows.position].T  # (n, items)
    return OPEData(
        actions=rows.item[:, None], rewards=rows.click[:, None], propensities=rows.propensity[:, None],
        mask=np.ones((n, 1), dtype=bool), pi=pi[:, None, :], q_hat=None if q_hat is None else q_hat[:, None, :],
    )


def reward_model_fit(rows: Rows, q_hat: np.ndarray) -> dict[str, float | None]:
    """Cross-fitted quality of the reward model on the logged rows: AUC and log loss, next to
    the log loss of the constant click rate (a model worth using beats it)."""
    p = q_hat[np.arange(len(rows.item)), rows.item]
    base = np.full_like(p, rows.click.mean())
    return {"auc": roc_auc(rows.click, p),  # NaN (null in JSON) without both outcomes
            "log_loss": log_loss(rows.click, p, eps=_LOGLOSS_EPS),
            "log_loss_constant": log_loss(rows.click, base, eps=_LOGLOSS_EPS),
            "mean_prediction": float(p.mean()), "click_rate": float(rows.click.mean())}


def bts_match(action_dist: np.ndarray, bts: Rows) -> dict[str, Any]:
    """How close the prior-only BTS is to the policy that logged the BTS rows: the correlation
    of ``action_dist`` with the logged (item, position) frequencies and with the logged
    propensities, and the mean total-variation distance per position."""
    freq = np.zeros_like(action_dist)
    np.add.at(freq, (bts.item, bts.position), 1.0)
    freq /= freq.sum(axis=0, keepdims=True)
    sim = action_dist[bts.item, bts.position]
    return {
        "corr_with_logged_frequencies": float(np.corrcoef(freq.ravel(), action_dist.ravel())[0, 1]),
        "corr_with_logged_propensities": float(np.corrcoef(sim, bts.propensity)[0, 1]),
        "total_variation_per_position": float(0.5 * np.abs(freq - action_dist).sum(axis=0).mean()),
    }


def evaluate_campaign(campaign: str, obd: config_module.ObdConfig, seed: int, progress: bool) -> dict[str, Any]:
    """Every estimator of BTS's click rate on one campaign's Random logs, and the truth."""
    random_table = load_obd("random", campaign, obd.data_path)
    items = obd_item_context("random", campaign, obd.data_path)
    random, bts = Rows.from_table(random_table), Rows.from_table(load_obd("bts", campaign, obd.data_path))
    campaign_seed = [seed, CAMPAIGNS.index(campaign)]

    alpha, beta = load_bts_prior(campaign, items.num_rows, obd.prior_path)
    action_dist = bts_action_dist(alpha, beta, N_POSITIONS, obd.n_sim, campaign_seed, progress)
    q_hat = fit_reward_model(random, items, obd.cross_fit_folds, obd.reward_l2, seed)
    data = ope_data(random, action_dist, q_hat)

    # Two independent samples: the on-policy bootstrap uses its own resamples (seed + 1).
    truth = bootstrap_mean(bts.click, obd.n_bootstrap, obd.ci_level, seed + 1)
    estimates = {}
    for est in tqdm(obd.estimators.build(seed), desc=f"estimators ({campaign})", leave=False, disable=not progress):
        iv = est.estimate(data, obd.n_bootstrap, obd.ci_level, seed)
        estimates[est.name] = {"estimate": iv.mean, "ci_low": iv.ci_low, "ci_high": iv.ci_high,
                               "rel_error": abs(iv.mean - truth.mean) / truth.mean if truth.mean else None,
                               "covers_true_value": iv.ci_low <= truth.mean <= iv.ci_high}
    return {
        "ope": {"true_value": truth.mean, "true_value_ci": [truth.ci_low, truth.ci_high], "estimators": estimates},
        "data": {"n_items": items.num_rows, "random_rows": len(random.item), "bts_rows": len(bts.item),
                 "random_clicks": int(random.click.sum()), "bts_clicks": int(bts.click.sum()),
                 "random_click_rate": float(random.click.mean())},
        "bts_policy": {"max_pi_per_position": action_dist.max(axis=0).tolist(),
                       "max_weight": float((action_dist / random.propensity.min()).max()),
                       **bts_match(action_dist, bts)},
        "reward_model": reward_model_fit(random, q_hat),
        "logs": random_table,
    }


# --------------------------------------------------------------------------- 4. run, results, report
def run(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """The whole experiment; writes every artifact into ``out`` and returns results.json's content."""
    config = config_module.load(cfg)
    if config.experiment.kind != "obd":
        raise ValueError(f"experiment.kind: the OBD experiment needs experiment=obd, got {config.experiment.kind!r}")
    exp, obd = config.experiment, config.experiment.obd
    setup_torch(exp.torch_threads)
    bts_prior_file(obd.prior_path)  # fail before any work if the prior is missing
    per_campaign = {}
    for campaign in tqdm(obd.campaigns, desc="obd campaigns", disable=not exp.progress):
        log.info("obd: BTS from the Random logs of campaign %s", campaign)
        per_campaign[campaign] = evaluate_campaign(campaign, obd, exp.seed, exp.progress)

    ope = {f"bts_{c}": r["ope"] for c, r in per_campaign.items()}
    names = list(next(iter(ope.values()))["estimators"])
    mean_rel = {n: float(np.mean([v["estimators"][n]["rel_error"] for v in ope.values()])) for n in names}
    results = {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "seeds": {"experiment": exp.seed},
        "provenance": provenance(),
        "data": {c: r["data"] for c, r in per_campaign.items()},
        "bts_policy": {c: r["bts_policy"] for c, r in per_campaign.items()},
        "reward_model": {c: r["reward_model"] for c, r in per_campaign.items()},
        "ope": ope,
        "summary": {"mean_rel_error": mean_rel, "objective": float(np.mean(list(mean_rel.values())))},
    }
    write_logs(_combined_logs({c: r["logs"] for c, r in per_campaign.items()}), out / "logs.parquet")
    atomic_write_json(out / "results.json", results)
    plot_estimates(ope, out / "obd_ope.png", obd.ci_level)
    _tensorboard(out / "tensorboard", results)
    write_report(out, obd_sections(results), f"campaign-gym: Open Bandit Dataset OPE, seed {exp.seed}")
    log.info("wrote %s", out)
    return results


def _combined_logs(tables: dict[str, pa.Table]) -> pa.Table:
    """The Random logs of every campaign in one logs table: a ``campaign`` column, user ids
    made unique (each row is a one-step user). User feature codes are per campaign file."""
    parts, offset = [], 0
    for campaign, t in tables.items():
        t = t.set_column(t.column_names.index("user_id"), "user_id", pa.array(t["user_id"].to_numpy() + offset))
        parts.append(t.append_column("campaign", pa.array([campaign] * t.num_rows)).replace_schema_metadata(None))
        offset += t.num_rows
    metas = [log_metadata(t) for t in tables.values()]
    cards = {k: max(m["categorical_cardinality"][k] for m in metas) for k in metas[0]["categorical_cardinality"]}
    meta = {"n_actions": max(m["n_actions"] for m in metas), "categorical_cardinality": cards,
            "source": "obd/random/" + "+".join(tables), "position": "OBD slot 1..3 as in the files", "no_offer_action": None,
            "note": "user feature codes are numbered per campaign file; see the campaign column"}
    table = with_metadata(pa.concat_tables(parts), meta)
    validate_logs(table)
    return table


def _tensorboard(path: Path, results: dict[str, Any]) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(path)) as writer:
        writer.add_text("config", "```\n" + OmegaConf.to_yaml(OmegaConf.create(results["config"]["experiment"])) + "\n```")
        for policy, res in results["ope"].items():
            writer.add_scalar(f"obd/{policy}/true_value", res["true_value"])
            for name, e in res["estimators"].items():
                writer.add_scalar(f"obd/{policy}/rel_error/{name}", e["rel_error"])
                writer.add_scalar(f"obd/{policy}/estimate/{name}", e["estimate"])


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float:
    out = Path(HydraConfig.get().runtime.output_dir)
    try:
        results = run(cfg, out)
    except Exception:  # FAILED.txt for experiments.aggregate, as experiments.run does
        write_failure_marker(out)
        log.exception("job failed; traceback in %s", out / "FAILED.txt")
        raise
    return float(results["summary"]["objective"])  # sweeps minimise the mean relative error


def main() -> None:
    """``python -m experiments.obd [overrides]``: ``experiment=obd`` unless another experiment is named."""
    if not any(arg.startswith("experiment=") for arg in sys.argv[1:]):
        sys.argv.insert(1, "experiment=obd")
    config_module.register()
    _hydra_main()


if __name__ == "__main__":
    main()
