"""The learned response model: p(click), p(conversion | click), p(churn) from a user's
profile and event history.

Architecture: embeddings of the categorical profile features plus the standardised numeric
ones give a profile vector ``u``; a history encoder (GRU by default, causal self-attention for
the ablation, or none) reads the user's past events (offer shown, click, conversion); an MLP
turns ``[u, history]`` into a state, and each head scores *every* action from that state
(a linear layer whose rows are per-action embeddings) and the shown action's score is picked.
Scoring all offers from one state is what makes fatigue and nurturing learnable: the history
can push down exactly the offers recently shown. Conversion is trained ESMM-style on all
exposures, p(click & convert) = p(click) * p(convert | click), so the conversion estimate is
not biased by training on clicked rows only. After training, each head gets a Platt
recalibration fitted on the validation users (a simulator samples from these probabilities,
so calibration matters more than ranking).

The same module runs step by step (``initial_state`` / ``probs`` / ``advance``), which is how
``envs.learned_world.LearnedWorld`` simulates N users with one forward per step.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from recsys.artifacts import atomic_write_dir, json_bytes
from recsys.data.sequences import SequenceData
from recsys.numerics import flush_denormals

ENCODERS = ("gru", "attention", "none", "logistic")
HEADS = ("click", "convert", "churn")
_MODEL_FILE, _CONFIG_FILE, _METRICS_FILE = "model.pt", "config.json", "metrics.json"


@dataclass
class ResponseModelConfig:
    history_encoder: str = "gru"  # gru | attention | none (same network, no history) | logistic
    embed_dim: int = 16
    hidden_dim: int = 64
    epochs: int = 40
    batch_size: int = 256  # users per gradient step
    lr: float = 3e-3
    weight_decay: float = 1e-5
    patience: int = 4  # epochs without validation improvement before stopping
    max_seconds: float = 600.0
    calibrate: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.history_encoder not in ENCODERS:
            raise ValueError(f"response_model.history_encoder: got {self.history_encoder!r}, expected one of {ENCODERS}")
        for name in ("embed_dim", "hidden_dim", "epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"response_model.{name}: must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.max_seconds <= 0:
            raise ValueError("response_model.lr and response_model.max_seconds: must be > 0")


@dataclass
class DataSpec:
    """What the model was trained on; a LearnedWorld checks it against its catalog."""

    n_actions: int
    cat_names: list[str]
    cardinalities: list[int]
    num_names: list[str]
    num_loc: list[float]
    num_scale: list[float]
    horizon: int

    @classmethod
    def from_data(cls, data: SequenceData) -> DataSpec:
        num = data.profile_num.astype(np.float64)
        scale = num.std(axis=0) if len(num) else np.zeros(0)
        return cls(
            n_actions=data.n_actions, cat_names=list(data.cat_names), cardinalities=list(data.cardinalities),
            num_names=list(data.num_names), num_loc=num.mean(axis=0).tolist(),
            num_scale=np.where(scale > 0, scale, 1.0).tolist(), horizon=data.horizon,
        )


# --------------------------------------------------------------------------- history encoders
class _GRUHistory(nn.Module):
    """State = GRU hidden vector; initialised from the profile."""

    def __init__(self, embed_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.init = nn.Linear(hidden_dim, hidden_dim)
        self.gru = nn.GRU(embed_dim, hidden_dim, batch_first=True)

    def initial(self, u: torch.Tensor, horizon: int) -> torch.Tensor:
        return torch.tanh(self.init(u))

    def before_each(self, u: torch.Tensor, events: torch.Tensor) -> torch.Tensor:
        """(B, T, H) history vectors, entry t summarising events 0..t-1."""
        h0 = self.initial(u, events.shape[1])
        if events.shape[1] == 1:
            return h0[:, None]
        out, _ = self.gru(events[:, :-1], h0[None])
        return torch.cat([h0[:, None], out], dim=1)

    def read(self, state: torch.Tensor) -> torch.Tensor:
        return state

    def step(self, state: torch.Tensor, event: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        # one GRU cell step: the same numbers as a length-1 self.gru call, with less overhead
        g = self.gru
        return torch.gru_cell(event, state, g.weight_ih_l0, g.weight_hh_l0, g.bias_ih_l0, g.bias_hh_l0)


class _AttentionHistory(nn.Module):
    """Causal self-attention over [profile token, event_0, ..., event_{t-1}]. State = the
    buffer of event embeddings and how many are filled."""

    def __init__(self, embed_dim: int, hidden_dim: int, max_len: int = 64, heads: int = 2) -> None:
        super().__init__()
        self.inp = nn.Linear(embed_dim, hidden_dim)
        self.start = nn.Linear(hidden_dim, hidden_dim)
        self.pos = nn.Embedding(max_len + 1, hidden_dim)
        self.layer = nn.TransformerEncoderLayer(hidden_dim, heads, 2 * hidden_dim, dropout=0.0, batch_first=True)
        self.max_len = max_len

    def _encode(self, u: torch.Tensor, events: torch.Tensor) -> torch.Tensor:
        tokens = torch.cat([self.start(u)[:, None], self.inp(events)], dim=1)
        tokens = tokens + self.pos(torch.arange(tokens.shape[1], device=u.device))[None]
        causal = nn.Transformer.generate_square_subsequent_mask(tokens.shape[1])
        return self.layer(tokens, src_mask=causal, is_causal=True)

    def before_each(self, u: torch.Tensor, events: torch.Tensor) -> torch.Tensor:
        return self._encode(u, events[:, :-1])

    def initial(self, u: torch.Tensor, horizon: int) -> dict[str, torch.Tensor]:
        return {"u": u, "events": u.new_zeros(len(u), horizon, self.inp.in_features),
                "length": torch.zeros(len(u), dtype=torch.long)}

    def read(self, state: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self._encode(state["u"], state["events"])
        return out[torch.arange(len(out)), state["length"]]

    def step(self, state: dict[str, torch.Tensor], event: torch.Tensor, steps: torch.Tensor) -> dict[str, torch.Tensor]:
        events = state["events"].clone()
        events[torch.arange(len(event)), state["length"].clamp(max=events.shape[1] - 1)] = event
        return {"u": state["u"], "events": events, "length": (state["length"] + 1).clamp(max=events.shape[1] - 1)}


class _NoHistory(nn.Module):
    def __init__(self, hidden_dim: int) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim

    def initial(self, u: torch.Tensor, horizon: int) -> torch.Tensor:
        return u.new_zeros(len(u), self.hidden_dim)

    def before_each(self, u: torch.Tensor, events: torch.Tensor) -> torch.Tensor:
        return u.new_zeros(*events.shape[:2], self.hidden_dim)

    def read(self, state: torch.Tensor) -> torch.Tensor:
        return state

    def step(self, state: torch.Tensor, event: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        return state


# --------------------------------------------------------------------------- the model
class ResponseModel(nn.Module):
    def __init__(self, spec: DataSpec, config: ResponseModelConfig) -> None:
        super().__init__()
        self.spec, self.config = spec, config
        e, h, a = config.embed_dim, config.hidden_dim, spec.n_actions
        self.register_buffer("num_loc", torch.tensor(spec.num_loc, dtype=torch.float32))
        self.register_buffer("num_scale", torch.tensor(spec.num_scale, dtype=torch.float32))
        # Platt recalibration per head (identity until fitted)
        self.register_buffer("calib_scale", torch.ones(len(HEADS)))
        self.register_buffer("calib_shift", torch.zeros(len(HEADS)))
        self.logistic = config.history_encoder == "logistic"
        if self.logistic:
            width = sum(spec.cardinalities) + len(spec.num_names) + a
            self.linear = nn.Linear(width, len(HEADS))
            return
        self.cat_embed = nn.ModuleList(nn.Embedding(c, e) for c in spec.cardinalities)
        self.num_proj = nn.Linear(len(spec.num_names), e) if spec.num_names else None
        n_parts = len(spec.cardinalities) + (1 if spec.num_names else 0)
        self.profile = nn.Sequential(nn.Linear(e * n_parts, h), nn.ReLU(), nn.Linear(h, h))
        self.event_action = nn.Embedding(a, e)
        self.event_outcome = nn.Embedding(3, e)  # none, click, click + conversion
        if config.history_encoder == "gru":
            self.history: nn.Module = _GRUHistory(e, h)
        elif config.history_encoder == "attention":
            self.history = _AttentionHistory(e, h, max_len=max(spec.horizon, 1))
        else:
            self.history = _NoHistory(h)
        self.state = nn.Sequential(nn.Linear(2 * h, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU())
        self.heads = nn.Linear(h, len(HEADS) * a)  # rows: per-action embeddings of each head

    # ---- pieces
    def profile_vector(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        z = (num - self.num_loc) / self.num_scale
        if self.logistic:
            onehots = [F.one_hot(cat[:, j], c).float() for j, c in enumerate(self.spec.cardinalities)]
            return torch.cat([*onehots, z], dim=-1)
        parts = [emb(cat[:, j]) for j, emb in enumerate(self.cat_embed)]
        if self.num_proj is not None:
            parts.append(self.num_proj(z))
        return self.profile(torch.cat(parts, dim=-1))

    def event(self, actions: torch.Tensor, click: torch.Tensor, convert: torch.Tensor) -> torch.Tensor:
        outcome = (click > 0.5).long() + (convert > 0.5).long()
        return self.event_action(actions) + self.event_outcome(outcome)

    def _all_logits(self, u: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """(..., 3, A) uncalibrated logits of the three heads for every action."""
        if self.logistic:  # linear in [u, one_hot(a)]: the profile part plus one column per action
            w = self.linear.weight
            return (F.linear(u, w[:, :u.shape[-1]], self.linear.bias)[..., None] + w[:, u.shape[-1]:])
        s = self.state(torch.cat([u, history], dim=-1))
        return self.heads(s).unflatten(-1, (len(HEADS), self.spec.n_actions))

    def _logits(self, u: torch.Tensor, history: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """(..., 3) logits of the three heads for the given actions; u, history (..., H)."""
        idx = actions[..., None, None].expand(*actions.shape, len(HEADS), 1)
        raw = self._all_logits(u, history).gather(-1, idx)[..., 0]
        return raw * self.calib_scale + self.calib_shift

    def forward_all(self, cat: torch.Tensor, num: torch.Tensor, actions: torch.Tensor, click: torch.Tensor,
                    convert: torch.Tensor) -> torch.Tensor:
        """(B, T, A, 3) logits of every action at every logged step, given the logged history
        before it (what an off-policy reward model needs)."""
        u = self.profile_vector(cat, num)
        u_t = u[:, None].expand(-1, actions.shape[1], -1)
        history = u_t if self.logistic else self.history.before_each(u, self.event(actions, click, convert))
        raw = self._all_logits(u_t, history).transpose(-1, -2)
        return raw * self.calib_scale + self.calib_shift

    # ---- whole sequences (training / evaluation)
    def forward(self, cat: torch.Tensor, num: torch.Tensor, actions: torch.Tensor, click: torch.Tensor,
                convert: torch.Tensor) -> torch.Tensor:
        """(B, T, 3) logits for every logged step given the history before it."""
        u = self.profile_vector(cat, num)
        u_t = u[:, None].expand(-1, actions.shape[1], -1)
        if self.logistic:
            return self._logits(u_t, u_t, actions)
        history = self.history.before_each(u, self.event(actions, click, convert))
        return self._logits(u_t, history, actions)

    # ---- step by step (simulation)
    def initial_state(self, cat: torch.Tensor, num: torch.Tensor) -> tuple[torch.Tensor, Any]:
        u = self.profile_vector(cat, num)
        return u, (None if self.logistic else self.history.initial(u, self.spec.horizon))

    def step_logits(self, u: torch.Tensor, state: Any, actions: torch.Tensor) -> torch.Tensor:
        history = u if self.logistic else self.history.read(state)
        return self._logits(u, history, actions)

    def advance(self, state: Any, actions: torch.Tensor, click: torch.Tensor, convert: torch.Tensor) -> Any:
        if self.logistic:
            return state
        return self.history.step(state, self.event(actions, click, convert), actions)


# --------------------------------------------------------------------------- training
def _tensors(data: SequenceData) -> dict[str, torch.Tensor]:
    return {
        "cat": torch.as_tensor(data.profile_cat), "num": torch.as_tensor(data.profile_num, dtype=torch.float32),
        "actions": torch.as_tensor(data.actions), "click": torch.as_tensor(data.click),
        "convert": torch.as_tensor(data.conversion), "churn": torch.as_tensor(data.churned),
        "mask": torch.as_tensor(data.mask),
    }


def _loss(logits: torch.Tensor, b: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean per-row negative log-likelihood of click, click & convert (ESMM) and churn."""
    exposed = b["mask"] & (b["actions"] > 0)
    lc, lv, lh = logits.unbind(-1)
    click_nll = F.binary_cross_entropy_with_logits(lc, b["click"], reduction="none")
    log_ctcvr = F.logsigmoid(lc) + F.logsigmoid(lv)
    y = b["click"] * b["convert"]
    log_not = torch.log1p(-torch.exp(log_ctcvr).clamp(max=1 - 1e-6))
    ctcvr_nll = -(y * log_ctcvr + (1 - y) * log_not)
    churn_nll = F.binary_cross_entropy_with_logits(lh, b["churn"], reduction="none")
    n_exp, n_all = exposed.sum().clamp(min=1), b["mask"].sum().clamp(min=1)
    return ((click_nll + ctcvr_nll) * exposed).sum() / n_exp + (churn_nll * b["mask"]).sum() / n_all


