"""Structured configs: the types behind ``conf/``.

Hydra merges the yaml groups into these dataclasses, so a wrong key or a wrong type fails
before any work starts ("Key 'n_ofers' not in 'TrueWorldConfig'"); ``load`` then builds the
dataclasses, whose ``__post_init__`` checks values (ranges, choices) with one-line messages.
"""

from __future__ import annotations

import inspect
import os
import sys
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from agents.sb3 import ALGORITHMS, check_checkpoint
from agents.sb3.algorithms import policy_name
from envs.campaign import CampaignConfig
from envs.pessimism import Pessimism
from envs.true_world import TrueWorldConfig
from experiments.ope.registry import PER_DECISION_ESTIMATORS, EstimatorConfig
from recsys.data.profiles import MIN_USERS
from recsys.recommenders import RECOMMENDERS, make_recommender
from recsys.simulator.response_model import ResponseModelConfig
from recsys.simulator.user_gan import UserGANConfig

MIN_BOOTSTRAP = 10  # resamples of a percentile CI: fewer cannot give its quantiles
MAX_SEED = 1_000_000  # seed * USERS_PER_SEED must stay far inside int64 (counter-based user keys)
MAX_USERS = 5_000_000  # per seed and purpose: user ids come from disjoint blocks (experiments.run)
ALGOS = tuple(ALGORITHMS)  # ppo, a2c, dqn, maskable_ppo, recurrent_ppo
LOG_DATASETS = ("movielens",)  # experiment.logs.dataset: real logs bundled with an installed wheel


@cache
def _constructor_arguments(algo: str) -> frozenset[str]:
    """The keyword arguments an SB3 algorithm's constructor takes (hyperparameters are checked
    against them before any work starts)."""
    return frozenset(inspect.signature(ALGORITHMS[algo].__init__).parameters) - {"self", "policy", "env"}


def _policy_arguments(algo: str) -> frozenset[str]:
    """The keyword arguments of the policy class ``agents.sb3.build_agent`` gives the algorithm
    (``hyperparams.policy_kwargs`` is checked against them)."""
    policy = ALGORITHMS[algo].policy_aliases[policy_name(algo)]
    return frozenset(inspect.signature(policy.__init__).parameters) - {"self", "observation_space", "action_space",
                                                                       "lr_schedule", "net_arch"}


USER_SOURCES = ("gan", "logged")


@dataclass
class LearnedWorldConfig:
    """How the learned world is built from a fitted simulator: where its users come from and
    how it distrusts itself off the logged distribution (``envs.pessimism``). Every mechanism
    but ``users`` needs ``simulator.response_model.ensemble_size >= 2``."""

    reward_penalty: float = 0.0  # MOPO lambda: reward - lambda * u(s, a)
    # threshold = this quantile of u over held-out logged sends; steps above it are reported as
    # off the logged distribution (with an ensemble), and halt there when `halt`
    threshold_quantile: float = 0.99
    halt: bool = False  # MOReL: users halt on a step above the threshold ...
    halt_penalty: float = 0.0  # ... with this reward charged (kappa)
    member_per_user: bool = False  # each user follows one ensemble member drawn at reset
    users: str = "gan"  # gan: profiles from the user GAN | logged: resampled logged profiles

    def __post_init__(self) -> None:
        Pessimism(self.reward_penalty, 0.0, self.halt, self.halt_penalty, self.member_per_user)  # same checks
        if not 0.0 < self.threshold_quantile <= 1.0:
            raise ValueError(f"simulator.learned_world.threshold_quantile: must be in (0, 1], got {self.threshold_quantile}")
        if self.users not in USER_SOURCES:
            raise ValueError(f"simulator.learned_world.users: got {self.users!r}, expected one of {USER_SOURCES}")

    @property
    def needs_ensemble(self) -> bool:
        return bool(self.reward_penalty or self.halt or self.member_per_user)


