"""The ensemble's disagreement on logged data: where the pessimism thresholds come from.

MOReL halts a simulated user once the model's disagreement leaves the range it has on the data
the model was fitted to. Here that range is measured on held-out logged users: every logged
send is replayed through each member (its own history, the logged outcomes) and u is the same
``envs.learned_world.reward_spread`` the simulator charges. A threshold is a quantile of those
values, so "above the threshold" means "less familiar than all but (1 - q) of the logged sends".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs.campaign import CampaignConfig
from envs.learned_world import reward_spread
from envs.world import Catalog
from recsys.data.sequences import SequenceData
from recsys.simulator.response_model.ensemble import EnsembleResponseModel
from recsys.simulator.response_model.fit import predict


@dataclass(frozen=True)
class LoggedUncertainty:
    """u(s, a) of every logged send (action > 0) of some held-out users."""

    values: np.ndarray  # (n_sends,) reward units of the campaign it was computed for

    @classmethod
    def measure(cls, model: EnsembleResponseModel, data: SequenceData, catalog: Catalog,
                campaign: CampaignConfig) -> LoggedUncertainty:
        if not isinstance(model, EnsembleResponseModel):
            raise ValueError("simulator.learned_world: thresholds need an ensemble response model "
                             "(simulator.response_model.ensemble_size >= 2)")
        members = [predict(m, data) for m in model.members]  # each (U, T) per head
        p_click = np.stack([m["click"] for m in members])
        p_convert = np.stack([m["convert"] for m in members])
        sends = data.mask & (data.actions > 0)
        if not sends.any():
            raise ValueError("logs: no logged sends among the validation users; thresholds cannot be calibrated")
        u = reward_spread(p_click, p_convert, data.actions, catalog, campaign)
        return cls(values=u[sends])

    def threshold(self, quantile: float) -> float:
        """The ``quantile`` of u over the logged sends (1.0 = the largest logged value)."""
        if not 0.0 < quantile <= 1.0:
            raise ValueError(f"simulator.learned_world.threshold_quantile: must be in (0, 1], got {quantile}")
        return float(np.quantile(self.values, quantile))

    def summary(self) -> dict[str, float]:
        q = np.quantile(self.values, [0.5, 0.9, 0.99, 1.0])
        return {"n_sends": float(len(self.values)), "mean": float(self.values.mean()),
                "p50": float(q[0]), "p90": float(q[1]), "p99": float(q[2]), "max": float(q[3])}

