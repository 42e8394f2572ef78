"""The learned worlds of a run, and the pessimism ablation that compares them.

One fitted simulator gives several learned worlds: the one ``simulator.learned_world``
describes (what agents train in by default and what the "learned" column reports) and one per
agent that sets its own ``learned_world`` (e.g. ``ppo_mopo`` with a reward penalty). Thresholds
are quantiles of the ensemble's disagreement on held-out logged sends
(``recsys.simulator.uncertainty``), so nothing here looks at TrueWorld.

The ablation (``results.json`` -> ``pessimism``) evaluates every policy in each agent's own
world, so each variant gets what the issue asks of it: the true value of the agent trained in
it, the agent's overrating (its value in the world it trained in / its true value - 1, on the
return), the Kendall tau of that world over all policies, and the share of the agent's steps
above the threshold in the shipped learned world.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from functools import cached_property
from typing import Any

from envs.campaign import CampaignConfig
from envs.learned_world import LearnedWorld
from envs.pessimism import Pessimism
from envs.world import World
from experiments.collect import EpisodeStats
from experiments.config import AgentConfig, LearnedWorldConfig
from experiments.evaluate import sim_to_real
from recsys.data.dataset import LoggedDataset
from recsys.simulator.uncertainty import LoggedUncertainty
from recsys.simulator.user_gan import ResampledProfiles

WorldFactory = Callable[[int], World]


class LearnedWorlds:
    """Builds the learned worlds of one fitted simulator (``learned``: as loaded from its
    directory) on the held-out users of ``data`` (thresholds) and its training users (resampled
    profiles)."""

    def __init__(self, learned: LearnedWorld, data: LoggedDataset, campaign: CampaignConfig) -> None:
        self.learned, self.data, self.campaign = learned, data, campaign
        self.ensemble = learned.n_members >= 2

    @cached_property
    def logged_uncertainty(self) -> LoggedUncertainty:
        return LoggedUncertainty.measure(self.learned.model, self.data.split("validation"), self.learned.catalog,
                                         self.campaign)

    @cached_property
    def _resampled(self) -> ResampledProfiles:
        return ResampledProfiles(self.data.split_profiles("train"))

    def pessimism(self, options: LearnedWorldConfig) -> Pessimism:
        threshold = self.logged_uncertainty.threshold(options.threshold_quantile) if self.ensemble else None
        return Pessimism(options.reward_penalty, threshold, options.halt, options.halt_penalty, options.member_per_user)

    def factory(self, options: LearnedWorldConfig) -> WorldFactory:
        pessimism = self.pessimism(options)
        sampler = self.learned.sampler if options.users == "gan" else self._resampled
        model, catalog = self.learned.model, self.learned.catalog
        return lambda n: LearnedWorld(model, sampler, catalog, n, pessimism)

    def summary(self) -> dict[str, Any] | None:
        """u on the logged sends (quantiles), or None without an ensemble."""
        return self.logged_uncertainty.summary() if self.ensemble else None


def variants(agents: dict[str, AgentConfig]) -> dict[str, tuple[LearnedWorldConfig, list[str]]]:
    """Each distinct agent-specific learned world, named by the first agent trained in it."""
    out: dict[str, tuple[LearnedWorldConfig, list[str]]] = {}
    for name, agent in agents.items():
        if agent.train_world != "learned" or agent.learned_world is None:
            continue
        same = next((v for v, (opts, _) in out.items() if opts == agent.learned_world), None)
        if same is None:
            out[name] = (agent.learned_world, [name])
        else:
            out[same][1].append(name)
    return out


def _overrating(learned: dict[str, Any], true: dict[str, Any], name: str) -> float | None:
    t = true[name]["return"]["mean"]
    return learned[name]["return"]["mean"] / t - 1.0 if t else None


def _uncertain_share(stats: EpisodeStats) -> float:
    return float(stats.uncertain_steps.sum() / max(stats.length.sum(), 1.0))


def ablation(worlds: dict[str, Any], variant_worlds: dict[str, dict[str, Any]],
             variant_options: dict[str, tuple[LearnedWorldConfig, list[str]]], default: LearnedWorldConfig,
             agents: dict[str, AgentConfig], learned_stats: dict[str, EpisodeStats],
             thresholds: dict[str, float | None]) -> dict[str, Any]:
    """``results.json`` -> ``pessimism``: one row per simulator-trained agent (see the module
    docstring); ``variant_worlds[v]`` is the ``worlds``-style summary of every policy in v,
    ``thresholds[v]`` its threshold (``"learned"``: the shipped world's)."""
    true = worlds["true"]["policies"]
    rows = {}
    for name, agent in agents.items():
        if agent.train_world != "learned" or name not in true:
            continue
        variant = next((v for v, (_, names) in variant_options.items() if name in names), None)
        own = worlds["learned"] if variant is None else variant_worlds[variant]
        rows[name] = {
            "world": variant or "learned",
            "true_profit": true[name]["profit"], "true_return": true[name]["return"],
            "own_world_return": own["policies"][name]["return"],
            "overrating": _overrating(own["policies"], true, name),
            "kendall_tau": sim_to_real({"true": worlds["true"], "learned": own})["kendall_tau"],
            "uncertain_share": _uncertain_share(learned_stats[name]) if name in learned_stats else None,
        }
    options = {"learned": default, **{v: o for v, (o, _) in variant_options.items()}}
    return {"agents": rows,
            "worlds": {v: {"options": asdict(o), "threshold": thresholds.get(v)} for v, o in options.items()}}
