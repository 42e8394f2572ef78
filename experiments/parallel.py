"""Independent jobs of a run (response-model fits, the GAN, recommenders, agents, rollouts)
spread over worker processes, or Ray tasks when Ray is running.

Why: every job is single-threaded (one torch thread: two threads collapse under contention on
small shared machines), so a run that does its independent stages one after another leaves
all cores but one idle. ``Workers`` runs each job in a fresh process of one pool kept for the
whole run (joblib's loky executor: fork + exec, as a forked torch/numba process can deadlock;
unlike multiprocessing's "spawn", it also works inside the joblib launcher's own loky workers),
or, for the sharded evaluation, as a Ray task when this process has initialised Ray (a
Ray-launched sweep, or ``ray.init()``).

Same numbers with any number of workers: a job is sent as cloudpickle bytes (factories are
closures over configs and fitted models), and every job starts from the same global RNG
states and torch thread count wherever it runs, the inline path (``workers = 1``) included,
so which worker ran it, and after which other job, cannot change its result
(``tests/test_parallel.py``). Jobs seed everything they draw themselves; the reset only keeps
an unseeded draw from depending on the schedule.
"""

from __future__ import annotations

import io
import logging
import os
import random
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, as_completed
from types import SimpleNamespace
from typing import Any

import cloudpickle
import numpy as np
import torch
from joblib.externals.loky import ProcessPoolExecutor
from stable_baselines3.common.base_class import BaseAlgorithm
from tqdm.auto import tqdm

from experiments import setup_torch

log = logging.getLogger("campaign_gym")

# Seconds jobs of `make run` took on 2 cores (results.json -> jobs, commit 49b4d52, 2 workers; PPO
# and ppo_true train 3M steps): the order jobs are queued in, longest first, so the short ones fill
# the workers around the long ones (LPT scheduling). Only the wall time depends on it, never a result.
TYPICAL_SECONDS = {
    "user_gan": 159, "response_model_attention": 110, "response_model_gru": 54, "response_model_none": 34,
    "response_model_logistic": 12, "deepfm": 36, "gru4rec": 26, "value_ranker": 20, "logistic": 20, "mf": 2,
    "train_ppo": 133, "train_ppo_true": 116, "train_maskable_ppo": 53, "train_recurrent_ppo": 52, "train_dqn": 22,
    "train_a2c": 14,
}


def longest_first(names: Iterable[str]) -> list[str]:
    """``names`` by decreasing ``TYPICAL_SECONDS`` (a name's ``_member_<k>`` suffix ignored);
    names it does not know keep their order, after the ones it knows."""
    def seconds(name: str) -> float:
        return TYPICAL_SECONDS.get(name.split("_member_")[0], 0.0)

    return sorted(names, key=lambda name: -seconds(name))


def worker_count(requested: int) -> int:
    """``experiment.workers`` resolved: as set, or for 0 one per available CPU, except inside a
    parallel Hydra launcher's job (joblib, submitit, Ray), where the launcher already fills the
    cores and a second pool per job would only oversubscribe them."""
    if requested:
        return requested
    return 1 if _in_parallel_sweep() else available_cpus()


