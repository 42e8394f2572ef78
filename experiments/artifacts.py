"""Run provenance: what reproduces a run, and what each stage cost (atomic writes live in
``recsys.artifacts``)."""

from __future__ import annotations

import logging
import platform
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

_PACKAGES = ("numpy", "torch", "gymnasium", "stable-baselines3", "sb3-contrib", "hydra-core", "pyarrow")


def provenance() -> dict[str, Any]:
    """Package versions, Python and the git commit of the code that ran."""
    versions = {}
    for pkg in _PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    repo = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True, timeout=5
        ).stdout.strip()
        dirty = bool(subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True,
            text=True, timeout=5,
        ).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {"python": platform.python_version(), "packages": versions, "git_commit": commit, "git_dirty": dirty}


class StageTimer:
    """Wall-clock seconds per stage of a job (``results.json`` → ``timings``), so the cost of
    each part of a run is visible. Timings are reported, never used to stop work (budgets are
    in steps and epochs, so numbers do not depend on the machine's load)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._log = logging.getLogger("campaign_gym")

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
            self._log.info("stage %s: %.1f s", name, self.seconds[name])

    def as_dict(self) -> dict[str, float]:
        return {**{k: round(v, 2) for k, v in self.seconds.items()}, "total": round(sum(self.seconds.values()), 2)}
