"""Column layout of the observation, named once (the env writes it, recommenders and replay read it)."""

from __future__ import annotations

from envs.world import World


class ObservationLayout:
    """Column slices of the observation, named once."""

    def __init__(self, world: World) -> None:
        schema, cat = world.profile_schema, world.catalog
        self.names: list[str] = []
        self.profile_cat: list[slice] = []
        for name, card in schema.categorical.items():
            self.profile_cat.append(self._add([f"{name}={v}" for v in range(card)]))
        self.profile_num = self._add(list(schema.numeric))
        self.profile = slice(0, self.profile_num.stop)  # every profile column (one-hots, numerics)
        a, c = cat.n_offers, cat.n_categories
        self.offer_exposure = self._add([f"exposure_offer_{i}" for i in range(a)])
        self.category_exposure = self._add([f"exposure_category_{i}" for i in range(c)])
        self.category_clicks = self._add([f"clicks_category_{i}" for i in range(c)])
        self.decayed = slice(self.offer_exposure.start, self.category_clicks.stop)  # the three above
        self.clicked_last = self._add(["clicked_last"]).start
        self.conversions = self._add(["conversions"]).start
        self.since_offer = self._add(["time_since_offer"]).start
        self.sends = self._add([f"sends_offer_{i}" for i in range(a)])
        self.time_left = self._add(["time_left"]).start
        self.budget_left = self._add(["budget_left"]).start

    def _add(self, names: list[str]) -> slice:
        start = len(self.names)
        self.names.extend(names)
        return slice(start, len(self.names))
