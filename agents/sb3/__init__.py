"""Stable-Baselines3 agents: ``algorithms`` (build, train, resume), ``callbacks`` (TensorBoard
scalars, periodic evaluation in both worlds) and ``policy`` (a trained model as a ``Policy``)."""

from agents.sb3.algorithms import (
    ALGORITHMS,
    algorithm_class,
    build_agent,
    check_checkpoint,
    resume_from_checkpoint,
    save_checkpoint,
    train_agent,
)
from agents.sb3.callbacks import CampaignMetricsCallback, PeriodicEvalCallback
from agents.sb3.policy import SB3Policy

__all__ = ["ALGORITHMS", "CampaignMetricsCallback", "PeriodicEvalCallback", "SB3Policy", "algorithm_class",
           "build_agent", "check_checkpoint", "resume_from_checkpoint", "save_checkpoint", "train_agent"]
