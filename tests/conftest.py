"""One BLAS/OpenMP/torch thread in tests, like the project's default (shared 2-core machines)."""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import torch  # noqa: E402

torch.set_num_threads(1)

import pytest  # noqa: E402

from agents.reference import LoggingPolicy  # noqa: E402
from envs.campaign import CampaignConfig  # noqa: E402
from envs.true_world import TrueWorld, TrueWorldConfig  # noqa: E402
from experiments.collect import generate_logs, make_env_factory  # noqa: E402
from recsys.data.sequences import sequences_from_logs  # noqa: E402
from recsys.data.splits import split_users  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _sb3_logs_in_pytest_tmp(tmp_path_factory):
    """Tests that call SB3's ``learn()`` directly would leave an empty ``/tmp/SB3-<time>``
    folder each (SB3's default logger dir); point it at pytest's own temporary tree."""
    os.environ["SB3_LOGDIR"] = str(tmp_path_factory.mktemp("sb3"))
    yield
    os.environ.pop("SB3_LOGDIR", None)


@pytest.fixture(scope="session")
def logged_splits():
    """``make(n_users) -> (logs, train, validation, test)``: default-TrueWorld logs of the logging
    policy (users from seed 0), as sequences split by user; each size is generated once."""
    cache: dict[int, tuple] = {}

    def make(n_users: int) -> tuple:
        if n_users not in cache:
            env = make_env_factory(lambda n: TrueWorld(TrueWorldConfig(), n), CampaignConfig())
            logs = generate_logs(env, lambda e: LoggingPolicy(e), n_users=n_users, seed=0)
            seq = sequences_from_logs(logs)
            split = split_users(seq.user_ids, seed=0)
            cache[n_users] = (logs, *(seq.subset(split[s]) for s in ("train", "validation", "test")))
        return cache[n_users]
    return make