@dataclass
class AgentConfig:
    """An SB3 agent: algorithm, budget of env steps, hyperparameters passed to its constructor."""

    algo: str = "ppo"
    total_timesteps: int = 100_000
    n_envs: int = 64  # users stepped together in the batched env
    net_arch: list[int] = field(default_factory=lambda: [64, 64])
    hyperparams: dict[str, Any] = field(default_factory=dict)
    deterministic_eval: bool = False  # evaluate the argmax action instead of sampling the policy
    checkpoint_every: int = 250_000  # env steps between checkpoints (0 = only the final model)
    eval_every: int = 250_000  # env steps between evaluations on held-out users in both worlds (0 = none)
    eval_users: int = 1000  # users of each of those evaluations (the same users every time)
    resume_from: str | None = None  # a checkpoint .zip to continue training from
    train_world: str = "learned"  # learned (the simulator fitted on logs) | true (the ground truth)
    learned_world: LearnedWorldConfig | None = None  # the learned world it trains in (null = simulator.learned_world)

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            raise ValueError(f"agent.algo: got {self.algo!r}, expected one of {ALGOS}")
        if self.total_timesteps < 1:
            raise ValueError(f"agent.total_timesteps: must be >= 1, got {self.total_timesteps}")
        if self.n_envs < 1:
            raise ValueError(f"agent.n_envs: must be >= 1, got {self.n_envs}")
        if self.eval_every < 0 or self.eval_users < 2:
            raise ValueError(f"agent.eval_every / eval_users: need eval_every >= 0 and eval_users >= 2, "
                             f"got {self.eval_every} / {self.eval_users}")
        unknown = sorted(set(self.hyperparams) - _constructor_arguments(self.algo) - {"reward_scale"})
        if unknown:
            raise ValueError(f"agent.hyperparams: {unknown} is not an argument of {ALGORITHMS[self.algo].__name__} "
                             "(check the spelling against the SB3 docs)")
        policy_kwargs = self.hyperparams.get("policy_kwargs") or {}
        unknown = sorted(set(policy_kwargs) - _policy_arguments(self.algo))
        if unknown:
            raise ValueError(f"agent.hyperparams.policy_kwargs: {unknown} is not an argument of "
                             f"{ALGORITHMS[self.algo].__name__}'s policy (net_arch is agent.net_arch)")
        if self.resume_from is not None:
            check_checkpoint(self.resume_from)  # a 0-byte or foreign file fails now, not after the simulator
        self.train_world = str(self.train_world).lower()  # `train_world=true` arrives as the bool True
        if self.train_world not in ("learned", "true"):
            raise ValueError(f"agent.train_world: got {self.train_world!r}, expected 'learned' or 'true'")


@dataclass
class LogsConfig:
    """How the logged data is generated: the logging policy run in TrueWorld."""

    n_users: int = 50000
    temperature: float = 0.5
    epsilon: float = 0.2
    rest_probability: float = 0.3  # share of steps the logging policy sends nothing
    # a user's own logs (experiment=own_logs): a logs parquet file, or a bundled real dataset
    path: str | None = None  # logs in the schema of recsys.data.schema
    catalog: str | None = None  # catalog.json (category, value, discount, contact_cost); null = inferred
    dataset: str | None = None  # movielens: MovieLens-100k from the recbole wheel (recsys.data.movielens)

    def __post_init__(self) -> None:
        if self.dataset not in (None, *LOG_DATASETS):
            raise ValueError(f"experiment.logs.dataset: got {self.dataset!r}, expected null or one of {LOG_DATASETS}")
        if self.path is not None and self.dataset is not None:
            raise ValueError("experiment.logs: set path (your own logs) or dataset, not both")
        if not MIN_USERS <= self.n_users <= MAX_USERS:
            raise ValueError(f"experiment.logs.n_users: must be in [{MIN_USERS}, {MAX_USERS}] (fitting a simulator "
                             f"needs {MIN_USERS} users), got {self.n_users}")