def _batches(t: dict[str, torch.Tensor], size: int, gen: torch.Generator | None):
    n = len(t["cat"])
    order = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
    for start in range(0, n, size):
        idx = order[start:start + size]
        yield {k: v[idx] for k, v in t.items()}


@torch.no_grad()
def _evaluate_loss(model: ResponseModel, t: dict[str, torch.Tensor], size: int = 4096) -> float:
    model.eval()
    total, weight = 0.0, 0
    for b in _batches(t, size, None):
        n = int(b["mask"].sum())
        total += float(_loss(model(b["cat"], b["num"], b["actions"], b["click"], b["convert"]), b)) * n
        weight += n
    return total / max(weight, 1)


def fit_response_model(
    train: SequenceData, validation: SequenceData, config: ResponseModelConfig | None = None,
    progress: bool = True, tensorboard_dir: Path | None = None,
) -> ResponseModel:
    """Train with early stopping on validation loss; returns the best model, recalibrated."""
    config = config or ResponseModelConfig()
    if train.n_users < 10 or validation.n_users < 10:
        raise ValueError(
            f"logs: need at least 10 training and 10 validation users, got {train.n_users} and {validation.n_users}"
        )
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    model = ResponseModel(DataSpec.from_data(train), config)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    tr, va = _tensors(train), _tensors(validation)
    writer = None
    if tensorboard_dir is not None:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(tensorboard_dir))
    with flush_denormals():
        best_state = _train_loop(model, opt, tr, va, gen, config, progress, writer)
    if writer is not None:
        writer.close()
    model.load_state_dict(best_state)
    if config.calibrate:
        _recalibrate(model, va)
    model.eval()
    return model


