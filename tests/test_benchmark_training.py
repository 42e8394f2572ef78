"""benchmarks.training on the sim-to-real simulator: the ensemble and the pessimism it is
asked for are the ones it times (a benchmark that silently measured a single model would
report the wrong cost)."""

from __future__ import annotations

import pytest

from benchmarks import training


def test_training_benchmark_times_the_ensemble_with_pessimism():
    out = training.main(["--steps", "256", "--n-envs", "8", "--n-steps", "16", "--ensemble-size", "3",
                         "--reward-penalty", "1", "--threshold", "0.05", "--halt"])
    assert out["ensemble_size"] == 3
    assert out["pessimism"]["reward_penalty"] == 1.0 and out["pessimism"]["halt"] is True
    assert out["env_steps"] >= 256
    assert 0 < out["env_seconds"] < out["learn_seconds"]


def test_pessimism_without_an_ensemble_is_refused():
    with pytest.raises(ValueError, match="ensemble"):
        training.main(["--steps", "64", "--n-envs", "4", "--n-steps", "16", "--reward-penalty", "1"])
