"""History encoders of the neural response model: each reads a user's past events (offer
shown, outcome) as whole sequences (``before_each``, training) and step by step
(``initial`` / ``read`` / ``step``, simulation), and the two give the same numbers."""

from __future__ import annotations

import torch
from torch import nn


class GRUHistory(nn.Module):
    """State = GRU hidden vector; initialised from the profile."""

    def __init__(self, embed_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.init = nn.Linear(hidden_dim, hidden_dim)
        self.gru = nn.GRU(embed_dim, hidden_dim, batch_first=True)

    def initial(self, u: torch.Tensor, horizon: int) -> torch.Tensor:
        return torch.tanh(self.init(u))

    def before_each(self, u: torch.Tensor, events: torch.Tensor) -> torch.Tensor:
        """(B, T, H) history vectors, entry t summarising events 0..t-1."""
        h0 = self.initial(u, events.shape[1])
        if events.shape[1] == 1:
            return h0[:, None]
        out, _ = self.gru(events[:, :-1], h0[None])
        return torch.cat([h0[:, None], out], dim=1)

    def read(self, state: torch.Tensor) -> torch.Tensor:
        return state

    def step(self, state: torch.Tensor, event: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        # one GRU cell step: the same numbers as a length-1 self.gru call, with less overhead
        g = self.gru
        return torch.gru_cell(event, state, g.weight_ih_l0, g.weight_hh_l0, g.bias_ih_l0, g.bias_hh_l0)


class AttentionHistory(nn.Module):
    """Causal self-attention over [profile token, event_0, ..., event_{t-1}]. State = the
    buffer of event embeddings and how many are filled."""

    def __init__(self, embed_dim: int, hidden_dim: int, max_len: int = 64, heads: int = 2) -> None:
        super().__init__()
        self.inp = nn.Linear(embed_dim, hidden_dim)
        self.start = nn.Linear(hidden_dim, hidden_dim)
        self.pos = nn.Embedding(max_len + 1, hidden_dim)
        self.layer = nn.TransformerEncoderLayer(hidden_dim, heads, 2 * hidden_dim, dropout=0.0, batch_first=True)
        self.max_len = max_len

    def _encode(self, u: torch.Tensor, events: torch.Tensor) -> torch.Tensor:
        tokens = torch.cat([self.start(u)[:, None], self.inp(events)], dim=1)
        tokens = tokens + self.pos(torch.arange(tokens.shape[1], device=u.device))[None]
        causal = nn.Transformer.generate_square_subsequent_mask(tokens.shape[1])
        return self.layer(tokens, src_mask=causal, is_causal=True)

    def before_each(self, u: torch.Tensor, events: torch.Tensor) -> torch.Tensor:
        return self._encode(u, events[:, :-1])

    def initial(self, u: torch.Tensor, horizon: int) -> dict[str, torch.Tensor]:
        return {"u": u, "events": u.new_zeros(len(u), horizon, self.inp.in_features),
                "length": torch.zeros(len(u), dtype=torch.long)}

    def read(self, state: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self._encode(state["u"], state["events"])
        return out[torch.arange(len(out)), state["length"]]

    def step(self, state: dict[str, torch.Tensor], event: torch.Tensor, steps: torch.Tensor) -> dict[str, torch.Tensor]:
        events = state["events"].clone()
        events[torch.arange(len(event)), state["length"].clamp(max=events.shape[1] - 1)] = event
        return {"u": state["u"], "events": events, "length": (state["length"] + 1).clamp(max=events.shape[1] - 1)}


class NoHistory(nn.Module):
    """No history (the ``"none"`` ablation): a constant zero state."""

    def __init__(self, hidden_dim: int) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim

    def initial(self, u: torch.Tensor, horizon: int) -> torch.Tensor:
        return u.new_zeros(len(u), self.hidden_dim)

    def before_each(self, u: torch.Tensor, events: torch.Tensor) -> torch.Tensor:
        return u.new_zeros(*events.shape[:2], self.hidden_dim)

    def read(self, state: torch.Tensor) -> torch.Tensor:
        return state

    def step(self, state: torch.Tensor, event: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        return state

