"""The shared training loop (recsys.training) and the model-directory convention (recsys.artifacts)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from recsys.artifacts import ModelDirError, ModelFileMissing, load_model_dir, save_model_dir
from recsys.training import BestWeights, fit_early_stopping


@dataclass
class _Settings:
    epochs: int = 60
    batch_size: int = 8
    lr: float = 0.1
    weight_decay: float = 0.0
    patience: int = 3
    max_seconds: float | None = None
    seed: int = 0


class _Scalar(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))


def test_early_stopping_restores_the_best_validation_weights() -> None:
    """Training pulls w from 0 towards 2, validation wants 0.5: the validation loss falls, then
    rises; the loop stops after ``patience`` worse epochs and puts back the best epoch's w."""
    module = _Scalar()
    train = {"x": torch.zeros(8)}
    seen: list[tuple[int, float, float, float]] = []

    def validation_loss(m: nn.Module) -> float:
        return float((m.w - 0.5) ** 2)

    best = fit_early_stopping(module, lambda m, b: ((m.w - 2.0) ** 2) + 0.0 * b["x"].sum(), train, validation_loss,
                              _Settings(), "test", progress=False,
                              on_epoch=lambda e, tr, va: seen.append((e, tr, va, float(module.w.detach()))))
    vals = [v for _, _, v, _ in seen]
    i = vals.index(min(vals))
    assert 0 < i < len(vals) - 1 and vals[-1] > vals[i]  # it fell, then rose
    assert len(vals) == i + 1 + _Settings.patience  # stopped after `patience` epochs without improvement
    assert best == min(vals)
    assert float(module.w.detach()) == seen[i][3] != seen[-1][3]  # the best epoch's weights, not the last ones
    assert not module.training


@pytest.mark.parametrize(("max_seconds", "epochs_run"), [(None, 60), (1e-9, 1)])
def test_the_wall_clock_cap_is_optional(max_seconds: float | None, epochs_run: int) -> None:
    """Without a cap (the default) the epoch budget alone decides, however slow the machine;
    a cap stops after the epoch that exceeds it."""
    seen: list[int] = []
    fit_early_stopping(_Scalar(), lambda m, b: (m.w - 2.0) ** 2 + 0.0 * b["x"].sum(), {"x": torch.zeros(8)},
                       lambda m: -float(len(seen)),  # always improving: patience never stops it
                       _Settings(max_seconds=max_seconds), "test", progress=False,
                       on_epoch=lambda e, tr, va: seen.append(e))
    assert len(seen) == epochs_run


def test_best_weights_needs_a_real_improvement() -> None:
    """A loss counts as better only if it beats the best by ``min_improvement``."""
    tracker = BestWeights(min_improvement=0.1)
    m = _Scalar()
    assert tracker.offer(m, 1.0) and not tracker.offer(m, 0.95) and tracker.offer(m, 0.85)
    with torch.no_grad():
        m.w.fill_(3.0)
    tracker.restore(m)
    assert float(m.w.detach()) == 0.0


def test_model_dir_round_trip_and_errors(tmp_path: Path) -> None:
    state = {"w": torch.arange(3.0)}
    save_model_dir(tmp_path / "m", {"a": 1}, state, "weights.pt", {"loss": 0.5})
    config, loaded, metrics = load_model_dir(tmp_path / "m", "weights.pt", "test", "save it first", metrics=True)
    assert config == {"a": 1} and metrics == {"loss": 0.5} and torch.equal(loaded["w"], state["w"])
    (tmp_path / "m" / "metrics.json").unlink()
    with pytest.raises(FileNotFoundError, match="metrics.json: missing test file; save it first"):
        load_model_dir(tmp_path / "m", "weights.pt", "test", "save it first", metrics=True)
    with pytest.raises(ModelFileMissing):
        load_model_dir(tmp_path / "m", "other.pt", "test", "")
    (tmp_path / "m" / "config.json").write_text("[1, 2]")
    with pytest.raises(ModelDirError, match="config.json: expected a JSON object"):
        load_model_dir(tmp_path / "m", "weights.pt", "test", "")


class _Payload:
    """Unpickling this would create a file: what a planted checkpoint could do."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_a_planted_pickle_payload_is_refused(tmp_path: Path) -> None:
    save_model_dir(tmp_path / "m", {"a": 1}, {"w": torch.zeros(1)}, "weights.pt")
    marker = tmp_path / "payload_ran"
    torch.save({"w": _Payload(marker)}, tmp_path / "m" / "weights.pt")  # a checkpoint whose unpickling runs code
    with pytest.raises(ModelDirError, match="weights.pt: cannot load the test weights") as e:
        load_model_dir(tmp_path / "m", "weights.pt", "test", "")
    assert "\n" not in str(e.value)
    assert not marker.exists()
    torch.load(tmp_path / "m" / "weights.pt", weights_only=False)  # the payload is real: a full unpickle runs it
    assert marker.exists()
