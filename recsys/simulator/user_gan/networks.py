"""The generator (one head per encoded span, one-hots sampled before the next head runs), the
PacGAN critic, the straight-through Gumbel-softmax pick used in training and the gradient
penalty of WGAN-GP."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from recsys.simulator.user_gan.encoding import ONEHOT_KINDS


class Generator(nn.Module):
    """latent -> encoded row, one span at a time.

    A trunk (MLP; each layer's output is concatenated to its input, as CTGAN's residual blocks)
    maps the latent z to h. Span i's head then reads [h, outputs of spans 0..i-1]: one-hot
    spans are sampled (hard) before the next head runs, so later features are conditioned on
    the codes actually drawn for earlier ones (region -> activity mode -> activity offset),
    instead of being drawn independently given z. ``pick(i, raw)`` turns head i's raw output
    into the span's value (a Gumbel sample for one-hots, tanh for offsets)."""

    def __init__(self, latent_dim: int, hidden: tuple[int, ...], spans: list[tuple[str, int]], head_hidden: int) -> None:
        super().__init__()
        self.latent_dim, self.span_kinds = latent_dim, [kind for kind, _ in spans]
        layers, width = [], latent_dim
        for h in hidden:
            layers.append(nn.Linear(width, h))
            width += h
        self.trunk = nn.ModuleList(layers)
        heads, prev = [], 0
        for _, size in spans:
            if head_hidden:
                heads.append(nn.Sequential(nn.Linear(width + prev, head_hidden), nn.ReLU(), nn.Linear(head_hidden, size)))
            else:
                heads.append(nn.Linear(width + prev, size))
            prev += size
        self.heads = nn.ModuleList(heads)

    def forward(self, z: torch.Tensor, pick: Callable[[int, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        h = z
        for layer in self.trunk:
            h = torch.cat([F.relu(layer(h)), h], dim=1)
        outs: list[torch.Tensor] = []
        for i, head in enumerate(self.heads):
            outs.append(pick(i, head(torch.cat([h, *outs], dim=1))))
        return torch.cat(outs, dim=1)


class Critic(nn.Module):
    """Packs of ``pac`` encoded rows -> one score per pack."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...], pac: int, dropout: float) -> None:
        super().__init__()
        self.pac = pac
        layers: list[nn.Module] = []
        width = in_dim * pac
        for h in hidden:
            layers += [nn.Linear(width, h), nn.LeakyReLU(0.2), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(-1, x.shape[1] * self.pac))


def training_pick(kinds: list[str], tau: float) -> Callable[[int, torch.Tensor], torch.Tensor]:
    """Straight-through Gumbel-softmax: exact one-hots forward (what sampling produces), the
    relaxed sample's gradient backward."""

    def pick(i: int, raw: torch.Tensor) -> torch.Tensor:
        if kinds[i] in ONEHOT_KINDS:
            return F.gumbel_softmax(raw, tau=tau, hard=True)
        return torch.tanh(raw) if kinds[i] == "offset" else raw

    return pick


def gradient_penalty(critic: Critic, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    n_packs = real.shape[0] // critic.pac
    eps = torch.rand(n_packs, 1, 1).expand(n_packs, critic.pac, 1).reshape(-1, 1)
    mix = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mix).sum(), mix, create_graph=True)
    return ((grad.reshape(n_packs, -1).norm(dim=1) - 1.0) ** 2).mean()


def copy_generator(g: Generator, dtype: torch.dtype = torch.float32) -> Generator:
    """A detached copy (deepcopy: building a new module would draw from the torch RNG)."""
    return copy.deepcopy(g).to(dtype)


def head_spec(g: Generator) -> list[tuple[str, int]]:
    return [(kind, (head if isinstance(head, nn.Linear) else head[-1]).out_features)
            for kind, head in zip(g.span_kinds, g.heads, strict=True)]


def head_width(g: Generator) -> int:
    return 0 if not len(g.heads) or isinstance(g.heads[0], nn.Linear) else g.heads[0][0].out_features

