"""Structured configs: the types behind ``conf/``.

Hydra merges the yaml groups into these dataclasses, so a wrong key or a wrong type fails
before any work starts ("Key 'n_ofers' not in 'TrueWorldConfig'"); ``load`` then builds the
dataclasses, whose ``__post_init__`` checks values (ranges, choices) with one-line messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from envs.true_world import TrueWorldConfig
from envs.vector_env import CampaignConfig
from recsys.response_model import ResponseModelConfig
from recsys.user_gan import UserGANConfig

MAX_USERS = 5_000_000  # per seed and purpose: user ids come from disjoint blocks (experiments.run)
ALGOS = ("ppo", "a2c", "dqn", "maskable_ppo", "recurrent_ppo")


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
    resume_from: str | None = None  # a checkpoint .zip to continue training from
    train_world: str = "learned"  # learned (the simulator fitted on logs) | true (the ground truth)

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            raise ValueError(f"agent.algo: got {self.algo!r}, expected one of {ALGOS}")
        if self.total_timesteps < 1:
            raise ValueError(f"agent.total_timesteps: must be >= 1, got {self.total_timesteps}")
        if self.n_envs < 1:
            raise ValueError(f"agent.n_envs: must be >= 1, got {self.n_envs}")
        if self.train_world not in ("learned", "true"):
            raise ValueError(f"agent.train_world: got {self.train_world!r}, expected 'learned' or 'true'")


@dataclass
class LogsConfig:
    """How the logged data is generated: the logging policy run in TrueWorld."""

    n_users: int = 50000
    temperature: float = 0.5
    epsilon: float = 0.2
    rest_probability: float = 0.3  # share of steps the logging policy sends nothing

    def __post_init__(self) -> None:
        if not 10 <= self.n_users <= MAX_USERS:
            raise ValueError(f"experiment.logs.n_users: must be in [10, {MAX_USERS}], got {self.n_users}")


@dataclass
class EvaluationConfig:
    n_users: int = 4000  # users per policy, the same users for every policy
    n_bootstrap: int = 1000
    ci_level: float = 0.95
    n_segments: int = 4  # k-means segments of the observable profile for the per-segment breakdown

    def __post_init__(self) -> None:
        if self.n_segments < 2:
            raise ValueError(f"experiment.evaluation.n_segments: must be >= 2, got {self.n_segments}")
        if not 2 <= self.n_users <= MAX_USERS:
            raise ValueError(f"experiment.evaluation.n_users: must be in [2, {MAX_USERS}], got {self.n_users}")
        if not 0.5 <= self.ci_level < 1.0:
            raise ValueError(f"experiment.evaluation.ci_level: must be in [0.5, 1), got {self.ci_level}")


@dataclass
class ExperimentConfig:
    name: str = "default"
    seed: int = 0
    torch_threads: int = 1  # two threads collapse under contention on small shared machines
    progress: bool = True
    logs: LogsConfig = field(default_factory=LogsConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    agents: list[str] = field(default_factory=lambda: list(ALGOS))  # which of `agents` to train

    def __post_init__(self) -> None:
        if self.torch_threads < 1:
            raise ValueError(f"experiment.torch_threads: must be >= 1, got {self.torch_threads}")


@dataclass
class SimulatorConfig:
    """The learned simulator: response model, user GAN, and how its fidelity is judged."""

    response_model: ResponseModelConfig = field(default_factory=ResponseModelConfig)
    user_gan: UserGANConfig = field(default_factory=UserGANConfig)
    ablation: list[str] = field(default_factory=lambda: ["none", "logistic", "attention"])
    fidelity_users: int = 20000  # users per fixed policy in each world (CVR is rare: ~2% relative SE)
    n_bootstrap: int = 200  # bootstrap draws for AUC-difference CIs

    def __post_init__(self) -> None:
        unknown = set(self.ablation) - {"gru", "none", "logistic", "attention"}
        if unknown:
            raise ValueError(f"simulator.ablation: unknown encoder(s) {sorted(unknown)}, expected gru|none|logistic|attention")
        if self.fidelity_users < 2:
            raise ValueError(f"simulator.fidelity_users: must be >= 2, got {self.fidelity_users}")


@dataclass
class Config:
    world: TrueWorldConfig = field(default_factory=TrueWorldConfig)
    campaign: CampaignConfig = field(default_factory=CampaignConfig)
    simulator: SimulatorConfig = field(default_factory=SimulatorConfig)
    agents: dict[str, AgentConfig] = field(default_factory=dict)  # name -> agent (conf/agent/<name>.yaml)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)

    def __post_init__(self) -> None:
        missing = [name for name in self.experiment.agents if name not in self.agents]
        if missing:
            raise ValueError(
                f"experiment.agents: {missing} not configured; choose from {sorted(self.agents)} "
                "or add agent@agents.<name>=<conf/agent file>"
            )


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="schema", node=Config)
    cs.store(group="world", name="schema", node=TrueWorldConfig)
    cs.store(group="campaign", name="schema", node=CampaignConfig)
    cs.store(group="simulator", name="schema", node=SimulatorConfig)
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
