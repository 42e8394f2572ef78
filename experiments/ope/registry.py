"""The one list of off-policy estimators: results.json name -> class.

Each class carries its ``name`` and its ``kind``: ``per_decision`` (the one-step value on the
logged states, the contextual-bandit target) or ``sequential`` (the policy's return per
user). Every other list of estimator names (Hydra's defaults, the OBD experiment's choices,
the validation summary) is derived from ``ESTIMATORS``; adding an estimator is adding its
class here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from experiments.ope.estimators import (
    IPS,
    PDIS,
    PER_DECISION,
    SEQUENTIAL,
    SNDR,
    SNIPS,
    WDR,
    DirectMethod,
    DoublyRobust,
    DRos,
    Estimator,
    SwitchDR,
)
from experiments.ope.fqe import FQE

ESTIMATORS: dict[str, type[Estimator]] = {
    cls.name: cls for cls in (DirectMethod, IPS, SNIPS, DoublyRobust, SNDR, SwitchDR, DRos, PDIS, WDR, FQE)
}
PER_DECISION_ESTIMATORS = tuple(n for n, cls in ESTIMATORS.items() if cls.kind == PER_DECISION)
SEQUENTIAL_ESTIMATORS = tuple(n for n, cls in ESTIMATORS.items() if cls.kind == SEQUENTIAL)


@dataclass
class EstimatorConfig:
    """Which estimators to run and their hyperparameters (``experiment.ope.estimators`` and
    ``experiment.obd.estimators`` in Hydra)."""

    names: list[str] = field(default_factory=lambda: list(ESTIMATORS))
    switch_tau: float = 20.0
    dr_os_lambda: float = 100.0
    fqe_iterations: int = 30
    fqe_steps: int = 80  # gradient steps per FQE iteration, whatever the data size
    fqe_weight_decay: float = 1e-2
    fqe_refits: int = 10  # bootstrap refits of FQE (its CI and WDR's); 0: fixed-Q percentile CI
    fqe_hidden: list[int] = field(default_factory=lambda: [64, 64])

    def __post_init__(self) -> None:
        unknown = [n for n in self.names if n not in ESTIMATORS]
        if unknown:
            raise ValueError(f"experiment.ope.estimators.names: unknown {unknown}, expected some of {list(ESTIMATORS)}")
        for name in ESTIMATORS:  # hyperparameters are checked by each class's __post_init__, before any work
            self._make(name, seed=0)

    def _make(self, name: str, seed: int) -> Estimator:
        params: dict[str, dict[str, Any]] = {
            "switch_dr": {"tau": self.switch_tau},
            "dr_os": {"lam": self.dr_os_lambda},
            "fqe": {"hidden": tuple(self.fqe_hidden), "iterations": self.fqe_iterations, "steps": self.fqe_steps,
                    "weight_decay": self.fqe_weight_decay, "n_refits": self.fqe_refits, "seed": seed},
        }
        return ESTIMATORS[name](**params.get(name, {}))

    def build(self, seed: int = 0) -> list[Estimator]:
        """The configured estimators, FQE first (WDR uses its Q-function)."""
        return [self._make(n, seed) for n in sorted(self.names, key=lambda n: n != "fqe")]
