"""Off-policy evaluation: estimate a policy's value from logs alone, and check it against the truth.

``data``: the validated input (``OPEData``); ``estimators``: DM, IPS, SNIPS, DR, SNDR,
Switch-DR, DRos, PDIS, WDR behind one ``Estimator`` interface, and ``refit_intervals``
(bootstrap CIs with the models refitted per replicate); ``fqe``: fitted Q evaluation as a
bootstrap ensemble (its CI and WDR's include the fitting variance);
``registry``: every estimator by name with its target, and ``EstimatorConfig`` (which to run);
``evaluate``: reward models, policy probabilities on logged states, all estimators at once;
``study``: repeated TrueWorld log draws against on-policy true values, and the choice of a
policy by each estimator (regret@1, Spearman) (the ``ope`` and ``ope_validation`` sections of
``results.json``).
"""

from experiments.ope.data import OPEData
from experiments.ope.estimators import (
    IPS,
    PDIS,
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
from experiments.ope.registry import (
    ESTIMATORS,
    PER_DECISION_ESTIMATORS,
    SEQUENTIAL_ESTIMATORS,
    EstimatorConfig,
)

__all__ = ["ESTIMATORS", "FQE", "IPS", "PDIS", "PER_DECISION_ESTIMATORS", "SEQUENTIAL_ESTIMATORS", "SNDR", "SNIPS",
           "WDR", "DRos", "DirectMethod", "DoublyRobust", "Estimator", "EstimatorConfig", "OPEData", "SwitchDR"]