def _in_parallel_sweep() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return False
    hydra_cfg = HydraConfig.get()
    return hydra_cfg.mode == RunMode.MULTIRUN and "BasicLauncher" not in str(hydra_cfg.launcher.get("_target_", ""))


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class _TaskPickler(cloudpickle.CloudPickler):
    """cloudpickle, as factories are closures over configs and fitted models (plain pickle
    refuses closures); a trained SB3 model crosses as what acting needs (``agents.sb3.SB3Policy``
    reads ``policy`` and ``action_space``), since its env and logger hold live envs and locks."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, BaseAlgorithm):
            return SimpleNamespace, (), {"policy": obj.policy, "action_space": obj.action_space}
        return super().reducer_override(obj)


def dumps(obj: Any) -> bytes:
    buffer = io.BytesIO()
    _TaskPickler(buffer).dump(obj)
    return buffer.getvalue()


def _run_job(job: bytes, threads: int) -> tuple[Any, float]:
    """(result, seconds) of one job, from the same RNG states and thread count everywhere."""
    setup_torch(threads)
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    fn, args, kwargs = cloudpickle.loads(job)
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


class Workers:
    """Run jobs ``fn(*args)`` on ``n`` worker processes (or Ray tasks), or inline when ``n == 1``.

    ``submit`` returns a ``concurrent.futures.Future`` of ``(result, seconds)``; ``map`` runs
    many and returns their results in order. Use as a context manager (the pool is started at
    the first job and shut down at exit)."""

    def __init__(self, n: int = 1, threads: int = 1, ray: bool = False) -> None:
        if n < 1:
            raise ValueError(f"experiment.workers: must be >= 1 (0 in the config: one per CPU), got {n}")
        self.n, self.threads, self.ray = n, threads, ray
        self.job_seconds: dict[str, float] = {}  # seconds each gathered job took where it ran
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, kill_workers=True)
            self._pool = None

    @property
    def engine(self) -> str:
        """Where jobs run: "ray" (tasks), "processes" (the pool) or "inline"."""
        return "ray" if self._ray() is not None else "processes" if self.n > 1 else "inline"

    @property
    def parallel(self) -> bool:
        """Jobs run elsewhere (so their own progress bars would garble the terminal)."""
        return self.n > 1 or self._ray() is not None

    def _ray(self) -> Any:
        """The ray module when this pool may use Ray and this process runs it (importing ray
        is the caller's choice, so a run without Ray never loads it), else None."""
        ray = sys.modules.get("ray") if self.ray else None
        return ray if ray is not None and ray.is_initialized() else None

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future | _RayResult:
        job = dumps((fn, args, kwargs))
        ray = self._ray()
        if ray is not None:
            return _RayResult(ray, ray.remote(num_cpus=self.threads)(_run_job).remote(job, self.threads))
        if self.n == 1:  # inline; the caller's RNG states are kept, as a worker's job cannot touch them
            future: Future = Future()
            states = random.getstate(), np.random.get_state(), torch.get_rng_state()
            try:
                future.set_result(_run_job(job, self.threads))
            except Exception as exc:  # handed to the caller through the future, as from a worker
                future.set_exception(exc)
            finally:
                random.setstate(states[0])
                np.random.set_state(states[1])
                torch.set_rng_state(states[2])
            return future
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.n)
        return self._pool.submit(_run_job, job, self.threads)

    def map(self, fn: Callable[..., Any], jobs: Iterable[tuple]) -> list[Any]:
        """``[fn(*job) for job in jobs]``, run in parallel, in order."""
        futures = [self.submit(fn, *job) for job in jobs]
        return [f.result()[0] for f in futures]

    def gather(self, futures: dict[str, Future], desc: str, progress: bool = True) -> dict[str, Any]:
        """The results of named jobs, with one progress bar over them (a parallel job's own
        bars are off) and each job's seconds in ``job_seconds``. The first failure is raised."""
        bar = tqdm(total=len(futures), desc=desc, disable=not progress)
        names = {id(f): name for name, f in futures.items()}
        local = all(isinstance(f, Future) for f in futures.values())
        try:
            for future in as_completed(futures.values()) if local else futures.values():
                name = names[id(future)]
                _, self.job_seconds[name] = future.result()
                bar.set_postfix_str(name)
                bar.update()
                log.info("%s: %s done in %.1f s", desc, name, self.job_seconds[name])
        finally:
            bar.close()
        return {name: f.result()[0] for name, f in futures.items()}


class _RayResult:
    """A Ray task's result behind ``Future.result``; waiting goes through ``ray.get``, which
    lends the waiting task's CPU back to Ray (a job inside a Ray-launched sweep cannot
    deadlock on its own tasks)."""

    def __init__(self, ray: Any, ref: Any) -> None:
        self._ray, self._ref = ray, ref

    def result(self) -> Any:
        return self._ray.get(self._ref)
