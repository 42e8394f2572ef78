"""An ensemble of K fitted response models, stepped as ONE batched forward.

``EnsembleResponseModel`` holds K members of the same architecture and data spec (fitted by
``fit.fit_response_model`` with ``ensemble_size = K``: member k on a bootstrap resample of the
training users, seed ``seed + k``). It implements the ``envs.world.StepResponseModel``
protocol, so ``LearnedWorld`` runs it unchanged: ``u`` and the history state hold the K
members along dim 1, ``(N, K, ...)``, so the world's row operations (reset slots, prefetch,
active-row select) act on users exactly as for one model.

What ``step_logits`` returns: per head, the MEAN of the members' probabilities, as a logit,
``logit(mean_k p_k)`` (computed stably as ``logsumexp_k log p_k - logsumexp_k log(1 - p_k)``),
then the ensemble's own Platt recalibration (``calib_scale`` / ``calib_shift``, fitted on the
validation users by ``fit.assemble_response_model``: the average of calibrated members is not
calibrated; identity for ensembles saved before it).
A simulated user thus responds like the mixture of the members, head by head (for the
conversion head this is the mean of p_k(convert | click), not the mixture's
``E[p_click p_convert] / E[p_click]``; the two differ only where the members disagree on
clicks). ``member_probs`` gives every member's (K, N, 3) probabilities, for disagreement
(e.g. the std over members of the expected reward) or to let each user follow one member.

How the K members are batched. Two implementations, selected by ``batched``:

- ``"fused"`` (GRU members; the default for them): hand-written grouped matmuls
  (``torch.bmm`` on weights stacked to (K, in, out)) with the step algebra folded into
  lookup tables, all exact rewrites of the member's step: a new user's profile is embedded
  by all members in one table lookup, and the last profile layer is folded into the two
  layers that read u (the profile part of the first state layer, ``W u + b``, and the GRU's
  initial state), computed once at ``initial_state`` (u never changes within an episode);
  the GRU input projection of an event ``W_ih (e_action + e_outcome) + b_ih`` (+ the r, z
  part of ``b_hh``) is a (K, 3A, 3H) table looked up by (action, outcome); the heads score
  only the shown action (its three head rows gathered per user; scoring all A actions and
  picking one measured 1.7x slower at A = 25, N = 4,096); the GRU's tanh is
  ``2 sigmoid(2x) - 1`` (torch's CPU tanh measured ~5x its sigmoid; 1.8e-7 from tanh). The
  elementwise passes run in place, on chunks of users small enough to stay in cache
  (``_CACHE_FLOATS``): at N = 4,096 a chunked GRU update costs a third of a whole-batch one.
- ``"vmap"`` (any encoder): ``torch.func.stack_module_state`` + ``torch.func.vmap`` over
  ``functional_call`` of the member's own ``initial_state`` / ``step_logits`` / ``advance``.

Measured (``python -m benchmarks.throughput``, N = 4,096, one torch thread, 2-core machine):
one LearnedWorld env step with K = 5 fused 52 ms, vmap 67 ms, single model 18 ms
(``ensemble_vs_single_cost_ratio`` 2.9; it was 3.5 before the chunked, in-place step and
the folded profile). What is left is FLOPs: K members need ~K times the single model's
multiply-adds, and the grouped matmuls already run near one core's peak, so the issue's
<= 2x needs fewer FLOPs per member (a shared trunk), not a faster kernel. Both paths give
the members' numbers to float rounding (tests/test_ensemble.py).

The stacked weights are a cache derived from the members' parameters and buffers, rebuilt
whenever any of them changed (their version counters), so training, ``load_state_dict`` or
recalibrating a member never leaves a stale copy. The ``state_dict`` is the members'
(``members.<k>.<name>``); ``network.save_response_model`` / ``load_response_model`` write
and read it with the config (``ensemble_size = K``) like a single model's.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from torch.nn import functional as F
from torch.utils._pytree import tree_flatten, tree_unflatten

from recsys.simulator.response_model import exposure
from recsys.simulator.response_model.config import HEADS, DataSpec, ResponseModelConfig

BATCHED = ("auto", "fused", "vmap")
_VERSION = operator.attrgetter("_version")
_CACHE_FLOATS = 2**18  # 1 MiB of float32: the fused step's working set per chunk of users (< L2)


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
        # Platt recalibration of the members' mean, per head (identity until fit.assemble_response_model
        # fits it on validation users): averaging calibrated members blurs their probabilities
        self.register_buffer("calib_scale", torch.ones(len(HEADS)))
        self.register_buffer("calib_shift", torch.zeros(len(HEADS)))

    @property
    def n_members(self) -> int:
        return len(self.members)

    # ------------------------------------------------------------------ whole-sequence forwards
    def forward(self, cat: torch.Tensor, num: torch.Tensor, actions: torch.Tensor, click: torch.Tensor,
                convert: torch.Tensor) -> torch.Tensor:
        """(B, T, 3) mean-probability logits of every logged step (so ``fit.predict`` works)."""
        return self.mean_logits(torch.stack([m(cat, num, actions, click, convert) for m in self.members]))

    def forward_all(self, cat: torch.Tensor, num: torch.Tensor, actions: torch.Tensor, click: torch.Tensor,
                    convert: torch.Tensor) -> torch.Tensor:
        """(B, T, A, 3) mean-probability logits of every action at every logged step."""
        return self.mean_logits(torch.stack([m.forward_all(cat, num, actions, click, convert) for m in self.members]))

    # ------------------------------------------------------------------ step by step (batched)
    @property
    def _exposure(self) -> bool:
        return self.config.exposure_features

    def _state_dims(self) -> Any:
        """vmap's in_dims of a state: members along dim 1; exposure counts are the members' shared data."""
        return {"history": 1, "exposure": None} if self._exposure else 1

    def _split(self, state: Any) -> tuple[Any, torch.Tensor | None]:
        return (state["history"], state["exposure"]) if self._exposure else (state, None)

    def _join(self, history: Any, counts: torch.Tensor | None) -> Any:
        return {"history": history, "exposure": counts} if self._exposure else history

    def initial_state(self, cat: torch.Tensor, num: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """(u, history) of new users, the K members along dim 1 (with ``exposure_features`` the
        history is ``{"history": that, "exposure": counts}``, the counts shared by the members)."""
        if self.batched == "vmap":
            u, state = self._vmapped("initial_state", (None, None), cat, num)
            history, counts = self._split(state)
            return u, self._join(history, None if counts is None else counts[:, 0])  # vmap copied it per member
        u, history = self._fused_initial_state(cat, num)
        first = self.members[0]
        return u, self._join(history, exposure.initial(len(cat), first.exposure_decays, first.exposure_width)
                             if self._exposure else None)

    def _fused_initial_state(self, cat: torch.Tensor, num: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = self._weights()
        with torch.no_grad():
            parts = [w["cat_table"].index_select(1, (cat + w["cat_offsets"]).flatten()).unflatten(1, cat.shape)
                     .flatten(2)] if cat.shape[1] else []  # every feature's embedding, all members at once
            if "num_w" in w:
                x = ((num - self.members[0].num_loc) / self.members[0].num_scale).expand(len(self.members), -1, -1)
                parts.append(torch.bmm(x, w["num_w"]).add_(w["num_b"]))
            z = torch.bmm(torch.cat(parts, dim=-1), w["p1_w"]).add_(w["p1_b"]).relu_()
            # u = z W_p2 + b_p2 only ever feeds the first state layer and the GRU's initial state,
            # so W_p2 is folded into both (one matmul for the two)
            out = torch.bmm(z, w["u_w"]).add_(w["u_b"])
            hidden = out.shape[-1] // 2
            pu, h0 = out[..., :hidden], out[..., hidden:].tanh_()
        return pu.transpose(0, 1), h0.transpose(0, 1)

    def member_logits(self, u: torch.Tensor, state: Any, actions: torch.Tensor) -> torch.Tensor:
        """(K, N, 3) calibrated logits of every member for ``actions``."""
        if self.batched == "vmap":
            return self._vmapped("step_logits", (1, self._state_dims(), None), u, state, actions).transpose(0, 1)
        w = self._weights()
        n_heads, n_actions = len(HEADS), self.spec.n_actions
        history, counts = self._split(state)
        pu, h = u.transpose(0, 1), history.transpose(0, 1)
        if counts is not None:
            counts = exposure.features_shown(counts, self.members[0].exposure_columns, actions)  # (N, 2D)
        out = torch.empty(len(self.members), h.shape[1], n_heads)
        with torch.no_grad():
            head_rows = torch.arange(n_heads) * n_actions  # row of (head j, action 0) in w3_rows
            for rows in self._chunks(h.shape[1], n_heads * h.shape[-1]):
                z1 = torch.baddbmm(pu[:, rows], h[:, rows], w["w1h"]).relu_()
                z2 = torch.bmm(z1, w["w2"]).add_(w["b2"]).relu_()
                a = actions[rows]
                # only the shown action's head rows, gathered per user (K, rows, 3, H): a third of
                # the multiply-adds of scoring every action and picking one
                shown_w = w["w3_rows"].index_select(1, (a[:, None] + head_rows).flatten()).unflatten(1, (-1, n_heads))
                shown = shown_w.mul_(z2[:, :, None]).sum(-1)
                shown += w["b3_rows"][:, :, a].transpose(1, 2)  # the bias of the shown action only
                if counts is not None:
                    shown += torch.matmul(counts[rows], w["exposure_w"])  # (rows, 2D) @ (K, 2D, 3)
                torch.addcmul(w["calib_shift"], shown, w["calib_scale"], out=out[:, rows])
        return out

    def member_probs(self, u: torch.Tensor, state: Any, actions: torch.Tensor) -> torch.Tensor:
        """(K, N, 3) p(click), p(convert | click), p(churn) of every member for ``actions``."""
        return torch.sigmoid(self.member_logits(u, state, actions))

    def step_logits(self, u: torch.Tensor, state: Any, actions: torch.Tensor) -> torch.Tensor:
        """(N, 3) recalibrated logits of the members' mean probabilities (``mean_logits``)."""
        return self.mean_logits(self.member_logits(u, state, actions))

    def mean_logits(self, member_logits: torch.Tensor) -> torch.Tensor:
        """(..., 3) logits of the ensemble from its members' (K, ..., 3): the mean probability
        (``mean_prob_logits``), recalibrated per head. A pessimistic LearnedWorld takes
        ``member_logits`` once per step and combines them with this itself."""
        return mean_prob_logits(member_logits) * self.calib_scale + self.calib_shift

    def advance(self, state: Any, actions: torch.Tensor, click: torch.Tensor, convert: torch.Tensor) -> Any:
        """Every member's history state after the users saw ``actions`` with these outcomes."""
        history, counts = self._split(state)
        if counts is not None:
            first = self.members[0]
            counts = exposure.update(counts, actions, first.exposure_decays, first.exposure_columns)
        if self.batched == "vmap":
            new = self._vmapped("advance", (self._state_dims(), None, None, None), state, actions, click, convert)
            return self._join(self._split(new)[0], counts)
        return self._join(self._fused_advance(history, actions, click, convert), counts)

    def _fused_advance(self, history: torch.Tensor, actions: torch.Tensor, click: torch.Tensor,
                       convert: torch.Tensor) -> torch.Tensor:
        w = self._weights()
        h = history.transpose(0, 1)
        hidden = h.shape[-1]
        event = actions * 3 + (click > 0.5).long() + (convert > 0.5).long()
        out = torch.empty_like(h)
        with torch.no_grad():
            for rows in self._chunks(h.shape[1], 3 * hidden):
                h_rows = h[:, rows]
                gi = w["event_table"].index_select(1, event[rows])  # W_ih (e_action + e_outcome) + b_ih (+ b_hh of r, z)
                gh = torch.bmm(h_rows, w["w_hh"])
                rz = gi[..., :2 * hidden].add_(gh[..., :2 * hidden]).sigmoid_()
                n = gi[..., 2 * hidden:].addcmul_(rz[..., :hidden], gh[..., 2 * hidden:].add_(w["b_hn"]))
                n.mul_(2).sigmoid_().mul_(2).sub_(1)  # tanh = 2 sigmoid(2x) - 1: torch's CPU tanh costs ~5x sigmoid
                torch.lerp(n, h_rows, rz[..., hidden:], out=out[:, rows])  # (1 - z) n + z h, as torch.gru_cell
        return out.transpose(0, 1)

    def _chunks(self, n_users: int, width: int) -> list[slice]:
        """Row ranges of users whose widest (K, rows, width) float32 temporary fits in about
        ``_CACHE_FLOATS`` (the step's elementwise passes then stay in cache)."""
        size = max(1, _CACHE_FLOATS // (len(self.members) * width))
        return [slice(lo, min(lo + size, n_users)) for lo in range(0, n_users, size)]

    # ------------------------------------------------------------------ stacked weights
    def _member_versions(self) -> int:
        """Sum of the member tensors' version counters: they only grow, so the sum changes
        whenever any tensor changed in place (walking the modules costs ~2 ms a step, so the
        flat list is kept; ``_apply``, i.e. ``.to()`` / ``.float()``, drops it)."""
        tensors = self._tensors.get("")
        if tensors is None:
            tensors = self._tensors[""] = [t for m in self.members for t in (*m.parameters(), *m.buffers())]
        return sum(map(_VERSION, tensors))

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

        def events(m: nn.Module, g: nn.GRU) -> torch.Tensor:  # (3A, 3H): action a, outcome o at row 3a + o
            e = m.event_action_weight()[:, None, :] + m.event_outcome(outcomes)[None]
            gi = F.linear(e.flatten(0, 1), g.weight_ih_l0, g.bias_ih_l0)
            gi[:, :2 * h] += g.bias_hh_l0[:2 * h]  # the r, z gates add b_hh as they add b_ih
            return gi.detach()

        # the profile: embeddings of all features in one table (row offsets per feature), the
        # numeric projection, the profile MLP; its last layer folded into the two layers reading u
        first = self.members[0]
        sizes = [e.num_embeddings for e in first.cat_embed]
        to_u = torch.cat([w1[..., :h], stack(lambda m: m.history.init.weight)], dim=1)  # (K, 2H, H)
        w_p2, b_p2 = stack(lambda m: m.profile[2].weight), stack(lambda m: m.profile[2].bias)  # (K, H, H), (K, H)
        u_b = torch.cat([stack(lambda m: m.state[0].bias), stack(lambda m: m.history.init.bias)], dim=1)
        profile = {
            "cat_table": torch.stack([torch.cat([e.weight for e in m.cat_embed]) for m in self.members]).detach()
            if sizes else torch.zeros(0),
            "cat_offsets": torch.tensor([sum(sizes[:j]) for j in range(len(sizes))], dtype=torch.long),
            "p1_w": stack(lambda m: m.profile[0].weight).transpose(1, 2).contiguous(),
            "p1_b": stack(lambda m: m.profile[0].bias)[:, None],
            "u_w": torch.bmm(to_u, w_p2).transpose(1, 2).contiguous(),  # (K, H, 2H): W_p2 then [W_1u; W_init]
            "u_b": (torch.bmm(to_u, b_p2[..., None])[..., 0] + u_b)[:, None],
        }
        if first.num_proj is not None:
            profile["num_w"] = stack(lambda m: m.num_proj.weight).transpose(1, 2).contiguous()
            profile["num_b"] = stack(lambda m: m.num_proj.bias)[:, None]
        return {
            **profile,
            "w1h": w1[..., h:].transpose(1, 2).contiguous(),
            "w2": stack(lambda m: m.state[2].weight).transpose(1, 2).contiguous(),
            "b2": stack(lambda m: m.state[2].bias)[:, None],
            "w3_rows": stack(lambda m: m.head_parameters()[0]),  # (K, 3A, H): row (head j, action a) at j A + a
            "b3_rows": stack(lambda m: m.head_parameters()[1]).unflatten(-1, (len(HEADS), self.spec.n_actions)),  # (K, 3, A)
            "calib_scale": stack(lambda m: m.calib_scale)[:, None],  # (K, 1, 3)
            "calib_shift": stack(lambda m: m.calib_shift)[:, None],
            "w_hh": torch.stack([g.weight_hh_l0.detach() for g in gru]).transpose(1, 2).contiguous(),
            "b_hn": torch.stack([g.bias_hh_l0[2 * h:].detach() for g in gru])[:, None],  # scaled by r: kept apart
            "event_table": torch.stack([events(m, g) for m, g in zip(self.members, gru, strict=True)]),
            **({"exposure_w": stack(lambda m: m.exposure_weight).transpose(1, 2).contiguous()}  # (K, 2D, 3)
               if self._exposure else {}),
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
