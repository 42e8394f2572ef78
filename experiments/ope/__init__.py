"""Off-policy evaluation: estimate a policy's value from logs alone, and check it against the truth.

``data``: the validated input (``OPEData``); ``estimators``: DM, IPS, SNIPS, DR, SNDR,
Switch-DR, DRos, PDIS, WDR behind one ``Estimator`` interface; ``fqe``: fitted Q evaluation;
``evaluate``: reward models, policy probabilities on logged states, all estimators at once;
``study``: repeated TrueWorld log draws against on-policy true values (the ``ope`` section of
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

__all__ = ["FQE", "IPS", "PDIS", "SNDR", "SNIPS", "WDR", "DRos", "DirectMethod", "DoublyRobust", "Estimator",
           "OPEData", "SwitchDR"]