@dataclass
class EvaluationConfig:
    n_users: int = 4000  # users per policy, the same users for every policy
    n_bootstrap: int = 1000
    ci_level: float = 0.95
    n_segments: int = 4  # k-means segments of the observable profile for the per-segment breakdown
    # users stepped together in one batched env; shards cut at batch boundaries (experiments.evaluate)
    batch_size: int = 4096
    shards: int = 1  # contiguous user ranges run as Ray tasks (when Ray is initialised) or local processes

    def __post_init__(self) -> None:
        for name in ("batch_size", "shards"):
            if getattr(self, name) < 1:
                raise ValueError(f"experiment.evaluation.{name}: must be >= 1, got {getattr(self, name)}")
        if self.n_segments < 2:
            raise ValueError(f"experiment.evaluation.n_segments: must be >= 2, got {self.n_segments}")
        if not 2 <= self.n_users <= MAX_USERS:
            raise ValueError(f"experiment.evaluation.n_users: must be in [2, {MAX_USERS}], got {self.n_users}")
        if not 0.5 <= self.ci_level < 1.0:
            raise ValueError(f"experiment.evaluation.ci_level: must be in [0.5, 1), got {self.ci_level}")
        if self.n_bootstrap < MIN_BOOTSTRAP:
            raise ValueError(f"experiment.evaluation.n_bootstrap: must be >= {MIN_BOOTSTRAP}, got {self.n_bootstrap}")


@dataclass
class OPEConfig:
    """Off-policy evaluation checked against the truth (``experiments.ope.study``)."""

    draws: int = 1  # independent TrueWorld log draws; coverage needs many (experiment=ope_validation)
    n_users: int = 10000  # logged users per draw (fresh users, never in the training logs)
    truth_users: int = 20000  # users of the on-policy TrueWorld rollouts giving each true value
    policies: list[str] = field(default_factory=lambda: ["random", "logging", "ppo", "value_ranker"])
    softmax_temperature: float = 1.0  # of the recommenders' `<name>_softmax` policies
    n_bootstrap: int = 500
    estimators: EstimatorConfig = field(default_factory=EstimatorConfig)

    def __post_init__(self) -> None:
        if self.draws < 0:
            raise ValueError(f"experiment.ope.draws: must be >= 0 (0 = no OPE), got {self.draws}")
        if self.n_users < 10 or self.truth_users < 2:
            raise ValueError("experiment.ope.n_users / truth_users: need >= 10 logged users and >= 2 truth users")
        if not self.softmax_temperature > 0:
            raise ValueError(f"experiment.ope.softmax_temperature: must be > 0, got {self.softmax_temperature}")
        if self.n_bootstrap < MIN_BOOTSTRAP:
            raise ValueError(f"experiment.ope.n_bootstrap: must be >= {MIN_BOOTSTRAP}, got {self.n_bootstrap}")


EXPERIMENT_KINDS = ("main", "obd", "own_logs")


@dataclass
class ObdConfig:
    """The Open Bandit Dataset OPE experiment (``experiment=obd``, ``experiments.obd``):
    Bernoulli TS evaluated from the Random logs, checked against the BTS logs' click rate."""

    campaigns: list[str] = field(default_factory=lambda: ["all", "men", "women"])
    # OBD rows are single steps: only the per-decision estimators apply
    estimators: EstimatorConfig = field(default_factory=lambda: EstimatorConfig(names=list(PER_DECISION_ESTIMATORS)))
    n_sim: int = 100_000  # Monte Carlo draws of the BTS ranking (obp's default)
    cross_fit_folds: int = 2  # reward model fitted on the other folds' rows (1 = in-sample)
    reward_l2: float = 0.01  # inverse L2 strength C of the logistic reward model (see conf/experiment/obd.yaml)
    n_bootstrap: int = 1000
    ci_level: float = 0.95
    data_path: str | None = None  # full OBD root (<policy>/<campaign>/<campaign>.csv); None = obp wheel sample
    prior_path: str | None = None  # BTS prior yaml; None = obp/policy/conf/prior_bts.yaml of the obp wheel

    def __post_init__(self) -> None:
        if not self.campaigns or len(set(self.campaigns)) < len(self.campaigns) \
                or any(c not in ("all", "men", "women") for c in self.campaigns):
            raise ValueError(f"experiment.obd.campaigns: got {self.campaigns}, expected a non-empty subset of all, men, women")
        other = [n for n in self.estimators.names if n not in PER_DECISION_ESTIMATORS]
        if other:
            raise ValueError(f"experiment.obd.estimators.names: {other} are not per-decision estimators; "
                             f"OBD rows are single steps, choose from {list(PER_DECISION_ESTIMATORS)}")
        if self.n_sim < 100 or self.n_bootstrap < 10 or self.cross_fit_folds < 1:
            raise ValueError("experiment.obd: need n_sim >= 100, n_bootstrap >= 10 and cross_fit_folds >= 1")
        if not self.reward_l2 > 0 or not 0.5 <= self.ci_level < 1.0:
            raise ValueError("experiment.obd: need reward_l2 > 0 and ci_level in [0.5, 1)")


