"""The two response models behind one interface, and their model directory.

``ResponseModel`` is the network (profile embeddings, a history encoder, per-action heads);
``LogisticResponseModel`` is the ablation baseline (one logistic regression per head, no
history). Both score every action from one state (``forward_all``), pick the shown action's
logits (``forward``) and run step by step (``initial_state`` / ``step_logits`` /
``advance``), with the same Platt calibration buffers; ``build_response_model`` picks the
class from ``config.history_encoder``, so configs and saved directories stay as they were.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from recsys.artifacts import CONFIG_FILE, blame_file, load_model_dir, save_model_dir
from recsys.simulator.response_model import exposure
from recsys.simulator.response_model.config import HEADS, DataSpec, ResponseModelConfig
from recsys.simulator.response_model.ensemble import EnsembleResponseModel
from recsys.simulator.response_model.history import AttentionHistory, GRUHistory, NoHistory

MODEL_FILE = "model.pt"
NEURAL_ENCODERS = ("gru", "attention", "none")  # history encoders of ResponseModel


class BaseResponseModel(nn.Module, ABC):
    """What both response models share: numeric standardisation, per-head Platt calibration
    (buffers; identity until ``fit_response_model`` fits them) and the whole-sequence
    forwards. A subclass defines the profile vector, the history and every action's logits."""

    def __init__(self, spec: DataSpec, config: ResponseModelConfig) -> None:
        super().__init__()
        self.spec, self.config = spec, config
        self.register_buffer("num_loc", torch.tensor(spec.num_loc, dtype=torch.float32))
        self.register_buffer("num_scale", torch.tensor(spec.num_scale, dtype=torch.float32))
        self.register_buffer("calib_scale", torch.ones(len(HEADS)))
        self.register_buffer("calib_shift", torch.zeros(len(HEADS)))

    @abstractmethod
    def profile_vector(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        """(B, H) vector u of each user's profile."""

    @abstractmethod
    def _all_logits(self, u: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """(..., 3, A) uncalibrated logits of the three heads for every action."""

    @abstractmethod
    def _before_each(self, u: torch.Tensor, u_t: torch.Tensor, actions: torch.Tensor, click: torch.Tensor,
                     convert: torch.Tensor) -> torch.Tensor:
        """(B, T, H) history before every logged step; ``u_t`` is ``u`` repeated over steps."""

    @abstractmethod
    def initial_state(self, cat: torch.Tensor, num: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """(profile vector u, history state) of new users."""

    @abstractmethod
    def step_logits(self, u: torch.Tensor, state: Any, actions: torch.Tensor) -> torch.Tensor:
        """(N, 3) calibrated logits of click, conversion given click, churn for ``actions``."""

    @abstractmethod
    def advance(self, state: Any, actions: torch.Tensor, click: torch.Tensor, convert: torch.Tensor) -> Any:
        """The history state after the users saw ``actions`` with these outcomes."""

    def _calibrated(self, raw: torch.Tensor) -> torch.Tensor:
        return raw * self.calib_scale + self.calib_shift

    def _sequence_exposure(self, actions: torch.Tensor) -> torch.Tensor | None:
        """(B, T, 3, A) raw logit terms of the exposure counts before every logged step, or None
        (models without ``exposure_features``)."""
        return None

    def _logits(self, u: torch.Tensor, history: torch.Tensor, actions: torch.Tensor,
                extra: torch.Tensor | None = None) -> torch.Tensor:
        """(..., 3) calibrated logits of the three heads for the given actions; ``extra``: raw
        (..., 3) terms of the shown actions added before calibration."""
        idx = actions[..., None, None].expand(*actions.shape, len(HEADS), 1)
        raw = self._all_logits(u, history).gather(-1, idx)[..., 0]
        return self._calibrated(raw if extra is None else raw + extra)

    def forward(self, cat: torch.Tensor, num: torch.Tensor, actions: torch.Tensor, click: torch.Tensor,
                convert: torch.Tensor) -> torch.Tensor:
        """(B, T, 3) logits for every logged step given the history before it."""
        u = self.profile_vector(cat, num)
        u_t = u[:, None].expand(-1, actions.shape[1], -1)
        extra = self._sequence_exposure(actions)
        if extra is not None:
            extra = extra.gather(-1, actions[..., None, None].expand(*actions.shape, len(HEADS), 1))[..., 0]
        return self._logits(u_t, self._before_each(u, u_t, actions, click, convert), actions, extra)

    def forward_all(self, cat: torch.Tensor, num: torch.Tensor, actions: torch.Tensor, click: torch.Tensor,
                    convert: torch.Tensor) -> torch.Tensor:
        """(B, T, A, 3) logits of every action at every logged step, given the logged history
        before it (what an off-policy reward model needs)."""
        u = self.profile_vector(cat, num)
        u_t = u[:, None].expand(-1, actions.shape[1], -1)
        raw = self._all_logits(u_t, self._before_each(u, u_t, actions, click, convert))
        extra = self._sequence_exposure(actions)
        return self._calibrated((raw if extra is None else raw + extra).transpose(-1, -2))


class ResponseModel(BaseResponseModel):
    """Embeddings of the categorical profile features plus the standardised numerics give u;
    a history encoder (GRU, causal self-attention, or none) reads the past events; an MLP turns
    [u, history] into a state and each head scores every action from it (a linear layer whose
    rows are per-action embeddings)."""

    def __init__(self, spec: DataSpec, config: ResponseModelConfig) -> None:
        if config.history_encoder not in NEURAL_ENCODERS:
            raise ValueError(f"response_model.history_encoder: ResponseModel takes one of {NEURAL_ENCODERS}, got "
                             f"{config.history_encoder!r}; build_response_model picks the class")
        super().__init__(spec, config)
        e, h, a = config.embed_dim, config.hidden_dim, spec.n_actions
        self.cat_embed = nn.ModuleList(nn.Embedding(c, e) for c in spec.cardinalities)
        self.num_proj = nn.Linear(len(spec.num_names), e) if spec.num_names else None
        n_parts = len(spec.cardinalities) + (1 if spec.num_names else 0)
        self.profile = nn.Sequential(nn.Linear(e * n_parts, h), nn.ReLU(), nn.Linear(h, h))
        self.event_action = nn.Embedding(a, e)
        self.event_outcome = nn.Embedding(3, e)  # none, click, click + conversion
        if config.history_encoder == "gru":
            self.history: nn.Module = GRUHistory(e, h)
        elif config.history_encoder == "attention":
            self.history = AttentionHistory(e, h, max_len=max(spec.horizon, 1))
        else:
            self.history = NoHistory(h)
        self.state = nn.Sequential(nn.Linear(2 * h, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU())
        self.heads = nn.Linear(h, len(HEADS) * a)  # rows: per-action embeddings of each head
        if config.category_sharing:
            if not spec.action_category:
                raise ValueError("response_model.category_sharing: the data spec has no action categories; fit "
                                 "with the catalog (member_jobs(..., offer_category=catalog.category)) or set it false")
            c = spec.n_categories
            self.event_category = nn.Embedding(c, e)
            self.head_category = nn.Linear(h, len(HEADS) * c)
            category = torch.tensor(spec.action_category, dtype=torch.long)
            self.register_buffer("action_category", category, persistent=False)
            # row of (head j, action a) in head_category: j * C + category(a), laid out like heads' rows
            self.register_buffer("head_category_rows", (torch.arange(len(HEADS))[:, None] * c + category).flatten(),
                                 persistent=False)
        if config.exposure_features:  # offer counts, and category counts when the spec has categories
            cols = exposure.columns(spec.action_category, a)
            # zeros, not nn.Linear's random init: the model starts as the one without counts, and
            # the torch RNG stream (hence every other initial weight) is the same with or without
            self.exposure_weight = nn.Parameter(torch.zeros(len(HEADS), exposure.n_features(cols)))
            self.register_buffer("exposure_decays", torch.tensor(exposure.DECAYS), persistent=False)
            self.register_buffer("exposure_columns", cols, persistent=False)
            self.exposure_width = a + spec.n_categories

    def profile_vector(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        parts = [emb(cat[:, j]) for j, emb in enumerate(self.cat_embed)]
        if self.num_proj is not None:
            parts.append(self.num_proj((num - self.num_loc) / self.num_scale))
        return self.profile(torch.cat(parts, dim=-1))

    def event_action_weight(self) -> torch.Tensor:
        """(A, E) embedding of each action in the history (its category's plus its own)."""
        w = self.event_action.weight
        return w + self.event_category.weight[self.action_category] if self.config.category_sharing else w

    def head_parameters(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(3A, H) weight and (3A,) bias of the heads (rows (head, action); with category
        sharing each row is its category's row plus its own)."""
        w, b = self.heads.weight, self.heads.bias
        if self.config.category_sharing:
            rows = self.head_category_rows
            w, b = w + self.head_category.weight[rows], b + self.head_category.bias[rows]
        return w, b

    def event(self, actions: torch.Tensor, click: torch.Tensor, convert: torch.Tensor) -> torch.Tensor:
        outcome = (click > 0.5).long() + (convert > 0.5).long()
        return F.embedding(actions, self.event_action_weight()) + self.event_outcome(outcome)

    def _all_logits(self, u: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        s = self.state(torch.cat([u, history], dim=-1))
        return F.linear(s, *self.head_parameters()).unflatten(-1, (len(HEADS), self.spec.n_actions))

    def _before_each(self, u: torch.Tensor, u_t: torch.Tensor, actions: torch.Tensor, click: torch.Tensor,
                     convert: torch.Tensor) -> torch.Tensor:
        return self.history.before_each(u, self.event(actions, click, convert))

    def _sequence_exposure(self, actions: torch.Tensor) -> torch.Tensor | None:
        if not self.config.exposure_features:
            return None
        x = exposure.before_each(actions, self.exposure_decays, self.exposure_columns, self.exposure_width)
        return F.linear(exposure.features_all(x, self.exposure_columns), self.exposure_weight).transpose(-1, -2)

    # step by step: the state is the history encoder's, or with exposure_features
    # {"history": that, "exposure": (N, D, A + C) counts} (module exposure)
    def initial_state(self, cat: torch.Tensor, num: torch.Tensor) -> tuple[torch.Tensor, Any]:
        u = self.profile_vector(cat, num)
        history = self.history.initial(u, self.spec.horizon)
        if not self.config.exposure_features:
            return u, history
        return u, {"history": history, "exposure": exposure.initial(len(u), self.exposure_decays, self.exposure_width)}

    def step_logits(self, u: torch.Tensor, state: Any, actions: torch.Tensor) -> torch.Tensor:
        if not self.config.exposure_features:
            return self._logits(u, self.history.read(state), actions)
        counts = exposure.features_shown(state["exposure"], self.exposure_columns, actions)
        return self._logits(u, self.history.read(state["history"]), actions, F.linear(counts, self.exposure_weight))

    def advance(self, state: Any, actions: torch.Tensor, click: torch.Tensor, convert: torch.Tensor) -> Any:
        event = self.event(actions, click, convert)
        if not self.config.exposure_features:
            return self.history.step(state, event, actions)
        return {"history": self.history.step(state["history"], event, actions),
                "exposure": exposure.update(state["exposure"], actions, self.exposure_decays, self.exposure_columns)}


class LogisticResponseModel(BaseResponseModel):
    """Ablation baseline (``history_encoder="logistic"``): each head is a logistic regression
    on [one-hot categoricals, standardised numerics, one-hot action], with no history, so the
    logits of all actions are the profile part plus one column per action."""

    def __init__(self, spec: DataSpec, config: ResponseModelConfig) -> None:
        super().__init__(spec, config)
        self.linear = nn.Linear(sum(spec.cardinalities) + len(spec.num_names) + spec.n_actions, len(HEADS))

    def profile_vector(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        onehots = [F.one_hot(cat[:, j], c).float() for j, c in enumerate(self.spec.cardinalities)]
        return torch.cat([*onehots, (num - self.num_loc) / self.num_scale], dim=-1)

    def _all_logits(self, u: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        w = self.linear.weight
        return F.linear(u, w[:, :u.shape[-1]], self.linear.bias)[..., None] + w[:, u.shape[-1]:]

    def _before_each(self, u: torch.Tensor, u_t: torch.Tensor, actions: torch.Tensor, click: torch.Tensor,
                     convert: torch.Tensor) -> torch.Tensor:
        return u_t  # no history; ignored by _all_logits

    def initial_state(self, cat: torch.Tensor, num: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.profile_vector(cat, num), None

    def step_logits(self, u: torch.Tensor, state: None, actions: torch.Tensor) -> torch.Tensor:
        return self._logits(u, u, actions)

    def advance(self, state: None, actions: torch.Tensor, click: torch.Tensor, convert: torch.Tensor) -> None:
        return state


def build_response_model(spec: DataSpec, config: ResponseModelConfig) -> BaseResponseModel:
    """The untrained model ``config.history_encoder`` names (draws from the torch RNG)."""
    cls = LogisticResponseModel if config.history_encoder == "logistic" else ResponseModel
    return cls(spec, config)


# --------------------------------------------------------------------------- model directory
def save_response_model(model: BaseResponseModel | EnsembleResponseModel, directory: str | Path,
                        metrics: dict[str, Any] | None = None) -> Path:
    """A model directory (``recsys.artifacts.save_model_dir``): ``model.pt`` (state_dict),
    ``config.json`` (the config and the data spec) and ``metrics.json``. An ensemble is saved
    the same way: its config says ``ensemble_size`` K, its state_dict holds the members'."""
    return save_model_dir(directory, {"model": asdict(model.config), "data": asdict(model.spec)}, model.state_dict(),
                          MODEL_FILE, metrics or {})


def load_response_model(directory: str | Path) -> BaseResponseModel | EnsembleResponseModel:
    """The model ``save_response_model`` wrote, of the class its config names, in eval mode
    (an ``EnsembleResponseModel`` when ``ensemble_size`` > 1; member k has seed ``seed + k``)."""
    directory = Path(directory)
    meta, state, _ = load_model_dir(directory, MODEL_FILE, "response-model", "run experiments.fit_simulator first")
    with blame_file(directory / CONFIG_FILE, "not a response-model config"):
        # directories written before category sharing existed: the model they hold had none
        spec, config = DataSpec(**meta["data"]), ResponseModelConfig(**{"category_sharing": False,
                                                                          "exposure_features": False, **meta["model"]})
        if config.ensemble_size == 1:
            model: BaseResponseModel | EnsembleResponseModel = build_response_model(spec, config)
        else:
            model = EnsembleResponseModel([
                build_response_model(spec, replace(config, ensemble_size=1, seed=config.seed + k))
                for k in range(config.ensemble_size)])
    with blame_file(directory / MODEL_FILE, "cannot load the response-model weights"):
        if isinstance(model, EnsembleResponseModel):
            # ensembles saved before the ensemble's own recalibration have none: identity
            state = {"calib_scale": model.calib_scale, "calib_shift": model.calib_shift, **state}
        model.load_state_dict(state)
    return model.eval()
