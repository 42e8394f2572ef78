"""How a learned world distrusts itself off the logged distribution.

A simulator fitted on logs is accurate where the logging policy went and wrong elsewhere, and
an agent trained in it drifts to where it is wrong in its own favour. An ensemble of response
models disagrees exactly there, so its disagreement u(s, a) (``LearnedWorld.reward_uncertainty``:
the std over members of the action's expected reward, in reward units) is the signal. Three
mechanisms use it, each off by default and combinable:

- ``reward_penalty`` lambda: the reward becomes r - lambda * u (MOPO, Yu et al. 2020).
- ``halt`` with ``halt_penalty`` kappa: a user whose step has u above ``threshold`` halts:
  the episode ends there with reward r - kappa (MOReL, Kidambi et al. 2020: an absorbing
  HALT state, so it is a termination, not a truncation, and value bootstrapping stops). The
  threshold is calibrated on logged data (``recsys.simulator.uncertainty``). Without
  ``halt``, a threshold only marks such steps (``info["uncertain"]``): how often a policy
  leaves the region the logs cover.
- ``member_per_user``: each simulated user responds like ONE ensemble member, drawn from its
  key at reset, instead of like the members' mean; a policy must then do well in every
  plausible world rather than in their average.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from envs.checks import require


@dataclass(frozen=True)
class Pessimism:
    """The pessimism of one learned world (see the module docstring)."""

    reward_penalty: float = 0.0  # MOPO lambda (reward units per unit of u)
    threshold: float | None = None  # u above which a step is off the logged distribution (reward units)
    halt: bool = False  # MOReL: users halt on such a step
    halt_penalty: float = 0.0  # MOReL kappa: reward charged on the halting step
    member_per_user: bool = False

    def __post_init__(self) -> None:
        require(math.isfinite(self.reward_penalty) and self.reward_penalty >= 0, "simulator.learned_world.reward_penalty",
                "a finite number >= 0", self.reward_penalty)
        require(self.threshold is None or (math.isfinite(self.threshold) and self.threshold >= 0),
                "simulator.learned_world.threshold", "None or a finite number >= 0", self.threshold)
        require(not self.halt or self.threshold is not None, "simulator.learned_world.halt",
                "False without a threshold (halting needs one)", self.halt)
        require(math.isfinite(self.halt_penalty) and self.halt_penalty >= 0, "simulator.learned_world.halt_penalty",
                "a finite number >= 0", self.halt_penalty)

    @property
    def shapes_steps(self) -> bool:
        """Whether the env must ask the world for penalties and halts each step."""
        return self.reward_penalty > 0 or self.threshold is not None

    @property
    def active(self) -> bool:
        return self.shapes_steps or self.member_per_user
