"""experiments.parallel: a job's result cannot depend on where or after what it ran."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from experiments.parallel import Workers


def unseeded_draws(n: int) -> tuple[list[float], list[float]]:
    """Draws from the global RNGs a job did not seed (what the per-job reset makes stable)."""
    return np.random.random(n).tolist(), torch.rand(n).tolist()


def burn_global_rngs() -> None:
    np.random.random(1000)
    torch.rand(1000)


def fail(field: str) -> None:
    raise ValueError(f"{field}: bad")


def test_job_results_do_not_depend_on_the_number_of_workers_or_on_earlier_jobs():
    with Workers(1) as inline:
        first = inline.submit(unseeded_draws, 3).result()[0]
        inline.submit(burn_global_rngs).result()
        after_other_job = inline.submit(unseeded_draws, 3).result()[0]
    with Workers(2) as pool:
        futures = [pool.submit(burn_global_rngs), pool.submit(unseeded_draws, 3), pool.submit(unseeded_draws, 3)]
        in_workers = [f.result()[0] for f in futures[1:]]
    assert first == after_other_job == in_workers[0] == in_workers[1]


def test_inline_jobs_leave_the_callers_random_state_alone():
    np.random.seed(7)
    torch.manual_seed(7)
    expected = np.random.random(2).tolist(), torch.rand(2).tolist()
    np.random.seed(7)
    torch.manual_seed(7)
    with Workers(1) as inline:
        inline.submit(burn_global_rngs).result()
    assert (np.random.random(2).tolist(), torch.rand(2).tolist()) == expected


@pytest.mark.parametrize("n", [1, 2])
def test_a_failing_job_raises_its_own_error_in_the_caller(n):
    with Workers(n) as workers, pytest.raises(ValueError, match="campaign.reward: bad"):
        workers.gather({"bad": workers.submit(fail, "campaign.reward")}, "jobs", progress=False)


def test_gather_returns_named_results_in_order_with_each_jobs_seconds():
    with Workers(2) as workers:
        results = workers.gather({f"job_{k}": workers.submit(pow, k, 2) for k in range(4)}, "jobs", progress=False)
        assert workers.map(pow, [(2, 3), (3, 2)]) == [8, 9]
    assert results == {f"job_{k}": k * k for k in range(4)}
    assert list(results) == [f"job_{k}" for k in range(4)]
    assert set(workers.job_seconds) == set(results) and all(s >= 0 for s in workers.job_seconds.values())


def test_zero_or_negative_workers_is_a_config_error():
    with pytest.raises(ValueError, match="experiment.workers"):
        Workers(0)


def test_jobs_are_queued_longest_first_and_unknown_ones_keep_their_order():
    from experiments.parallel import longest_first

    names = ["mf", "train_sac", "response_model_gru_member_1", "user_gan", "train_td3", "train_ppo"]
    assert longest_first(names) == ["user_gan", "train_ppo", "response_model_gru_member_1", "mf", "train_sac", "train_td3"]