def _train_loop(model: ResponseModel, opt: torch.optim.Optimizer, tr: dict[str, torch.Tensor],
                va: dict[str, torch.Tensor], gen: torch.Generator, config: ResponseModelConfig, progress: bool,
                writer: Any) -> dict[str, torch.Tensor]:
    """Epochs with early stopping on validation loss; returns the best state_dict."""
    best, best_state, bad, start = math.inf, None, 0, time.perf_counter()
    bar = tqdm(range(config.epochs), desc=f"response model ({config.history_encoder})", disable=not progress)
    for epoch in bar:
        model.train()
        running, steps = 0.0, 0
        for b in _batches(tr, config.batch_size, gen):
            loss = _loss(model(b["cat"], b["num"], b["actions"], b["click"], b["convert"]), b)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            running, steps = running + loss.item(), steps + 1
        val = _evaluate_loss(model, va)
        bar.set_postfix(train=f"{running / steps:.4f}", val=f"{val:.4f}")
        if writer is not None:
            writer.add_scalar("response_model/train_loss", running / steps, epoch)
            writer.add_scalar("response_model/val_loss", val, epoch)
        if val < best - 1e-5:
            best, bad = val, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
        if bad >= config.patience or time.perf_counter() - start > config.max_seconds:
            break
    return best_state


