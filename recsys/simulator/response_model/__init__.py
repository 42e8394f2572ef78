"""The learned response model: p(click), p(conversion | click), p(churn) from a user's
profile and event history.

Architecture (``ResponseModel``): embeddings of the categorical profile features plus the
standardised numeric ones give a profile vector ``u``; a history encoder (GRU by default,
causal self-attention for the ablation, or none) reads the user's past events (offer shown,
click, conversion); an MLP turns ``[u, history]`` into a state, and each head scores *every*
action from that state (a linear layer whose rows are per-action embeddings) and the shown
action's score is picked. Scoring all offers from one state is what makes fatigue and
nurturing learnable: the history can push down exactly the offers recently shown. With
``category_sharing`` (the default) each action's history embedding and head rows are its catalog
category's plus its own, so a rarely logged offer borrows from its category. Conversion
is trained ESMM-style on all exposures, p(click & convert) = p(click) * p(convert | click), so
the conversion estimate is not biased by training on clicked rows only. After training, each
head gets a Platt recalibration fitted on the validation users (a simulator samples from these
probabilities, so calibration matters more than ranking). ``LogisticResponseModel``
(``history_encoder="logistic"``) is the no-history logistic baseline behind the same interface.

The same module runs step by step (``initial_state`` / ``step_logits`` / ``advance``), which
is how ``envs.learned_world.LearnedWorld`` simulates N users with one forward per step.

Modules: ``config`` (ResponseModelConfig, DataSpec), ``history`` (the history encoders),
``network`` (the two model classes, ``build_response_model``, save/load), ``ensemble``
(``EnsembleResponseModel``: K fitted members stepped as one batched forward,
``ensemble_size`` K > 1) and ``fit`` (training, bootstrap ensembles, recalibration,
prediction).
"""

from recsys.simulator.response_model.config import ENCODERS, HEADS, DataSpec, ResponseModelConfig
from recsys.simulator.response_model.ensemble import EnsembleResponseModel, mean_prob_logits
from recsys.simulator.response_model.fit import (
    assemble_response_model,
    fit_member,
    fit_response_model,
    member_jobs,
    predict,
    predict_all_actions,
)
from recsys.simulator.response_model.network import (
    BaseResponseModel,
    LogisticResponseModel,
    ResponseModel,
    build_response_model,
    load_response_model,
    save_response_model,
)

__all__ = [
    "ENCODERS", "HEADS", "BaseResponseModel", "DataSpec", "EnsembleResponseModel", "LogisticResponseModel", "ResponseModel",
    "ResponseModelConfig", "build_response_model", "fit_response_model", "load_response_model", "predict",
    "mean_prob_logits", "predict_all_actions", "save_response_model", "assemble_response_model", "fit_member",
    "member_jobs",
]
