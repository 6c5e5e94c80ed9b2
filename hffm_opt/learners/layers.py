"""The building blocks of the M3T model (:mod:`.model`), one ``nn.Module`` each: the image and vector encoders,
masked multi-head attention, the pre-LN transformer layer and the backbone, the bottleneck adapter, the
top-k mixture of experts with its load-balancing loss, and the task head. Units: none (a neural network).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .specs import ModalitySpec

_MASKED = -1e9  # score of a masked attention entry: exp underflows to exactly 0 in float32


def _groups(channels: int) -> int:
    return max(g for g in (1, 2, 4, 8) if channels % g == 0)


class ImageEncoder(nn.Module):
    """4 strided 3x3 convolutions (each halving the resolution, group norm, GELU) + max pool to a grid of tokens."""

    def __init__(self, spec: ModalitySpec, d_model: int, channels: Sequence[int]):
        super().__init__()
        c_in = spec.shape[0]
        convs, norms = [], []
        for c_out in channels:
            convs.append(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1))
            norms.append(nn.GroupNorm(_groups(c_out), c_out))
            c_in = c_out
        self.convs = nn.ModuleList(convs)
        self.norms = nn.ModuleList(norms)
        self.grid = math.isqrt(spec.n_tokens)
        self.proj = nn.Linear(c_in, d_model)
        self.pos = nn.Parameter(torch.randn(spec.n_tokens, d_model) * 0.02)
        self.type_emb = nn.Parameter(torch.randn(d_model) * 0.02)

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        x = (x - 0.5) / 0.25
        for conv, norm in zip(self.convs, self.norms):
            x = F.gelu(norm(conv(x)))
        x = F.adaptive_max_pool2d(x, self.grid)  # (B, C, g, g): max pool, shapes sit anywhere in the image
        x = x.flatten(2).transpose(1, 2)  # (B, g*g, C)
        return self.proj(x) + self.pos + self.type_emb


class VectorEncoder(nn.Module):
    """Layer norm + 2-layer MLP from a feature vector to ``n_tokens`` tokens."""

    def __init__(self, spec: ModalitySpec, d_model: int):
        super().__init__()
        self.n_tokens, self.d_model = spec.n_tokens, d_model
        self.norm = nn.LayerNorm(spec.shape[0])  # inputs of any scale (unit-norm sentence embeddings, pixels)
        if spec.hidden:
            self.fc1 = nn.Linear(spec.shape[0], spec.hidden)
            self.fc2 = nn.Linear(spec.hidden, spec.n_tokens * d_model)
        else:
            self.fc1 = None
            self.fc2 = nn.Linear(spec.shape[0], spec.n_tokens * d_model)
        self.pos = nn.Parameter(torch.randn(spec.n_tokens, d_model) * 0.02)
        self.type_emb = nn.Parameter(torch.randn(d_model) * 0.02)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x.float())
        h = self.fc2(h if self.fc1 is None else F.gelu(self.fc1(h)))
        return h.reshape(*h.shape[:-1], self.n_tokens, self.d_model) + self.pos + self.type_emb


class Attention(nn.Module):
    """Multi-head self-attention with an explicit boolean mask (True = may attend)."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:
        b, n, d = x.shape
        h = self.n_heads
        q, k, v = self.qkv(x).reshape(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)  # each (B, h, L, dh)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // h)
        scores = scores.masked_fill(~allowed[:, None], _MASKED)
        att = scores.softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, n, d)
        return self.out(y)


class Block(nn.Module):
    """Pre-LN transformer layer."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = Attention(d_model, n_heads)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff1 = nn.Linear(d_model, d_ff)
        self.ff2 = nn.Linear(d_ff, d_model)

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x), allowed)
        return x + self.ff2(F.gelu(self.ff1(self.norm2(x))))


class Backbone(nn.Module):
    """The frozen core: ``n_layers`` transformer layers of width ``d_model`` and a final layer norm."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, n_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(Block(d_model, n_heads, d_ff) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)


class Adapter(nn.Module):
    """Bottleneck adapter; the up-projection starts at zero, so a fresh adapter is the identity."""

    def __init__(self, d_model: int, dim: int):
        super().__init__()
        self.down = nn.Linear(d_model, dim)
        self.up = nn.Linear(dim, d_model)
        self.reset()

    def reset(self):
        self.down.reset_parameters()
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.up(F.gelu(self.down(x)))


class Expert(nn.Module):
    """One expert: a 2-layer MLP (d -> d_hidden -> d)."""

    def __init__(self, d_model: int, d_hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_hidden)
        self.fc2 = nn.Linear(d_hidden, d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class MoE(nn.Module):
    """Top-k mixture of experts. Computed densely (every expert on every token, weights zero outside the
    top k), which on a CPU with 4 experts is faster than dispatching and keeps shapes static under ``vmap``;
    the catalogue prices it as the sparse layer it is (k of E experts per token)."""

    def __init__(self, d_model: int, n_experts: int, d_hidden: int, top_k: int):
        super().__init__()
        self.top_k = top_k
        self.gate = nn.Linear(d_model, n_experts)
        self.experts = nn.ModuleList(Expert(d_model, d_hidden) for _ in range(n_experts))

    def forward(self, x: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` (B, L, d), ``valid`` (B, L) bool tokens that count for the balance loss -> (y, aux)."""
        probs = self.gate(x).softmax(dim=-1)  # (B, L, E)
        n_exp = probs.shape[-1]
        top_p, top_i = probs.topk(self.top_k, dim=-1)
        weights = torch.zeros_like(probs).scatter(-1, top_i, top_p)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        outs = torch.stack([e(x) for e in self.experts], dim=-1)  # (B, L, d, E)
        y = (outs * weights.unsqueeze(-2)).sum(dim=-1)
        # Switch-transformer balance loss over the valid tokens: E * sum_j f_j * P_j
        w = valid.to(probs.dtype).unsqueeze(-1)
        n_tok = w.sum().clamp(min=1.0)
        routed = torch.zeros_like(probs).scatter(-1, top_i, torch.ones_like(top_p)).detach()
        frac = (routed * w).sum(dim=(0, 1)) / (n_tok * self.top_k)
        mean_p = (probs * w).sum(dim=(0, 1)) / n_tok
        aux = n_exp * (frac * mean_p).sum()
        return y, aux


class Head(nn.Module):
    """A task head: layer norm + linear classifier."""

    def __init__(self, d_model: int, n_classes: int):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.norm(x))

