"""The catalog of a user's own logs: read from ``catalog.json`` or inferred from the logs.

``catalog.json`` has the format a simulator directory already writes (``envs.world.Catalog``:
``category``, ``value``, ``discount`` per offer, one ``contact_cost``). Without one, what the
logs can show is inferred, and every assumption is returned as a note for the report:

* offers: ``n_actions - 1`` (the metadata's ``n_actions``, else the largest logged action + 1);
  action 0 must mean "no offer" (``no_offer_action``), as in every campaign-gym world;
* ``value`` of an offer: its mean ``revenue`` per conversion (offers that never converted get
  the mean over all conversions); without ``revenue`` and ``conversion`` columns every offer is
  worth 1.0, which only a reward that ignores money (``campaign.reward=click``) may use;
* ``contact_cost``: the mean ``cost`` of a send that did not convert; ``discount`` of an offer:
  its mean extra cost when it converts (the campaign's cost model, ``envs.campaign.outcome_money``);
  0 without a ``cost`` column;
* ``category``: unknown in logs, so every offer is in one category.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from envs.world import Catalog
from recsys.data.schema import LogSummary, log_metadata


def read_catalog(path: str | Path) -> Catalog:
    """``Catalog.from_json`` of a file, with one-line errors naming the path."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"experiment.logs.catalog: no such file {str(path)!r}; pass a catalog.json "
                         "(category, value, discount, contact_cost) or leave it null to infer one from the logs")
    try:
        return Catalog.from_json(json.loads(path.read_text()))
    except json.JSONDecodeError as e:
        raise ValueError(f"experiment.logs.catalog: {str(path)!r} is not valid JSON ({e})") from None


def _mean_per_offer(offer: np.ndarray, amount: np.ndarray, n_offers: int, fallback: float) -> np.ndarray:
    """Mean ``amount`` per offer index; offers without rows get ``fallback``."""
    n = np.bincount(offer, minlength=n_offers)
    total = np.bincount(offer, weights=amount, minlength=n_offers)
    return np.where(n > 0, total / np.maximum(n, 1), fallback)


def infer_catalog(table: pa.Table, summary: LogSummary, money_needed: bool) -> tuple[Catalog, list[str]]:
    """A catalog from the logs alone, and what was assumed (module docstring).

    ``money_needed``: the campaign's reward uses conversions or profit, so offer values must
    come from the logs' ``revenue``; raises a one-line ``ValueError`` when they cannot."""
    meta = log_metadata(table)
    if meta.get("no_offer_action", 0) != 0:
        raise ValueError("experiment.logs.catalog: cannot infer a catalog: these logs have no 'no offer' action 0 "
                         f"(metadata no_offer_action={meta.get('no_offer_action')!r}); campaign-gym worlds need one, "
                         "so pass experiment.logs.catalog=CATALOG.json and actions 0 = nothing sent, a >= 1 = offer a - 1")
    n_offers = summary.n_actions - 1
    if n_offers < 1:
        raise ValueError("experiment.logs.catalog: cannot infer a catalog: the logs never send an offer (only action 0)")
    cols = set(table.column_names)
    action = table.column("action").to_numpy()
    sent = action > 0
    offer = np.maximum(action - 1, 0)
    notes = [f"{n_offers} offers (actions 1..{n_offers}; action 0 = no offer)",
             "category unknown: every offer in one category"]
    converted = table.column("conversion").to_numpy().astype(bool) & sent if "conversion" in cols else None
    if "revenue" in cols and converted is not None and converted.any():
        revenue = table.column("revenue").to_numpy().astype(np.float64)
        overall = float(revenue[converted].mean())
        value = _mean_per_offer(offer[converted], revenue[converted], n_offers, overall)
        never = n_offers - len(np.unique(offer[converted]))
        notes.append(f"value = mean revenue per conversion of each offer ({never} offers never converted: "
                     f"given the overall mean {overall:.4g})")
    elif money_needed:
        missing = "revenue column" if "revenue" not in cols else "conversions" if converted is None or not converted.any() else ""
        raise ValueError(f"experiment.logs.catalog: cannot infer offer values: the logs have no {missing} "
                         "(value = revenue per conversion); pass experiment.logs.catalog=CATALOG.json "
                         "or use a reward without money (campaign.reward=click)")
    else:
        value = np.ones(n_offers)
        notes.append("value unknown (no revenue per conversion in the logs): 1.0 per offer; profit is not meaningful")
    contact_cost, discount = 0.0, np.zeros(n_offers)
    if "cost" in cols and sent.any():
        cost = table.column("cost").to_numpy().astype(np.float64)
        plain = sent & ~converted if converted is not None else sent
        contact_cost = float(cost[plain].mean()) if plain.any() else 0.0
        if converted is not None and converted.any():
            extra = np.maximum(cost[converted] - contact_cost, 0.0)
            discount = _mean_per_offer(offer[converted], extra, n_offers, float(extra.mean()))
        notes.append(f"contact_cost = mean cost of a send without conversion ({contact_cost:.4g}); "
                     "discount = mean extra cost of a conversion per offer")
    else:
        notes.append("cost unknown (no cost column): contact_cost 0 and discount 0")
    catalog = Catalog(category=np.zeros(n_offers, dtype=np.int64), value=value, discount=discount,
                      contact_cost=contact_cost)
    return catalog, notes
