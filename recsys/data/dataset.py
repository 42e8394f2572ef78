"""Logs read, validated and parsed once: the one object every learner takes.

``LoggedDataset.from_table`` validates the table (``recsys.data.schema``), groups it into
per-user sequences and profiles in one pass (``recsys.data.sequences.parse_logs``), checks it
against the catalog, and splits users into train / validation / test by a hash of the user id.
The response model and the recommenders take its sequences, the user GAN its profiles, OPE its
held-out users; nobody re-reads the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from envs.campaign import CampaignConfig
from envs.world import Catalog, Profiles, ProfileSchema
from recsys.data.profiles import MIN_USERS
from recsys.data.replay import LoggedData
from recsys.data.schema import LogSummary, log_metadata, validate_logs
from recsys.data.sequences import SequenceData, parse_logs
from recsys.data.splits import SPLITS, split_users


@dataclass(frozen=True)
class LoggedDataset:
    """A validated logs table with its per-user views, aligned row for row (users by id)."""

    table: pa.Table
    summary: LogSummary
    metadata: dict[str, Any]
    catalog: Catalog
    sequences: SequenceData  # every user
    profiles: Profiles  # one per user, same order as ``sequences``, with names and cardinalities
    split_masks: dict[str, np.ndarray]  # boolean over users: train / validation / test

    @classmethod
    def from_table(cls, table: pa.Table, catalog: Catalog, split_seed: int = 0,
                   min_users: int = MIN_USERS) -> LoggedDataset:
        """Validate and parse ``table`` once; ``split_seed`` fixes which users are held out."""
        summary = validate_logs(table)
        declared = log_metadata(table).get("n_actions")
        if declared is not None and declared != catalog.n_actions:
            raise ValueError(f"logs: the file declares n_actions={declared} but the catalog has {catalog.n_offers} "
                             f"offers ({catalog.n_actions} actions); pass the catalog the logs were made with")
        if summary.n_actions > catalog.n_actions:
            raise ValueError(f"logs: actions go up to {summary.n_actions - 1} but the catalog has "
                             f"{catalog.n_offers} offers; pass the catalog the logs were made with")
        if summary.n_users < min_users:
            raise ValueError(f"logs: {summary.n_users} users, need at least {min_users} to fit a simulator")
        sequences, profiles = parse_logs(table, catalog.n_actions)
        return cls(table, summary, log_metadata(table), catalog, sequences, profiles,
                   split_users(sequences.user_ids, seed=split_seed))

    def split(self, name: str) -> SequenceData:
        """The sequences of one split's users."""
        return self.sequences.subset(self._mask(name))

    def split_profiles(self, name: str) -> Profiles:
        return self.profiles.subset(self._mask(name))

    def replayed(self, name: str, profile_schema: ProfileSchema, campaign: CampaignConfig) -> LoggedData:
        """One split with the observations and masks every logged decision was taken on."""
        return LoggedData.replay(self.split(name), self.catalog, profile_schema, campaign)

    def from_world(self, world_seed: int) -> bool:
        """Whether TrueWorld with ``world_seed`` generated these logs (so truth-based checks apply)."""
        return self.metadata.get("source") == "true_world" and self.metadata.get("world_seed") == world_seed

    def _mask(self, name: str) -> np.ndarray:
        if name not in SPLITS:
            raise ValueError(f"split: got {name!r}, expected one of {SPLITS}")
        return self.split_masks[name]
