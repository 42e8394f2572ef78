"""Where one ``CampaignVectorEnv.step`` spends its time, so the next bottleneck is visible.

The parts of a step are timed by wrapping the functions the step calls (``PARTS``), with
*exclusive* times (a part called inside another is charged to itself only); whatever the
wrapped parts do not cover (the info dict, the copies of the observation, the Python between
the calls) is ``rest of step``. The step is a few fused numba kernels (``envs.kernels``); each
is timed through the env or world method that calls it.
Used by ``benchmarks.throughput`` (``step_breakdown`` in its JSON).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

import envs.vector_env as vector_env

# (label, owner, attribute): owner "env", "world" or "kernels" (envs.kernels, as the env and TrueWorld
# call it); an attribute the current code does not have is skipped. A part's time includes its Python
# call. The step's own kernels (envs.kernels, numba) are timed through the env methods that call them;
# TrueWorld's kernels through its World methods.
PARTS = (
    ("world: response probabilities", "world", "response_probs"),
    ("world: advance hidden state", "world", "advance"),
    ("autoreset: new users and their observation", "env", "_reset_slots"),
    ("rules: action checks and masks", "env", "_check_actions"),
    ("rules: action checks and masks", "env", "_prepare"),
    ("rules: outcome draws, money, reward, observation update, termination", "env", "_apply_rules"),
)
REST = "rest of step (info, observation copies, Python glue)"


class _Timers:
    """Exclusive wall time per label: a nested timed call is subtracted from its caller."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._stack: list[float] = []  # time spent in timed children of each open call

    def wrap(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._stack.append(0.0)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                children = self._stack.pop()
                self.seconds[label] = self.seconds.get(label, 0.0) + elapsed - children
                if self._stack:
                    self._stack[-1] += elapsed
        return timed


@contextmanager
def _instrumented(env: vector_env.CampaignVectorEnv, timers: _Timers) -> Iterator[None]:
    owners = {"env": env, "world": env.world}
    patched: list[tuple[Any, str, Any, bool]] = []
    for label, owner_name, attr in PARTS:
        owner = owners[owner_name]
        if not hasattr(owner, attr):
            continue
        own = attr in vars(owner) if hasattr(owner, "__dict__") else False
        patched.append((owner, attr, getattr(owner, attr), own))
        setattr(owner, attr, timers.wrap(label, getattr(owner, attr)))
    try:
        yield
    finally:
        for owner, attr, original, own in reversed(patched):
            if own:
                setattr(owner, attr, original)
            else:
                delattr(owner, attr)  # a bound method shadowed on the instance: unshadow it


def step_breakdown(env: vector_env.CampaignVectorEnv, actions: np.ndarray, seconds: float) -> dict[str, Any]:
    """Mean microseconds per step of each part (``PARTS``) and of the rest, over ``seconds``
    of steps with the action rows of ``actions`` (cycled); ``env`` must be reset already."""
    timers = _Timers()
    calls, total = 0, 0.0
    with _instrumented(env, timers):
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            start = time.perf_counter()
            env.step(actions[calls % len(actions)])
            total += time.perf_counter() - start
            calls += 1
    parts = {label: 1e6 * s / calls for label, s in timers.seconds.items()}
    parts[REST] = 1e6 * total / calls - sum(parts.values())
    step_us = 1e6 * total / calls
    return {"num_envs": env.num_envs, "step_calls": calls, "step_us_instrumented": step_us,
            "parts_us": parts, "parts_share": {k: v / step_us for k, v in parts.items()},
            "note": "exclusive times; wrapping adds ~0.3 us per wrapped call, charged to its part"}
