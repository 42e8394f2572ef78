"""Field checks for config dataclasses: each bad value gets one line naming the field.

Hydra's structured configs check types for values that come through Hydra; these checks also
cover configs built in Python or read back from a JSON file (a simulator directory), where a
``hidden_dim="sixty-four"`` would otherwise surface as a ``TypeError`` deep inside torch.
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

_SCALARS = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}


def check_field_types(config: Any, section: str) -> None:
    """Raise ``ValueError`` for the first field whose value does not match its annotated
    scalar type (``int``, ``float``, ``bool``, ``str``; other annotations are not checked).
    ``bool`` is not accepted for numbers, and floats must be finite."""
    for f in fields(config):
        kinds = _SCALARS.get(str(f.type))
        if kinds is None:
            continue
        value = getattr(config, f.name)
        ok = isinstance(value, kinds) and (str(f.type) == "bool" or not isinstance(value, bool))
        if ok and isinstance(value, float) and not math.isfinite(value):
            ok = False
        if not ok:
            raise ValueError(f"{section}.{f.name}: expected a finite {f.type}, got {value!r}")


def require(ok: bool, field: str, expected: str, value: Any) -> None:
    """One-line ``ValueError`` ``<field>: must be <expected>, got <value>`` unless ``ok``."""
    if not ok:
        raise ValueError(f"{field}: must be {expected}, got {value!r}")