@dataclass
class ExperimentConfig:
    name: str = "default"
    kind: str = "main"  # main: the simulator pipeline; obd: Open Bandit Dataset OPE (experiments.obd);
    # own_logs: the pipeline on a user's own logs, no ground truth (experiments.own_logs)
    seed: int = 0
    torch_threads: int = 1  # two threads collapse under contention on small shared machines
    # independent jobs (simulator fits, recommenders, agents, rollouts, OPE) run on this many
    # worker processes, or as Ray tasks when Ray runs (experiments.parallel); 0: one per
    # available CPU, 1 inside a parallel launcher's job. Results do not depend on it.
    workers: int = 0
    progress: bool = True
    logs: LogsConfig = field(default_factory=LogsConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    ope: OPEConfig = field(default_factory=OPEConfig)
    agents: list[str] = field(default_factory=lambda: list(ALGOS))  # which of `agents` to train
    obd: ObdConfig = field(default_factory=ObdConfig)

    def __post_init__(self) -> None:
        if self.kind not in EXPERIMENT_KINDS:
            raise ValueError(f"experiment.kind: got {self.kind!r}, expected one of {', '.join(EXPERIMENT_KINDS)}")
        if self.torch_threads < 1:
            raise ValueError(f"experiment.torch_threads: must be >= 1, got {self.torch_threads}")
        if self.workers < 0:
            raise ValueError(f"experiment.workers: must be >= 0 (0: one per CPU), got {self.workers}")
        if not 0 <= self.seed < MAX_SEED:
            raise ValueError(f"experiment.seed: must be in [0, {MAX_SEED}) (user ids come from per-seed blocks), "
                             f"got {self.seed}")
        if self.kind == "own_logs" and self.logs.path is None and self.logs.dataset is None:
            raise ValueError("experiment.logs.path: experiment=own_logs needs a logs parquet file "
                             "(experiment.logs.path=LOGS.parquet) or experiment.logs.dataset=movielens")
        if self.logs.n_users + self.ope.draws * self.ope.n_users > MAX_USERS:
            raise ValueError(f"experiment.ope: logs.n_users + draws * ope.n_users must be <= {MAX_USERS} "
                             "(OPE draws take fresh users from the logs' block)")


@dataclass
class SimulatorConfig:
    """The learned simulator: response model, user GAN, and how its fidelity is judged."""

    response_model: ResponseModelConfig = field(default_factory=ResponseModelConfig)
    user_gan: UserGANConfig = field(default_factory=UserGANConfig)
    ablation: list[str] = field(default_factory=lambda: ["none", "logistic", "attention"])
    fidelity_users: int = 20000  # users per fixed policy in each world (CVR is rare: ~2% relative SE)
    repeat_probe_users: int = 2000  # users per "always send offer k" policy and world (0: no probe)
    n_bootstrap: int = 200  # bootstrap draws for AUC-difference CIs
    # what agents train in and the "learned" world reports (an agent's own `learned_world` replaces it)
    learned_world: LearnedWorldConfig = field(default_factory=LearnedWorldConfig)

    def __post_init__(self) -> None:
        if unknown := set(self.ablation) - {"gru", "none", "logistic", "attention"}:
            raise ValueError(f"simulator.ablation: unknown encoder(s) {sorted(unknown)}, expected gru|none|logistic|attention")
        for name, low in (("fidelity_users", 2), ("repeat_probe_users", 0)):  # 0 probe users: no probe
            if getattr(self, name) < low:
                raise ValueError(f"simulator.{name}: must be >= {low}, got {getattr(self, name)}")


@dataclass
class RecommendersConfig:
    """Which supervised recommenders to fit on the logs, and their hyperparameters
    (``conf/recommender/``; each name's dict is checked by its own config class, e.g.
    ``recsys.recommenders.deepfm.DeepFMConfig``, before anything trains)."""

    names: list[str] = field(default_factory=lambda: list(RECOMMENDERS))
    hyperparams: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if unknown := [n for n in [*self.names, *self.hyperparams] if n not in RECOMMENDERS]:
            raise ValueError(f"recommender: unknown {unknown}, expected among {list(RECOMMENDERS)}")
        for name, params in self.hyperparams.items():
            try:
                make_recommender(name, dict(params))  # validates the values now (one-line errors)
            except TypeError as exc:  # an unknown key
                raise ValueError(f"recommender.hyperparams.{name}: {exc}".replace("__init__() ", "")) from None

    def configs(self) -> dict[str, dict[str, Any]]:
        return {n: dict(self.hyperparams[n]) for n in self.names if n in self.hyperparams}


@dataclass
class Config:
    world: TrueWorldConfig = field(default_factory=TrueWorldConfig)
    campaign: CampaignConfig = field(default_factory=CampaignConfig)
    simulator: SimulatorConfig = field(default_factory=SimulatorConfig)
    recommender: RecommendersConfig = field(default_factory=RecommendersConfig)
    agents: dict[str, AgentConfig] = field(default_factory=dict)  # name -> agent (conf/agent/<name>.yaml)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)

    def __post_init__(self) -> None:
        missing = [name for name in self.experiment.agents if name not in self.agents]
        if missing:
            raise ValueError(
                f"experiment.agents: {missing} not configured; choose from {sorted(self.agents)} "
                "or add agent@agents.<name>=<conf/agent file>"
            )
        k = self.simulator.response_model.ensemble_size
        for where, world in [("simulator.learned_world", self.simulator.learned_world)] + [
                (f"agents.{n}.learned_world", a.learned_world) for n, a in self.agents.items() if a.learned_world]:
            if world.needs_ensemble and k < 2:
                raise ValueError(f"{where}: pessimism needs simulator.response_model.ensemble_size >= 2 "
                                 f"(disagreement between members), got ensemble_size={k}")


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="schema", node=Config)
    cs.store(group="world", name="schema", node=TrueWorldConfig)
    cs.store(group="campaign", name="schema", node=CampaignConfig)
    cs.store(group="simulator", name="schema", node=SimulatorConfig)
    cs.store(group="recommender", name="schema", node=RecommendersConfig)
    cs.store(group="agent", name="schema", node=AgentConfig)
    cs.store(group="experiment", name="schema", node=ExperimentConfig)


