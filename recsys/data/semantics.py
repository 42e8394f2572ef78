"""Event semantics of the logs schema: the rules that tie a log's columns and rows together.

``recsys.data.schema.validate_logs`` calls ``first_violation`` once the per-column checks
(types, nulls, ranges) and the duplicate ``(user_id, step)`` check have passed, so every array
here is a clean numpy column and each user's steps are unique. The rules, in the order checked:

1. ``conversion`` implies ``click`` (when both columns exist);
2. no ``click`` (hence, by rule 1, no ``conversion``) on the "no offer" action (metadata
   ``no_offer_action``, default 0; ``None`` means the logs have no such action: the rule is off);
3. within each user, ``step`` strictly increases in file order;
4. a row with ``churned`` = 1 is its user's last step;
5. every ``cat_*`` / ``num_*`` column is constant within a user (exact equality: profiles are
   copied values).

Vectorised: one stable sort of the rows by user (file order kept within a user), no per-user
loops. A broken rule is reported as one line: the field, how many rows break it, the first
offending row in file order (its user and step) and the fix.
"""

from __future__ import annotations

import numpy as np


class _Users:
    """The rows grouped by user: ``order`` sorts them by ``user_id``, stable (file order within a user)."""

    def __init__(self, users: np.ndarray, step: np.ndarray) -> None:
        self.users, self.step = users, step
        self.order = np.argsort(users, kind="stable")
        sorted_users = users[self.order]
        self.starts = np.r_[True, sorted_users[1:] != sorted_users[:-1]]  # first sorted row of a user
        self.group = np.cumsum(self.starts) - 1  # user index of each sorted row

    def within(self, x: np.ndarray) -> np.ndarray:
        """``x`` (in sorted order) minus its value at the user's first sorted row."""
        return x - x[self.starts][self.group]

    def file_mask(self, bad_sorted: np.ndarray) -> np.ndarray:
        """A mask over sorted rows as a mask over file rows."""
        bad = np.zeros(len(self.order), dtype=bool)
        bad[self.order[bad_sorted]] = True
        return bad

    def report(self, name: str, bad: np.ndarray, what: str, fix: str) -> str | None:
        rows = np.flatnonzero(bad)
        if not len(rows):
            return None
        i, n = int(rows[0]), len(rows)
        has = f"{n} row has" if n == 1 else f"{n} rows have"
        return f"{name}: {has} {what} (first: user {int(self.users[i])} step {int(self.step[i])}); {fix}"


def _conversion_without_click(u: _Users, values: dict[str, np.ndarray]) -> str | None:
    if "conversion" not in values:
        return None
    bad = (values["conversion"] != 0) & (values["click"] == 0)
    return u.report("conversion", bad, "a conversion without a click", "log conversion only on clicked rows")


def _click_on_no_offer(u: _Users, values: dict[str, np.ndarray], no_offer: int | None) -> str | None:
    """(A conversion there is caught too: by this rule when clicked, by rule 1 otherwise.)"""
    if no_offer is None:
        return None
    bad = (values["action"] == no_offer) & (values["click"] != 0)
    return u.report(
        "click", bad, f"a click on the 'no offer' action {no_offer}",
        "nothing was sent, so nothing can be clicked — check the action encoding, or set metadata "
        f"no_offer_action to null if action {no_offer} is a real item",
    )


def _steps_out_of_order(u: _Users) -> str | None:
    ss = u.step[u.order]
    back = np.r_[False, ~u.starts[1:] & (ss[1:] <= ss[:-1])]  # not after the user's previous row
    return u.report(
        "step", u.file_mask(back), "a step lower than their user's previous row",
        "within a user steps must strictly increase in file order — sort rows by (user_id, step)",
    )


def _rows_after_churn(u: _Users, values: dict[str, np.ndarray]) -> str | None:
    if "churned" not in values:
        return None
    churned = (values["churned"][u.order] != 0).astype(np.int64)
    earlier = u.within(np.cumsum(churned) - churned)  # churns of the user before this row
    return u.report(
        "churned", u.file_mask(earlier > 0), "a step after their user churned",
        "a churned row must be the user's last step — drop the rows after the churn or fix churned",
    )


def _profile_changes(u: _Users, profile: dict[str, np.ndarray]) -> str | None:
    first_sorted = u.order[u.starts][u.group]  # file row of the user's first row, per sorted row
    for name, x in profile.items():
        xs = x[u.order]
        msg = u.report(
            name, u.file_mask(xs != x[first_sorted]), "a value different from their user's first row",
            "a profile is constant within a user — copy the user's value into every row, or rename a "
            f"time-varying column without the {name.split('_', 1)[0]}_ prefix",
        )
        if msg:
            return msg
    return None


def first_violation(
    values: dict[str, np.ndarray], profile: dict[str, np.ndarray], no_offer_action: int | None = 0
) -> str | None:
    """The one-line message of the first broken rule (module docstring), or None.

    ``values``: the known columns by name (``user_id``, ``step``, ``action``, ``click`` and the
    optional ones present); ``profile``: the ``cat_*`` / ``num_*`` columns by column name.
    """
    u = _Users(values["user_id"], values["step"])
    return (
        _conversion_without_click(u, values)
        or _click_on_no_offer(u, values, no_offer_action)
        or _steps_out_of_order(u)
        or _rows_after_churn(u, values)
        or _profile_changes(u, profile)
    )