def _recalibrate(model: ResponseModel, t: dict[str, torch.Tensor]) -> None:
    """Platt scaling of each head on validation rows (click and churn directly; the
    conversion head on clicked rows, where p(convert | click) is observed)."""
    with torch.no_grad():
        logits = model(t["cat"], t["num"], t["actions"], t["click"], t["convert"])
    exposed = t["mask"] & (t["actions"] > 0)
    rows = {0: (exposed, t["click"]), 1: (exposed & (t["click"] > 0.5), t["convert"]), 2: (t["mask"], t["churn"])}
    for head, (sel, target) in rows.items():
        x, y = logits[..., head][sel], target[sel]
        if len(x) < 50 or y.min() == y.max():
            continue
        # undo the current calibration to fit on raw logits
        raw = (x - model.calib_shift[head]) / model.calib_scale[head]
        a, b = torch.ones(1, requires_grad=True), torch.zeros(1, requires_grad=True)
        opt = torch.optim.LBFGS([a, b], max_iter=100, line_search_fn="strong_wolfe")

        def closure(raw=raw, y=y, a=a, b=b, opt=opt) -> torch.Tensor:
            opt.zero_grad()
            loss = F.binary_cross_entropy_with_logits(a * raw + b, y)
            loss.backward()
            return loss

        opt.step(closure)
        model.calib_scale[head], model.calib_shift[head] = a.item(), b.item()


