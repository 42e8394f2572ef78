"""The shared formatting of every report: one number formatter, one interval formatter, tables.

Numbers get 3 significant digits (``num``), so a table of profits, rates and counts reads at a
glance; an interval ``{"mean", "ci_low", "ci_high"}`` is "mean [low, high]" with the bounds at
the mean's precision (``interval``). The HTML page sets the bracket on a second line in small
type (``experiments.report.html``), so the Markdown stays plain.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

DIGITS = 3  # significant digits of every number in a report
MISSING = "–"
_NUMERIC = re.compile(r"^(\*\*)?[-+]?[0-9]")  # a cell that starts with a number (possibly bold)
METRIC_LABELS = {"click_rate": "click rate", "conversion_rate": "conversion rate", "profit": "profit / user",
                 "return": "return / user", "episode_length": "episode length", "offers_sent": "offers sent",
                 "roi": "ROI", "coverage": "coverage"}


def is_number(x: Any) -> bool:
    """A finite real number (not a bool, None or NaN)."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def decimals(x: float, digits: int = DIGITS) -> int:
    """Digits after the point that give ``x`` ``digits`` significant digits (0 for |x| >= 10**(digits-1))."""
    if not is_number(x) or x == 0:
        return 0
    rounded = float(f"{abs(x):.{digits}g}")  # 9.996 -> 10.0: count the digits of the rounded value
    if not math.isfinite(rounded):  # ~1.8e308 rounds up to inf
        return 0
    return max(0, digits - 1 - math.floor(math.log10(rounded)))


def num(x: Any, digits: int = DIGITS, sign: bool = False, places: int | None = None) -> str:
    """``x`` with ``digits`` significant digits ("6.72", "0.0781", "22.2", "10,992"); ``sign``:
    a "+" on positive numbers; ``places``: fixed digits after the point instead. None/NaN: "–"."""
    if not is_number(x):
        return MISSING
    if isinstance(x, numbers.Integral) and places is None:  # counts are exact
        return f"{x:{'+' if sign else ''},d}"
    d = decimals(x, digits) if places is None else places
    if x == 0 and places is None:
        return "0"
    text = f"{x:{'+' if sign else ''},.{d}f}"
    return text.lstrip("+-") if text.lstrip("+-").strip("0.,") == "" else text  # "-0.00" -> "0.00"


def pct(x: Any, digits: int = 2, sign: bool = False) -> str:
    """A share as a percentage with ``digits`` significant digits ("65%", "1.0%", "187%")."""
    return MISSING if not is_number(x) else num(100 * x, digits, sign) + "%"


def interval_parts(iv: Mapping[str, Any] | None, sign: bool = False) -> tuple[str, str | None]:
    """(mean, "[low, high]" or None): both bounds at the precision that gives the larger one 3
    significant digits; no bracket without finite bounds or when both equal the mean."""
    if iv is None or not is_number(iv.get("mean")):
        return MISSING, None
    mean, lo, hi = iv["mean"], iv.get("ci_low"), iv.get("ci_high")
    if not (is_number(lo) and is_number(hi)) or lo == hi == mean:
        return num(mean, sign=sign), None
    d = decimals(max(abs(lo), abs(hi)))
    return num(mean, sign=sign), f"[{num(lo, sign=sign, places=d)}, {num(hi, sign=sign, places=d)}]"


def interval(iv: Mapping[str, Any] | None, sign: bool = False) -> str:
    """"mean [low, high]" (see ``interval_parts``)."""
    mean, ci = interval_parts(iv, sign)
    return mean if ci is None else f"{mean} {ci}"


def excludes_zero(iv: Mapping[str, Any]) -> bool:
    """Whether a difference's CI lies entirely on one side of 0."""
    return is_number(iv.get("ci_low")) and is_number(iv.get("ci_high")) and (iv["ci_low"] > 0 or iv["ci_high"] < 0)


def value(v: Any) -> str:
    """Any results value in a sentence: numbers by ``num``, sequences joined, the rest as text."""
    if is_number(v) or v is None:
        return num(v)
    if isinstance(v, list | tuple):
        return ", ".join(map(str, v)) or "none"
    return str(v)


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table; the first column and columns of text are left-aligned, columns of
    numbers right-aligned; "|" inside a cell is escaped."""
    rows = [[str(c).replace("|", "\\|") for c in r] for r in rows]
    numeric = [i > 0 and all(_NUMERIC.match(r[i]) for r in rows if r[i] not in ("", MISSING)) for i in range(len(header))]
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "".join("---:|" if n else ":---|" for n in numeric),
                      *("| " + " | ".join(r) + " |" for r in rows)])