def load(cfg: DictConfig) -> Config:
    """Turn a composed Hydra config into validated dataclasses (one-line errors)."""
    try:
        config = OmegaConf.to_object(cfg)
    except Exception as exc:  # OmegaConf wraps __post_init__ errors with a long context
        cause = exc.__cause__ or exc
        raise ValueError(str(cause).splitlines()[0]) from None
    assert isinstance(config, Config)
    return config


USERS_PER_SEED = 2 * MAX_USERS  # user-id block per experiment seed: half for logs, half for evaluation


def user_blocks(seed: int) -> tuple[int, int]:
    """First user id of the logged users and of the evaluation users for ``seed``; blocks of
    different seeds and purposes never overlap, so no evaluation user was ever logged."""
    logs_from = seed * USERS_PER_SEED
    return logs_from, logs_from + MAX_USERS


def load_or_exit(cfg: DictConfig) -> Config:
    """``load`` for an entry point: a bad value ends a single run with one line on stderr and
    exit code 2, before any work and without a traceback (``HYDRA_FULL_ERROR=1`` shows it).
    In a multirun the error is raised instead, so Hydra still runs the sweep's other jobs and
    the failed one gets its ``FAILED.txt``."""
    try:
        return load(cfg)
    except ValueError:
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        for problem in config_problems(cfg):
            print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)


def config_problems(cfg: DictConfig) -> list[str]:
    """Every problem of a composed config, one line each: each section (``world``, ``campaign``,
    each agent, ``experiment``, ...) is checked on its own, then the cross-section rules."""
    def first_line(exc: BaseException) -> str:
        return str(exc.__cause__ or exc).splitlines()[0]

    found = []
    for key in cfg:
        nodes = [cfg[key][name] for name in cfg[key]] if key == "agents" else [cfg[key]]
        for node in nodes:
            try:
                OmegaConf.to_object(node)
            except Exception as exc:  # OmegaConf wraps __post_init__ errors with a long context
                found.append(first_line(exc))
    if not found:
        try:
            load(cfg)
        except ValueError as exc:
            found.append(first_line(exc))
    return found