@torch.no_grad()
def predict(model: ResponseModel, data: SequenceData, batch_size: int = 4096) -> dict[str, np.ndarray]:
    """(U, T) probabilities p(click), p(convert | click), p(churn) for every logged step."""
    model.eval()
    t = _tensors(data)
    parts = [torch.sigmoid(model(b["cat"], b["num"], b["actions"], b["click"], b["convert"]))
             for b in _batches(t, batch_size, None)]
    p = torch.cat(parts).numpy().astype(np.float64)
    return {"click": p[..., 0], "convert": p[..., 1], "churn": p[..., 2]}


@torch.no_grad()
def predict_all_actions(model: ResponseModel, data: SequenceData, batch_size: int = 1024) -> dict[str, np.ndarray]:
    """(U, T, A) p(click), p(convert | click), p(churn) of *every* action at every logged step."""
    model.eval()
    t = _tensors(data)
    parts = [torch.sigmoid(model.forward_all(b["cat"], b["num"], b["actions"], b["click"], b["convert"]))
             for b in _batches(t, batch_size, None)]
    p = torch.cat(parts).numpy().astype(np.float64)
    return {"click": p[..., 0], "convert": p[..., 1], "churn": p[..., 2]}


# --------------------------------------------------------------------------- artifacts
def save_response_model(model: ResponseModel, directory: Path, metrics: dict[str, Any] | None = None) -> None:
    """A directory with ``model.pt`` (state_dict), ``config.json`` and ``metrics.json``,
    written atomically as a set; ``model.pt`` loads with ``torch.load(weights_only=True)``."""
    import io

    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    atomic_write_dir(directory, {_CONFIG_FILE: json_bytes({"model": asdict(model.config), "data": asdict(model.spec)}),
                                 _METRICS_FILE: json_bytes(metrics or {}), _MODEL_FILE: buf.getvalue()})


def load_response_model(directory: Path) -> ResponseModel:
    directory = Path(directory)
    for name in (_CONFIG_FILE, _MODEL_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name}: missing response-model file; run experiments.fit_simulator first")
    try:
        meta = json.loads((directory / _CONFIG_FILE).read_text())
        model = ResponseModel(DataSpec(**meta["data"]), ResponseModelConfig(**meta["model"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{directory / _CONFIG_FILE}: not a response-model config ({str(exc).splitlines()[0]})") from None
    try:
        state = torch.load(directory / _MODEL_FILE, weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:  # unpickling errors come in many types; all mean the same to a user
        raise ValueError(
            f"{directory / _MODEL_FILE}: cannot load the response-model weights ({str(exc).splitlines()[0]})"
        ) from None
    model.eval()
    return model
