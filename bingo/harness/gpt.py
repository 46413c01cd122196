"""``char-gpt``: a nanoGPT-style character decoder (Radford et al. 2019's block as Karpathy's
nanoGPT writes it): token and learned position embeddings, pre-LayerNorm blocks of causal
self-attention with separate q, k, v and output projections and a GELU MLP of 4x width,
a final LayerNorm and an untied head. The defaults are nanoGPT's CPU configuration for
``shakespeare_char``: 4 layers, 4 heads, width 128, context 64. Every projection is an
``nn.Linear`` called as a module, so searches and ``torch.nn.utils.prune`` see them all."""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


class CausalSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int, context: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not a multiple of heads {heads}")
        self.heads = heads
        self.q, self.k, self.v = (nn.Linear(width, width) for _ in range(3))
        self.proj = nn.Linear(width, width)
        self.register_buffer("causal", torch.ones(context, context).tril().bool(),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        h = self.heads

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, h, c // h).transpose(1, 2)  # [b, h, t, c/h]

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(c // h)
        att = att.masked_fill(~self.causal[:t, :t], float("-inf")).softmax(-1)
        return self.proj((att @ v).transpose(1, 2).reshape(b, t, c))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, context: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads, context)
        self.fc, self.out = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class Embed(nn.Module):
    """Token plus learned position embeddings of [batch, time] character ids."""

    def __init__(self, vocab: int, width: int, context: int):
        super().__init__()
        self.context = context
        self.tokens, self.positions = nn.Embedding(vocab, width), nn.Embedding(context, width)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        if t > self.context:
            raise ValueError(f"a sequence of {t} characters is longer than the context "
                             f"{self.context}: cut it, or build CharGPT(context={t})")
        return self.tokens(ids) + self.positions(torch.arange(t, device=ids.device))


class CharGPT(nn.Sequential):
    """Maps [batch, time] character ids (time <= context) to next-character logits. A chain
    (``embed``, ``blocks``, ``ln``, ``head``), so a measurement that changes only later
    blocks can resume from a kept activation (``evidence.meter.Prefixes``)."""

    def __init__(self, vocab: int = 65, layers: int = 4, heads: int = 4, width: int = 128,
                 context: int = 64):
        super().__init__(OrderedDict(
            embed=Embed(vocab, width, context),
            blocks=nn.Sequential(*(Block(width, heads, context) for _ in range(layers))),
            ln=nn.LayerNorm(width), head=nn.Linear(width, vocab, bias=False)))
        self.context = context
        self.apply(_init)
        for name, p in self.named_parameters():  # GPT-2's scaled residual projections
            if name.endswith(("attn.proj.weight", "out.weight")):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * layers))


def _init(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def sequence_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-character cross-entropy over every position."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())
