"""Per-segment breakdown: which customer segments gain from RL and which lose.

Segments are what a marketing team would define: k-means on the observable profile (the
profile columns of the first observation) of the evaluation users in TrueWorld. LearnedWorld
users (drawn from the GAN) are assigned to the nearest of the same centroids. The table is
written by ``experiments.report.run``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.cluster import KMeans

from experiments.collect import EpisodeStats
from experiments.config import EvaluationConfig
from recsys.stats import bootstrap_mean


def fit_segments(profiles: np.ndarray, k: int, seed: int) -> KMeans:
    if k < 2:
        raise ValueError(f"experiment.evaluation.n_segments: must be >= 2, got {k}")
    return KMeans(n_clusters=k, n_init=5, random_state=seed).fit(profiles)


def segment_breakdown(
    stats: dict[str, EpisodeStats], labels: np.ndarray, challenger: str, baseline: str,
    n_boot: int, level: float, seed: int,
) -> dict[str, Any]:
    """Per segment: its share of users, each policy's profit per user (95% CI) and the paired
    profit difference challenger - baseline (95% CI)."""
    out: dict[str, Any] = {"challenger": challenger, "baseline": baseline, "segments": {}}
    for seg in np.unique(labels):
        users = labels == seg
        if users.sum() < 2:
            continue
        diff = stats[challenger].profit[users] - stats[baseline].profit[users]
        out["segments"][f"segment_{int(seg)}"] = {
            "share": float(users.mean()),
            "profit": {name: bootstrap_mean(s.profit[users], n_boot, level, seed).as_dict() for name, s in stats.items()},
            "difference": bootstrap_mean(diff, n_boot, level, seed).as_dict(),
        }
    return out


def segment_comparison(stats: dict[str, EpisodeStats], profile_columns: slice, challenger: str, baseline: str,
                       ev: EvaluationConfig, seed: int) -> dict[str, Any]:
    """k-means segments of the evaluation users' first observations (profile columns), then
    ``segment_breakdown`` of challenger vs baseline."""
    profiles = stats["random"].first_obs[:, profile_columns]
    labels = fit_segments(profiles, ev.n_segments, seed).predict(profiles)
    return segment_breakdown(stats, labels, challenger, baseline, ev.n_bootstrap, ev.ci_level, seed)
