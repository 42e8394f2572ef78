"""Every policy a run compares, by name: one registry instead of lambdas in the job.

A *factory* builds a policy for a batched env (``factory(env) -> Policy``); rollouts build one
per batch of users, so a stateful policy never leaks state from one batch into the next.

======================  ==========================================================================
name                    what
======================  ==========================================================================
``logging``             the logging policy of the logs (softmax over a heuristic, rests sometimes)
``random``              uniform over allowed actions
``greedy``              the observable heuristic, argmax
``no_offer``            never sends
``softmax``             a sharper logging policy (temperature 0.1, no rests)
``<agent>``             a trained SB3 agent (``experiment.agents``)
``<recommender>``       a fitted recommender, greedy (``recommender.names``)
``<bandit>``            a linear bandit learning online (``epsilon_greedy``, ``lin_ucb``, ``linear_ts``)
``oracle_greedy``       reads TrueWorld's hidden state: best immediate expected reward (TrueWorld only)
``nurture``             reads TrueWorld's hidden state and plans rests and rotations (TrueWorld only)
======================  ==========================================================================

Off-policy evaluation adds ``<recommender>_softmax`` (stochastic, full support) and
``<bandit>_frozen`` (warm-started on the training logs, then frozen: a bandit that keeps
learning has no fixed value to estimate).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agents.bandits import EpsilonGreedyBandit, LinearThompsonBandit, LinUCBBandit
from agents.base import Frozen, Policy, logged_action_probs
from agents.recommender_policy import RecommenderPolicy
from agents.reference import (
    GreedyHeuristicPolicy,
    LoggingPolicy,
    NoOfferPolicy,
    NurturePolicy,
    OracleGreedyPolicy,
    RandomPolicy,
)
from agents.sb3 import SB3Policy
from envs.vector_env import CampaignVectorEnv
from experiments.config import Config
from experiments.ope.evaluate import logged_rewards
from recsys.data.replay import LoggedData
from recsys.recommenders import Recommender

Factory = Callable[[CampaignVectorEnv], Policy]
BANDITS = (EpsilonGreedyBandit, LinUCBBandit, LinearThompsonBandit)
ORACLES: dict[str, Factory] = {"oracle_greedy": OracleGreedyPolicy, "nurture": NurturePolicy}
FIXED = ("logging", "random", "greedy", "no_offer", "softmax")  # compared in both worlds by fit_simulator too
POLICY_KINDS = ("RL agent", "recommender (greedy)", "recommender (softmax)", "baseline", "bandit (frozen)")


def fixed_policies(config: Config) -> dict[str, Factory]:
    """The reference policies that need nothing fitted (``FIXED``)."""
    logs, seed = config.experiment.logs, config.experiment.seed

    def logging(env: CampaignVectorEnv) -> Policy:
        return LoggingPolicy(env, logs.temperature, logs.epsilon, logs.rest_probability, seed=seed)

    def random(env: CampaignVectorEnv) -> Policy:
        return RandomPolicy(env.catalog.n_actions, seed=seed)

    def no_offer(env: CampaignVectorEnv) -> Policy:
        return NoOfferPolicy(env.catalog.n_actions)

    def softmax(env: CampaignVectorEnv) -> Policy:
        return LoggingPolicy(env, temperature=0.1, epsilon=0.05, rest_probability=0.0, seed=seed)

    return {"logging": logging, "random": random, "greedy": GreedyHeuristicPolicy, "no_offer": no_offer,
            "softmax": softmax}


def agent_policy(model: Any, name: str, deterministic: bool, seed: int) -> Factory:
    """A trained SB3 model as a factory (each batch gets its own recurrent state)."""
    return lambda env: SB3Policy(model, name, deterministic, seed)


def recommender_policy(recommender: Recommender, mode: str = "greedy", temperature: float = 1.0,
                       seed: int = 0) -> Factory:
    return lambda env: RecommenderPolicy(recommender, env, mode, temperature, seed)


def bandit_policy(cls: Any, seed: int) -> Factory:
    return lambda env: cls.for_env(env, seed=seed)


def frozen_bandit(cls: Any, config: Config, train: LoggedData) -> Factory:
    """One bandit that learned from the training logs' rewards, then frozen (built once)."""
    built: list[Policy] = []

    def make(env: CampaignVectorEnv) -> Policy:
        if not built:
            bandit = cls.for_env(env, seed=config.experiment.seed)
            logged_action_probs(bandit, train, logged_rewards(config.campaign, env.catalog, train.data))
            built.append(Frozen(bandit))
        return built[0]
    return make


def comparison_roster(config: Config, models: dict[str, Any], recommenders: dict[str, Recommender]) -> dict[str, Factory]:
    """Everything the run compares in both worlds (the oracles are added for TrueWorld only)."""
    seed = config.experiment.seed
    return {
        **{name: agent_policy(m, name, config.agents[name].deterministic_eval, seed) for name, m in models.items()},
        **{name: recommender_policy(r) for name, r in recommenders.items()},
        **fixed_policies(config),
        **{cls.name: bandit_policy(cls, seed) for cls in BANDITS},
    }


def ope_names(config: Config) -> set[str]:
    """Every name ``experiment.ope.policies`` may use in this run."""
    names = config.recommender.names
    return ({*FIXED, *config.experiment.agents, *names} | {f"{r}_softmax" for r in names}
            | {f"{b.name}_frozen" for b in BANDITS})


def check_ope_policies(config: Config) -> None:
    """Fail before any work if ``experiment.ope.policies`` names a policy the run will not have."""
    available = ope_names(config)
    unknown = [p for p in config.experiment.ope.policies if p not in available] if config.experiment.ope.draws else []
    if unknown:
        raise ValueError(f"experiment.ope.policies: unknown {unknown}; available: {sorted(available)}")


def ope_roster(config: Config, roster: dict[str, Factory], models: dict[str, Any],
               recommenders: dict[str, Recommender], train: LoggedData) -> tuple[dict[str, Factory], dict[str, str]]:
    """The policies named in ``experiment.ope.policies`` and their kinds (``POLICY_KINDS``)."""
    ope, seed = config.experiment.ope, config.experiment.seed
    bandit_names = {cls.name for cls in BANDITS}
    available = {name: f for name, f in roster.items() if name not in bandit_names}
    kinds = {name: "RL agent" if name in models else "recommender (greedy)" if name in recommenders else "baseline"
             for name in available}
    for name, rec in recommenders.items():
        available[f"{name}_softmax"] = recommender_policy(rec, "softmax", ope.softmax_temperature, seed)
        kinds[f"{name}_softmax"] = "recommender (softmax)"
    for cls in BANDITS:
        available[f"{cls.name}_frozen"] = frozen_bandit(cls, config, train)
        kinds[f"{cls.name}_frozen"] = "bandit (frozen)"
    return {p: available[p] for p in ope.policies}, {p: kinds[p] for p in ope.policies}
