"""Training and prediction of the response models (either class, same code).

``fit_response_model`` trains with ``recsys.training.fit_early_stopping`` on batches of users
(loss: click, ESMM click & convert and churn negative log-likelihoods; gradients clipped;
validation loss per logged row, in fixed chunks; TensorBoard scalars per epoch), keeps the
best epoch's weights, then fits each head's Platt recalibration on the validation users.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from recsys.data.sequences import SequenceData
from recsys.numerics import flush_denormals
from recsys.simulator.response_model.config import DataSpec, ResponseModelConfig
from recsys.simulator.response_model.ensemble import EnsembleResponseModel
from recsys.simulator.response_model.network import BaseResponseModel, build_response_model
from recsys.training import fit_early_stopping

_CLIP_GRAD_NORM = 5.0  # gradient norm cap of every training step
_EVAL_USERS = 4096  # users per forward pass when computing the validation loss


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


def _chunks(t: dict[str, torch.Tensor], size: int) -> Iterator[dict[str, torch.Tensor]]:
    """Consecutive chunks of ``size`` users, in order (evaluation and prediction)."""
    for start in range(0, len(t["cat"]), size):
        yield {k: v[start:start + size] for k, v in t.items()}


@torch.no_grad()
def _evaluate_loss(model: BaseResponseModel, t: dict[str, torch.Tensor], size: int = _EVAL_USERS) -> float:
    model.eval()
    total, weight = 0.0, 0
    for b in _chunks(t, size):
        n = int(b["mask"].sum())
        total += float(_loss(model(b["cat"], b["num"], b["actions"], b["click"], b["convert"]), b)) * n
        weight += n
    return total / max(weight, 1)

def fit_response_model(
    train: SequenceData, validation: SequenceData, config: ResponseModelConfig | None = None,
    progress: bool = True, tensorboard_dir: Path | None = None, offer_category: np.ndarray | None = None,
) -> BaseResponseModel | EnsembleResponseModel:
    """Train with early stopping on validation loss; returns the best model, recalibrated.

    With ``config.ensemble_size`` K > 1, an ``EnsembleResponseModel`` of K such models:
    member k is trained on a bootstrap resample (with replacement, same size) of the training
    USERS, drawn from ``numpy.random.default_rng((seed, k))``, with ``seed + k`` for its
    initial weights and batch order; all members share the data spec of the whole training
    set and the validation users (early stopping, recalibration). ``offer_category`` (the
    catalog's category per offer) is kept in the data spec; ``category_sharing`` needs it."""
    return assemble_response_model([fit_member(*job) for job in member_jobs(
        train, validation, config, progress, tensorboard_dir, offer_category)], validation)


def member_jobs(train: SequenceData, validation: SequenceData, config: ResponseModelConfig | None = None,
                progress: bool = True, tensorboard_dir: Path | None = None,
                offer_category: np.ndarray | None = None) -> list[tuple]:
    """The independent ``fit_member`` calls of ``fit_response_model`` (one per member), so a
    caller can run them in parallel and ``assemble_response_model`` their results."""
    config = config or ResponseModelConfig()
    if train.n_users < 10 or validation.n_users < 10:
        raise ValueError(
            f"logs: need at least 10 training and 10 validation users, got {train.n_users} and {validation.n_users}"
        )
    spec = DataSpec.from_data(train, offer_category)
    config = replace(config, batch_size=batch_size_for(config, train.n_users))  # saved with the model
    if config.ensemble_size == 1:
        return [(train, validation, config, spec, progress, tensorboard_dir)]
    jobs = []
    for k in range(config.ensemble_size):
        users = np.random.default_rng((config.seed, k)).integers(0, train.n_users, size=train.n_users)
        jobs.append((train.subset(users), validation, replace(config, ensemble_size=1, seed=config.seed + k), spec,
                     progress, None if tensorboard_dir is None else Path(tensorboard_dir) / f"member_{k}"))
    return jobs


def batch_size_for(config: ResponseModelConfig, n_users: int) -> int:
    """``config.batch_size``, or less when ``n_users`` would make fewer than
    ``config.min_steps_per_epoch`` gradient steps an epoch (early stopping then judges
    an undertrained model: the batch must follow the data size, not a constant)."""
    return max(1, min(config.batch_size, math.ceil(n_users / config.min_steps_per_epoch)))


def assemble_response_model(members: list[BaseResponseModel], validation: SequenceData | None = None
                            ) -> BaseResponseModel | EnsembleResponseModel:
    """The model of ``member_jobs``' fitted members: the member itself, or their ensemble,
    whose mean probabilities get their own Platt recalibration on ``validation`` when the
    members' config says ``calibrate`` (each member is calibrated, but their average is not: on
    the wide world's logs the 5-member mean had click ECE 0.0084 against 0.0026 for one model)."""
    if len(members) == 1:
        return members[0]
    ensemble = EnsembleResponseModel(members).eval()
    if validation is not None and ensemble.config.calibrate:
        with flush_denormals():
            _recalibrate(ensemble, _tensors(validation))
    return ensemble


def fit_member(train: SequenceData, validation: SequenceData, config: ResponseModelConfig, spec: DataSpec,
               progress: bool, tensorboard_dir: Path | None) -> BaseResponseModel:
    """One model (an ensemble member, or the whole model when K = 1), seeded by ``config.seed``."""
    torch.manual_seed(config.seed)
    model = build_response_model(spec, config)
    tr, va = _tensors(train), _tensors(validation)
    writer = None
    if tensorboard_dir is not None:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(tensorboard_dir))

    def on_epoch(epoch: int, train_loss: float, val_loss: float) -> None:
        if writer is not None:
            writer.add_scalar("response_model/train_loss", train_loss, epoch)
            writer.add_scalar("response_model/val_loss", val_loss, epoch)

    def loss(m: nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
        return _loss(m(b["cat"], b["num"], b["actions"], b["click"], b["convert"]), b)

    try:
        with flush_denormals():
            fit_early_stopping(model, loss, tr, lambda m: _evaluate_loss(m, va), config,
                               f"response model ({config.history_encoder})", progress,
                               clip_grad_norm=_CLIP_GRAD_NORM, on_epoch=on_epoch)
    finally:
        if writer is not None:
            writer.close()
    if config.calibrate:
        _recalibrate(model, va)
    model.eval()
    return model


def _recalibrate(model: BaseResponseModel | EnsembleResponseModel, t: dict[str, torch.Tensor]) -> None:
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
def predict(model: BaseResponseModel | EnsembleResponseModel, data: SequenceData, batch_size: int = 4096
            ) -> dict[str, np.ndarray]:
    """(U, T) probabilities p(click), p(convert | click), p(churn) for every logged step."""
    model.eval()
    t = _tensors(data)
    parts = [torch.sigmoid(model(b["cat"], b["num"], b["actions"], b["click"], b["convert"]))
             for b in _chunks(t, batch_size)]
    p = torch.cat(parts).numpy().astype(np.float64)
    return {"click": p[..., 0], "convert": p[..., 1], "churn": p[..., 2]}


@torch.no_grad()
def predict_all_actions(model: BaseResponseModel | EnsembleResponseModel, data: SequenceData,
                        batch_size: int = 1024) -> dict[str, np.ndarray]:
    """(U, T, A) p(click), p(convert | click), p(churn) of *every* action at every logged step."""
    model.eval()
    t = _tensors(data)
    parts = [torch.sigmoid(model.forward_all(b["cat"], b["num"], b["actions"], b["click"], b["convert"]))
             for b in _chunks(t, batch_size)]
    p = torch.cat(parts).numpy().astype(np.float64)
    return {"click": p[..., 0], "convert": p[..., 1], "churn": p[..., 2]}

