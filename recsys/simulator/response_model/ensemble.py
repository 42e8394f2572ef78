"""An ensemble of K fitted response models, stepped as ONE batched forward.

``EnsembleResponseModel`` holds K members of the same architecture and data spec (fitted by
``fit.fit_response_model`` with ``ensemble_size = K``: member k on a bootstrap resample of the
training users, seed ``seed + k``). It implements the ``envs.world.StepResponseModel``
protocol, so ``LearnedWorld`` runs it unchanged: ``u`` and the history state hold the K
members along dim 1, ``(N, K, ...)``, so the world's row operations (reset slots, prefetch,
active-row select) act on users exactly as for one model.

What ``step_logits`` returns: per head, the MEAN of the members' probabilities, as a logit,
``logit(mean_k p_k)`` (computed stably as ``logsumexp_k log p_k - logsumexp_k log(1 - p_k)``).
A simulated user thus responds like the mixture of the members, head by head (for the
conversion head this is the mean of p_k(convert | click), not the mixture's
``E[p_click p_convert] / E[p_click]``; the two differ only where the members disagree on
clicks). ``member_probs`` gives every member's (K, N, 3) probabilities, for disagreement
(e.g. the std over members of the expected reward) or to let each user follow one member.

How the K members are batched. Two implementations, selected by ``batched``:

- ``"fused"`` (GRU members; the default for them): hand-written grouped matmuls
  (``torch.baddbmm`` on weights stacked to (K, in, out)) with the step algebra folded into
  lookup tables, all exact rewrites of the member's step: the profile part of the first
  state layer, ``W u + b``, is computed once per user at ``initial_state`` (u never changes
  within an episode); the GRU input projection of an event ``W_ih (e_action + e_outcome) + b``
  is a (K, 3A, 3H) table looked up by (action, outcome); the heads are evaluated for all
  actions by one grouped matmul and the shown action picked. Per user and member a step
  costs the H x H, H x H and H x 3H matmuls and the 3A-wide heads, instead of the member's
  2H x H + H x H, E x 3H + H x 3H and 3A-wide heads.
- ``"vmap"`` (any encoder): ``torch.func.stack_module_state`` + ``torch.func.vmap`` over
  ``functional_call`` of the member's own ``initial_state`` / ``step_logits`` / ``advance``.

Measured (benchmarks/throughput.py's setup: default architecture, 24 offers, N = 4,096
users, one torch thread, a 2-core machine loaded by other jobs, so +-15 % noise): one
LearnedWorld env step, interleaved A/B, medians of 4 x 12 steps: K = 5 fused 73 ms, K = 5
vmap 83 ms (single model: 22-27 ms). Fused is kept for GRU members: vmap can only batch the
member's step as written (K times its full FLOPs; ``aten::gru_cell`` has no batching rule
and falls back to a slow loop), while the fused step does less work per member. (A single
throughput run on the loaded machine once showed the reverse, 93 vs 85 ms: the gap is of
the order of the noise.) Other encoders use vmap. Both give the members' numbers to float
rounding (tests/test_ensemble.py). The K = 5 step still costs ~3.5x a single model's, not
the <= 2x the issue targets: at N = 4,096 the step is FLOP-bound and K members need ~3.9x
the single model's multiply-adds even after the rewrites above.

The stacked weights are a cache derived from the members' parameters and buffers, rebuilt
whenever any of them changed (their version counters), so training, ``load_state_dict`` or
recalibrating a member never leaves a stale copy. The ``state_dict`` is the members'
(``members.<k>.<name>``); ``network.save_response_model`` / ``load_response_model`` write
and read it with the config (``ensemble_size = K``) like a single model's.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from torch.nn import functional as F
from torch.utils._pytree import tree_flatten, tree_unflatten

from recsys.simulator.response_model.config import HEADS, DataSpec, ResponseModelConfig

BATCHED = ("auto", "fused", "vmap")


class _Method(nn.Module):
    """``forward`` = one method of the wrapped model (what ``functional_call`` can call)."""

    def __init__(self, model: nn.Module, method: str) -> None:
        super().__init__()
        self.model, self.method = model, method

    def forward(self, *args: Any) -> Any:
        return getattr(self.model, self.method)(*args)


def mean_prob_logits(member_logits: torch.Tensor) -> torch.Tensor:
    """``logit(mean_k sigmoid(x_k))`` over dim 0, without forming probabilities near 0 or 1."""
    return torch.logsumexp(F.logsigmoid(member_logits), 0) - torch.logsumexp(F.logsigmoid(-member_logits), 0)


class EnsembleResponseModel(nn.Module):
    """K response models of one architecture and data spec behind the ``StepResponseModel``
    protocol (see the module docstring); ``spec`` is the members' ``DataSpec`` and ``config``
    the members' config with ``ensemble_size = K`` and the first member's seed."""

    def __init__(self, members: Sequence[nn.Module], batched: str = "auto") -> None:
        super().__init__()
        members = list(members)
        if len(members) < 2:
            raise ValueError(f"response_model.ensemble_size: an ensemble needs >= 2 members, got {len(members)}")
        first = members[0]
        for k, m in enumerate(members):
            if type(m) is not type(first) or m.spec != first.spec:
                raise ValueError(f"ensemble member {k}: must have the class and data spec of member 0")
            if replace(m.config, seed=0) != replace(first.config, seed=0):
                raise ValueError(f"ensemble member {k}: config differs from member 0's beyond the seed")
        if batched not in BATCHED:
            raise ValueError(f"batched: expected one of {BATCHED}, got {batched!r}")
        gru = first.config.history_encoder == "gru"
        if batched == "fused" and not gru:
            raise ValueError(f"batched='fused' needs GRU members, got {first.config.history_encoder!r}; use 'vmap'")
        self.members = nn.ModuleList(members)
        self.spec: DataSpec = first.spec
        self.config: ResponseModelConfig = replace(first.config, ensemble_size=len(members))
        self.batched = "fused" if batched == "auto" and gru else ("vmap" if batched == "auto" else batched)
        self._cache_key: tuple | None = None
        self._cache: dict[str, Any] = {}
        self._tensors: dict[str, list[torch.Tensor]] = {}
        self._vmap_base = {"": copy.deepcopy(first).to("meta")}  # a dict: not a registered submodule

    @property
    def n_members(self) -> int:
        return len(self.members)

    # ------------------------------------------------------------------ whole-sequence forwards
    def forward(self, cat: torch.Tensor, num: torch.Tensor, actions: torch.Tensor, click: torch.Tensor,
                convert: torch.Tensor) -> torch.Tensor:
        """(B, T, 3) mean-probability logits of every logged step (so ``fit.predict`` works)."""
        return mean_prob_logits(torch.stack([m(cat, num, actions, click, convert) for m in self.members]))

    def forward_all(self, cat: torch.Tensor, num: torch.Tensor, actions: torch.Tensor, click: torch.Tensor,
                    convert: torch.Tensor) -> torch.Tensor:
        """(B, T, A, 3) mean-probability logits of every action at every logged step."""
        return mean_prob_logits(torch.stack([m.forward_all(cat, num, actions, click, convert) for m in self.members]))

    # ------------------------------------------------------------------ step by step (batched)
    def initial_state(self, cat: torch.Tensor, num: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """(u, history) of new users, the K members along dim 1."""
        if self.batched == "vmap":
            return self._vmapped("initial_state", (None, None), cat, num)
        w = self._weights()
        with torch.no_grad():
            u = torch.stack([m.profile_vector(cat, num) for m in self.members])  # (K, N, H)
            pu = torch.baddbmm(w["b1"], u, w["w1u"])  # the profile part of the first state layer
            h0 = torch.tanh(torch.baddbmm(w["b_init"], u, w["w_init"]))
        return pu.transpose(0, 1), h0.transpose(0, 1)

    def member_logits(self, u: torch.Tensor, state: Any, actions: torch.Tensor) -> torch.Tensor:
        """(K, N, 3) calibrated logits of every member for ``actions``."""
        if self.batched == "vmap":
            return self._vmapped("step_logits", (1, 1, None), u, state, actions).transpose(0, 1)
        w = self._weights()
        with torch.no_grad():
            z1 = torch.relu(torch.baddbmm(u.transpose(0, 1), state.transpose(0, 1), w["w1h"]))
            z2 = torch.relu(torch.baddbmm(w["b2"], z1, w["w2"]))
            n_heads, n_actions = len(HEADS), self.spec.n_actions
            every = torch.baddbmm(w["b3"], z2, w["w3"]).unflatten(-1, (n_heads, n_actions))
            idx = actions.reshape(1, -1, 1, 1).expand(len(self.members), -1, n_heads, 1)
            return every.gather(-1, idx)[..., 0] * w["calib_scale"] + w["calib_shift"]

    def member_probs(self, u: torch.Tensor, state: Any, actions: torch.Tensor) -> torch.Tensor:
        """(K, N, 3) p(click), p(convert | click), p(churn) of every member for ``actions``."""
        return torch.sigmoid(self.member_logits(u, state, actions))

    def step_logits(self, u: torch.Tensor, state: Any, actions: torch.Tensor) -> torch.Tensor:
        """(N, 3) logits of the members' mean probabilities (``mean_prob_logits``)."""
        return self.mean_logits(self.member_logits(u, state, actions))

    # a pessimistic LearnedWorld takes member_logits once per step and combines them itself
    mean_logits = staticmethod(mean_prob_logits)

    def advance(self, state: Any, actions: torch.Tensor, click: torch.Tensor, convert: torch.Tensor) -> Any:
        """Every member's history state after the users saw ``actions`` with these outcomes."""
        if self.batched == "vmap":
            return self._vmapped("advance", (1, None, None, None), state, actions, click, convert)
        w = self._weights()
        with torch.no_grad():
            h = state.transpose(0, 1)
            event = actions * 3 + (click > 0.5).long() + (convert > 0.5).long()
            gi = w["event_table"].index_select(1, event)  # W_ih (e_action + e_outcome) + b_ih
            gh = torch.baddbmm(w["b_hh"], h, w["w_hh"])
            hidden = h.shape[-1]
            rz = torch.sigmoid(gi[..., :2 * hidden] + gh[..., :2 * hidden])
            r, z = rz[..., :hidden], rz[..., hidden:]
            # tanh x = 2 sigmoid(2x) - 1: this build's CPU tanh is ~4x slower than its sigmoid
            n = torch.sigmoid(torch.addcmul(gi[..., 2 * hidden:], r, gh[..., 2 * hidden:]).mul_(2)).mul_(2).sub_(1)
            return torch.addcmul(n, z, h - n).transpose(0, 1)  # (1 - z) n + z h, as torch.gru_cell

    # ------------------------------------------------------------------ stacked weights
    def _member_versions(self) -> tuple:
        """Version counter of every member tensor (walking the modules costs ~2 ms a step, so
        the flat list is kept; ``_apply``, i.e. ``.to()`` / ``.float()``, drops it)."""
        tensors = self._tensors.get("")
        if tensors is None:
            tensors = self._tensors[""] = [t for m in self.members for t in (*m.parameters(), *m.buffers())]
        return tuple((id(t), t._version) for t in tensors)

    def _weights(self) -> dict[str, Any]:
        """The stacked weights of the active implementation, rebuilt when a member changed."""
        key = (self.batched, self._member_versions())
        if key != self._cache_key:
            with torch.no_grad():
                self._cache = self._stack_vmap() if self.batched == "vmap" else self._stack_fused()
            self._cache_key = key
        return self._cache

    def _stack_vmap(self) -> dict[str, Any]:
        params, buffers = stack_module_state(list(self.members))
        return {"state": {**{k: v.detach() for k, v in params.items()}, **buffers}}

    def _stack_fused(self) -> dict[str, torch.Tensor]:
        def stack(get) -> torch.Tensor:
            return torch.stack([get(m).detach() for m in self.members])

        h = self.config.hidden_dim
        w1 = stack(lambda m: m.state[0].weight)  # (K, H, 2H): [u, history] -> H
        gru = [m.history.gru for m in self.members]
        outcomes = torch.arange(3)

        def events(m: nn.Module, g: nn.GRU) -> torch.Tensor:  # (3A, E): action a, outcome o at 3a + o
            e = m.event_action.weight[:, None, :] + m.event_outcome(outcomes)[None]
            return F.linear(e.flatten(0, 1), g.weight_ih_l0, g.bias_ih_l0).detach()

        return {
            "w1u": w1[..., :h].transpose(1, 2), "w1h": w1[..., h:].transpose(1, 2).contiguous(),
            "b1": stack(lambda m: m.state[0].bias)[:, None],
            "w2": stack(lambda m: m.state[2].weight).transpose(1, 2).contiguous(),
            "b2": stack(lambda m: m.state[2].bias)[:, None],
            "w3": stack(lambda m: m.heads.weight).transpose(1, 2).contiguous(),
            "b3": stack(lambda m: m.heads.bias)[:, None],
            "calib_scale": stack(lambda m: m.calib_scale)[:, None],  # (K, 1, 3)
            "calib_shift": stack(lambda m: m.calib_shift)[:, None],
            "w_init": stack(lambda m: m.history.init.weight).transpose(1, 2),
            "b_init": stack(lambda m: m.history.init.bias)[:, None],
            "w_hh": torch.stack([g.weight_hh_l0.detach() for g in gru]).transpose(1, 2).contiguous(),
            "b_hh": torch.stack([g.bias_hh_l0.detach() for g in gru])[:, None],
            "event_table": torch.stack([events(m, g) for m, g in zip(self.members, gru, strict=True)]),
        }

    def _vmapped(self, method: str, in_dims: tuple, *args: Any) -> Any:
        """``vmap`` over the members of ``member.<method>(*args)``; outputs get K at dim 1.
        Non-tensor leaves (the logistic model's ``None`` state) pass through unbatched."""
        stacked = self._weights()["state"]
        call = _Method(self._vmap_base[""], method)
        dims = tuple(None if a is None else d for a, d in zip(args, in_dims, strict=True))
        layout: dict[str, Any] = {}

        def one(weights: dict[str, torch.Tensor], *a: Any) -> list[torch.Tensor]:
            leaves, layout["tree"] = tree_flatten(functional_call(call, {f"model.{k}": v for k, v in weights.items()}, a))
            layout["leaves"] = leaves  # tensors replaced below; other leaves kept as they are
            return [x for x in leaves if isinstance(x, torch.Tensor)]

        with torch.no_grad():  # out_dims=0 then movedim: vmap cannot expand unbatched outputs to dim 1
            out = iter([t.movedim(0, 1) for t in vmap(one, in_dims=(0, *dims))(stacked, *args)])
        leaves = [next(out) if isinstance(x, torch.Tensor) else x for x in layout["leaves"]]
        return tree_unflatten(leaves, layout["tree"])

    def _apply(self, fn: Any, recurse: bool = True) -> EnsembleResponseModel:
        self._tensors.clear()
        self._cache_key = None
        return super()._apply(fn, recurse)

    def train(self, mode: bool = True) -> EnsembleResponseModel:
        super().train(mode)
        self._vmap_base[""].train(mode)
        return self
