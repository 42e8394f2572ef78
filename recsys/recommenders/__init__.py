"""Supervised recommenders trained on logged data only, behind one interface
(``recsys.recommenders.base.Recommender``; ``agents.recommender_policy.RecommenderPolicy``
turns one into a policy).

========================  ==================================================================
name                      model
========================  ==================================================================
``popularity``            smoothed click rate per offer (the same offer for everyone)
``logistic``              logistic regression on [observation, offer, observation x offer]
``deepfm``                DeepFM (FM + MLP over profile, offer and offer-category fields)
``mf``                    implicit ALS over (user, offer) clicks, folded in from the episode
``gru4rec``               GRU over the event history predicting the next clicked offer
``value_ranker``          argmax of p(click) p(convert | click) (value - discount) - cost
========================  ==================================================================

Typical use::

    train, val, test = (LoggedData.replay(seq.subset(split[s]), catalog, schema, campaign)
                        for s in ("train", "validation", "test"))
    fitted = fit_recommenders(train, val)          # {name: Recommender}
    metrics = evaluate_recommenders(fitted, test)  # {name: {metric: value}}
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from recsys.data.replay import FeatureSpec, LoggedData
from recsys.recommenders.base import CONFIG_FILE, Recommender, TrainConfig
from recsys.recommenders.deepfm import DeepFMConfig, DeepFMRecommender
from recsys.recommenders.gru4rec import GRU4RecConfig, GRU4RecRecommender
from recsys.recommenders.logistic import LogisticConfig, LogisticRecommender
from recsys.recommenders.mf import MFConfig, MFRecommender
from recsys.recommenders.popularity import PopularityConfig, PopularityRecommender
from recsys.recommenders.value_ranker import ValueRankerConfig, ValueRankerRecommender

RECOMMENDERS: dict[str, type[Recommender]] = {
    cls.name: cls for cls in (PopularityRecommender, LogisticRecommender, DeepFMRecommender, MFRecommender,
                              GRU4RecRecommender, ValueRankerRecommender)
}

__all__ = [
    "RECOMMENDERS", "DeepFMConfig", "FeatureSpec", "GRU4RecConfig", "LogisticConfig", "LoggedData", "MFConfig",
    "PopularityConfig", "Recommender", "TrainConfig", "ValueRankerConfig", "evaluate_recommenders",
    "fit_recommenders", "load_recommender", "make_recommender",
]


def make_recommender(name: str, config: Any = None) -> Recommender:
    """An unfitted recommender by name; ``config`` is its config dataclass or a dict of fields."""
    if name not in RECOMMENDERS:
        raise ValueError(f"recommender: got {name!r}, expected one of {tuple(RECOMMENDERS)}")
    cls = RECOMMENDERS[name]
    if isinstance(config, dict):
        config = cls.config_class(**config)
    return cls(config)


def fit_recommenders(
    train: LoggedData, validation: LoggedData, names: tuple[str, ...] | list[str] | None = None,
    configs: dict[str, Any] | None = None, progress: bool = True,
) -> dict[str, Recommender]:
    """Fit each recommender in ``names`` (default: all) on the same logged data; each records
    its wall time in ``fit_seconds``. ``configs`` maps a name to its config (or a dict)."""
    names = list(RECOMMENDERS) if names is None else list(names)
    configs = configs or {}
    unknown = sorted(set(names) - set(RECOMMENDERS)) + sorted(set(configs) - set(names))
    if unknown:
        raise ValueError(f"recommender: unknown or unselected name(s) {unknown}, expected among {tuple(RECOMMENDERS)}")
    fitted: dict[str, Recommender] = {}
    bar = tqdm(names, desc="recommenders", disable=not progress)
    for name in bar:
        bar.set_postfix(model=name)
        fitted[name] = make_recommender(name, configs.get(name)).fit(train, validation, progress)
    return fitted


def evaluate_recommenders(fitted: dict[str, Recommender], test: LoggedData, k: int = 5) -> dict[str, dict[str, float]]:
    """``offline_metrics`` of each fitted recommender on held-out users, plus its fit time and
    the seconds the evaluation took."""
    out = {}
    for name, rec in fitted.items():
        start = time.perf_counter()
        metrics = rec.offline_metrics(test, k)
        out[name] = {**metrics, "fit_seconds": rec.fit_seconds, "eval_seconds": time.perf_counter() - start}
    return out


def load_recommender(directory: str | Path) -> Recommender:
    """Whatever recommender ``Recommender.save`` wrote into ``directory``."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing recommender file; save() writes it")
    name = json.loads(path.read_text()).get("recommender")
    if name not in RECOMMENDERS:
        raise ValueError(f"{path}: recommender {name!r} is not one of {tuple(RECOMMENDERS)}")
    return RECOMMENDERS[name].load(directory)
