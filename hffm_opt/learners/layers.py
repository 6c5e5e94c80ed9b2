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

from .grouped import grouped_available, grouped_mlp
from .specs import ModalitySpec

_MASKED = -1e9  # score of a masked attention entry: exp underflows to exactly 0 in float32
EXPERT_BIAS_COLUMNS = 4  # a grouped expert product's bias column and its zero padding (16-byte rows for the kernel)
SOFTMAX_WIDTH = 16  # torch's CPU softmax over a narrower last dimension falls off its vectorised path


def softmax_last(x: Tensor) -> Tensor:
    """Softmax over the last dimension. On a CPU a dimension narrower than :data:`SOFTMAX_WIDTH` is padded with
    ``-inf`` entries (probability exactly 0, also in a row whose every entry is masked) and cut back after, so torch's
    vectorised kernel runs: the same values to float rounding, about 7x faster forward and backward on an AVX-512 CPU
    (attention over 14 keys, a gate over 4 experts; ``experiments/learner_speed/micro.py``)."""
    width = x.shape[-1]
    if width >= SOFTMAX_WIDTH or x.device.type != "cpu":
        return x.softmax(dim=-1)
    return F.pad(x, (0, SOFTMAX_WIDTH - width), value=float("-inf")).softmax(dim=-1)[..., :width]


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
    """Multi-head attention with an explicit boolean mask (True = may attend): the tokens ``x`` attend to
    themselves and, when given, to context tokens after them, given by their keys and values
    (:meth:`project_context`: the context's queries and outputs are not computed)."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def project_context(self, context: Tensor) -> Tensor:
        """Keys and values (B, m, 2 d) of the context tokens (B, m, d), keys first."""
        d = context.shape[-1]
        return F.linear(context, self.qkv.weight[d:], self.qkv.bias[d:])

    def forward(self, x: Tensor, allowed: Tensor, context_kv: Tensor | None = None) -> Tensor:
        """``x`` (B, n, d), ``context_kv`` (B, m, 2 d) or None, ``allowed`` (B, n, n + m) -> (B, n, d). With a
        context, ``x`` may be (1, n, d): tokens shared by the batch (e.g. prompts before the first layer), projected
        once."""
        b, n, d = x.shape
        h = self.n_heads
        q, k, v = self.qkv(x).reshape(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)  # each (B, h, L, dh)
        if context_kv is not None:
            b, m = context_kv.shape[:2]
            kc, vc = context_kv.reshape(b, m, 2, h, d // h).permute(2, 0, 3, 1, 4)
            k, v = torch.cat([k.expand(b, -1, -1, -1), kc], dim=2), torch.cat([v.expand(b, -1, -1, -1), vc], dim=2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // h)
        scores = scores.masked_fill(~allowed[:, None], _MASKED)
        att = softmax_last(scores)
        y = (att @ v).transpose(1, 2).reshape(b, n, d)
        return self.out(y)


class Block(nn.Module):
    """Pre-LN transformer layer; with a context (pre-norm tokens that ``x`` may also attend to, or their keys and
    values from :meth:`context_kv`; ``x`` may then be (1, n, d), shared by the batch) only the outputs of ``x`` are
    computed."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = Attention(d_model, n_heads)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff1 = nn.Linear(d_model, d_ff)
        self.ff2 = nn.Linear(d_ff, d_model)

    def context_kv(self, context: Tensor) -> Tensor:
        """Keys and values (B, m, 2 d) this layer's attention reads from the pre-norm context tokens (B, m, d)."""
        return self.attn.project_context(self.norm1(context))

    def forward(self, x: Tensor, allowed: Tensor, context: Tensor | None = None,
                context_kv: Tensor | None = None) -> Tensor:
        if context is not None:
            context_kv = self.context_kv(context)
        x = x + self.attn(self.norm1(x), allowed, context_kv)
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
    """Top-k mixture of experts with sparse dispatch: each token runs only its ``top_k`` experts.

    The (token, choice) rows are sorted by expert. On a CPU (automatic ``block``) each expert's rows run as one
    group of a grouped matrix product (:func:`~.grouped.grouped_mlp`: exactly ``N * top_k`` rows for N tokens, the
    catalogue's ``top_k / E`` share, no padding). Elsewhere, or with a given ``block``, the rows are laid out in
    blocks of ``block`` rows, each expert's rows padded to whole blocks, and each block gathers its expert's
    weights and runs as one batched matmul (at most ``E * (block - 1)`` padding rows). Either way each token
    gathers its ``top_k`` outputs back (a gather, not a scatter: under ``torch.func.vmap`` an ``index_add`` with a
    per-device index runs one kernel per device) weighted by the renormalised gate probabilities, and every shape
    is static, so it works under ``torch.func.vmap``; :meth:`dense` is the same layer computed densely."""

    def __init__(self, d_model: int, n_experts: int, d_hidden: int, top_k: int, block: int | None = None):
        super().__init__()
        self.top_k = top_k
        self.block = block  # rows per block (None = automatic, from the number of routed rows)
        self.gate = nn.Linear(d_model, n_experts)
        self.experts = nn.ModuleList(Expert(d_model, d_hidden) for _ in range(n_experts))

    def _route(self, x: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(probs (B, L, E), top indices (B, L, k), their renormalised weights (B, L, k), balance loss)."""
        probs = softmax_last(self.gate(x))
        n_exp = probs.shape[-1]
        top_p, top_i = probs.topk(self.top_k, dim=-1)
        weights = top_p / top_p.sum(dim=-1, keepdim=True)
        # Switch-transformer balance loss over the valid tokens: E * sum_j f_j * P_j
        w = valid.to(probs.dtype).unsqueeze(-1)
        n_tok = w.sum().clamp(min=1.0)
        routed = torch.zeros_like(probs).scatter(-1, top_i, torch.ones_like(top_p)).detach()
        frac = (routed * w).sum(dim=(0, 1)) / (n_tok * self.top_k)
        mean_p = (probs * w).sum(dim=(0, 1)) / n_tok
        return probs, top_i, weights, n_exp * (frac * mean_p).sum()

    def block_size(self, n_rows: int) -> int:
        """Rows per block for ``n_rows`` routed (token, choice) rows: ``self.block``, else the power of 2 at or
        below a quarter of an expert's balanced share, within 32..256. Larger blocks waste padding; smaller ones
        run many small matmuls (a CPU pays a fixed cost per matrix) and gather more weights (memory)."""
        if self.block is not None:
            return int(self.block)
        share = max(1, n_rows // (4 * len(self.experts)))
        return int(min(256, max(32, 1 << (share.bit_length() - 1))))

    def forward(self, x: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` (B, L, d), ``valid`` (B, L) bool tokens that count for the balance loss -> (y, aux)."""
        _, top_i, weights, aux = self._route(x, valid)
        if self.block is None and grouped_available(x.device):
            return self._grouped(x, top_i, weights), aux
        return self._blocks(x, top_i, weights), aux

    def _sorted_rows(self, top_i: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The routed (token, choice) rows (N k) sorted by expert: (the sorting order, token order within an
        expert; where each (token, choice) row went in it; the sorted rows' experts; rows per expert (E,))."""
        expert = top_i.reshape(-1)
        order = torch.argsort(expert, stable=True)
        position = torch.zeros_like(order).scatter(0, order, torch.arange(len(order), device=order.device))
        count = (expert[:, None] == torch.arange(len(self.experts), device=top_i.device)).sum(0)
        return order, position, expert[order], count

    @staticmethod
    def _combine(rows: Tensor, weights: Tensor) -> Tensor:
        """Each token's ``top_k`` expert outputs ``rows`` (N, k, d), in (token, choice) order, summed with their
        gate ``weights`` (N, k) -> (N, d)."""
        return (rows * weights.unsqueeze(-1)).sum(1)

    def _grouped(self, x: Tensor, top_i: Tensor, weights: Tensor) -> Tensor:
        """The experts' output (B, L, d) by one grouped matrix product per expert layer."""
        b, n_tok, d = x.shape
        n, k = b * n_tok, self.top_k
        order, position, _, count = self._sorted_rows(top_i)
        token = order // k
        ends = count.cumsum(0).to(torch.int32)
        # the first layer's bias rides in the product (a column of ones times a bias row, padded to 4 columns: the
        # kernel wants 16-byte strides); the second layer's biases, weighted by the gates, add up per token to one
        # small product (N, E) x (E, d)
        pad = x.new_zeros(len(self.experts[0].fc1.bias), EXPERT_BIAS_COLUMNS - 1)
        w1 = torch.stack([torch.cat([e.fc1.weight, e.fc1.bias[:, None], pad], dim=1) for e in self.experts])
        w2 = torch.stack([e.fc2.weight for e in self.experts]).transpose(1, 2)  # (E, h, d)
        b2 = torch.stack([e.fc2.bias for e in self.experts])
        ones = F.pad(x.new_ones(n, 1), (0, EXPERT_BIAS_COLUMNS - 1))
        out = grouped_mlp(torch.cat([x.reshape(n, d), ones], dim=1)[token], w1.transpose(1, 2), w2, ends)
        out = out[position].view(n, k, d)
        gates = torch.zeros(n, len(self.experts), dtype=x.dtype, device=x.device).scatter(1, top_i.reshape(n, k),
                                                                                           weights.reshape(n, k))
        return (gates @ b2 + self._combine(out, weights.reshape(n, k))).view(b, n_tok, d)

    def _blocks(self, x: Tensor, top_i: Tensor, weights: Tensor) -> Tensor:
        """The experts' output (B, L, d) by blocks of rows, each with its expert's weights gathered."""
        b, n_tok, d = x.shape
        n, k, n_exp = b * n_tok, self.top_k, len(self.experts)
        a = n * k  # routed rows, one per (token, choice)
        bs = self.block_size(a)
        n_blocks = (a + n_exp * (bs - 1)) // bs
        dev = x.device
        order, position, sorted_e, count = self._sorted_rows(top_i)
        padded = (count + bs - 1) // bs * bs
        seg_end = padded.cumsum(0)
        first = count.cumsum(0) - count
        slot = (seg_end - padded)[sorted_e] + torch.arange(a, device=dev) - first[sorted_e]
        rows = n_blocks * bs
        # a padding row reads token 0 and is never gathered back: it adds nothing, to the output and the gradients
        slot_token = torch.zeros(rows, dtype=torch.int64, device=dev).scatter(0, slot, order // k)
        block_expert = (torch.arange(n_blocks, device=dev)[:, None] * bs >= seg_end[None, :]).sum(1)
        block_expert = block_expert.clamp(max=n_exp - 1)  # blocks past the last expert hold only padding
        w1 = torch.stack([e.fc1.weight for e in self.experts])[block_expert]  # (blocks, h, d)
        b1 = torch.stack([e.fc1.bias for e in self.experts])[block_expert]
        w2 = torch.stack([e.fc2.weight for e in self.experts])[block_expert]  # (blocks, d, h)
        b2 = torch.stack([e.fc2.bias for e in self.experts])[block_expert]
        xs = x.reshape(n, d)[slot_token].view(n_blocks, bs, d)
        h = F.gelu(torch.baddbmm(b1.unsqueeze(1), xs, w1.transpose(1, 2)))
        out = torch.baddbmm(b2.unsqueeze(1), h, w2.transpose(1, 2)).view(rows, d)
        return self._combine(out[slot[position]].view(n, k, d), weights.reshape(n, k)).view(b, n_tok, d)

    def dense(self, x: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """The same layer computed densely (every expert on every token, weight zero outside the top k)."""
        probs, top_i, weights, aux = self._route(x, valid)
        full = torch.zeros_like(probs).scatter(-1, top_i, weights)
        outs = torch.stack([e(x) for e in self.experts], dim=-1)  # (B, L, d, E)
        return (outs * full.unsqueeze(-2)).sum(dim=-1), aux


class Head(nn.Module):
    """A task head: layer norm + linear classifier."""

    def __init__(self, d_model: int, n_classes: int):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.norm(x))

