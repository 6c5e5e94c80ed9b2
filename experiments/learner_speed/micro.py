"""Micro-benchmarks behind the learner-speed notes (one torch thread, the default model's shapes: 256 devices x 16
samples, 8 prompt tokens of width 64, 4 experts of width 128, top-2, 4 heads of 16):

1. the sparse MoE layer, forward and backward: every device with its own experts (``vmap(grad)``, the trainer's
   case) vs one shared set on the same 4,096 samples (central training's case);
2. the prompts' attention over 14 keys under ``vmap(grad)``: the explicit products the model uses vs torch's
   ``scaled_dot_product_attention`` (its CPU backward has no vmap rule and falls back to a loop);
3. the experts' first product for 1,024 (device, expert) groups: torch's grouped kernel vs a batched matmul with
   every group padded to the largest.

    PYTHONPATH=. python experiments/learner_speed/micro.py

Prints the best of 5 timings of each, in milliseconds.
"""

from __future__ import annotations

import copy
import math
import time

import torch
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from hffm_opt.learners.device import keep_freed_memory
from hffm_opt.learners.layers import MoE

D, B, P, KEYS, DM, HEADS, E, H, K = 256, 16, 8, 14, 64, 4, 4, 128, 2


def best_ms(fn, repeats: int = 5) -> float:
    """The fastest of ``repeats`` calls after a warm-up, in ms."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * min(times)


def moe_layer() -> tuple[float, float]:
    """(per-device experts under vmap(grad), shared experts with autograd), forward + backward, ms."""
    moe = MoE(DM, E, H, K)
    stacked = {n: p.detach().unsqueeze(0).repeat(D, *[1] * p.dim()).clone() for n, p in moe.named_parameters()}
    x, valid = torch.randn(D, B, P, DM), torch.ones(D, B, P, dtype=torch.bool)

    def loss(params, x, valid):
        y, aux = functional_call(moe, params, (x, valid))
        return (y ** 2).sum() + aux

    per_device = vmap(grad(loss))
    shared = copy.deepcopy(moe)

    def central():
        shared.zero_grad(set_to_none=True)
        y, aux = shared(x.reshape(D * B, P, DM), valid.reshape(D * B, P))
        ((y ** 2).sum() + aux).backward()

    return best_ms(lambda: per_device(stacked, x, valid)), best_ms(central)


def attention() -> tuple[float, float]:
    """(explicit products, scaled_dot_product_attention), both under vmap(grad), ms."""
    dh = DM // HEADS
    q, k, v = torch.randn(D, B, HEADS, P, dh), torch.randn(D, B, HEADS, KEYS, dh), torch.randn(D, B, HEADS, KEYS, dh)
    allowed = torch.rand(D, B, P, KEYS) > 0.2
    allowed[..., 0] = True

    def explicit(q, k, v, a):
        scores = (q @ k.transpose(-1, -2) / math.sqrt(dh)).masked_fill(~a[:, None], -1e9)
        return scores.softmax(-1) @ v

    def fused(q, k, v, a):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=a[:, None])

    out = []
    for fn in (explicit, fused):
        g = vmap(grad(lambda q, k, v, a, fn=fn: (fn(q, k, v, a) ** 2).sum(), argnums=(0, 1, 2)))
        out.append(best_ms(lambda g=g: g(q, k, v, allowed)))
    return out[0], out[1]


def grouped_vs_padded() -> tuple[float, float, int, float]:
    """(grouped kernel, padded batched matmul, padded rows per group, mean rows per group) for the experts' first
    product of D devices' routed rows, ms."""
    logits = torch.randn(D, B * P, E) + torch.tensor([0.8, 0.2, -0.3, 0.0])  # a gate that favours some experts
    count = F.one_hot(logits.topk(K, -1).indices, E).sum((1, 2))  # (D, E) rows per group
    rows = B * P * K
    ends = (count.cumsum(1) + torch.arange(D)[:, None] * rows).reshape(-1).to(torch.int32)
    x, w = torch.randn(D * rows, DM), torch.randn(D * E, DM, H)
    cap = int(count.max())
    padded = torch.zeros(D * E, cap, DM)
    return (best_ms(lambda: torch._grouped_mm(x, w, offs=ends)), best_ms(lambda: torch.bmm(padded, w)), cap,
            float(count.float().mean()))


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    keep_freed_memory()
    fl, central = moe_layer()
    print(f"MoE layer, forward + backward, {D} devices x {B} samples: per-device experts {fl:.0f} ms, "
          f"shared experts {central:.0f} ms")
    explicit, fused = attention()
    print(f"attention under vmap(grad): explicit products {explicit:.0f} ms, scaled_dot_product_attention "
          f"{fused:.0f} ms")
    g, p, cap, mean = grouped_vs_padded()
    print(f"experts' first product, {D * E} groups: grouped kernel {g:.0f} ms, batched matmul padded to {cap} rows "
          f"(mean {mean:.0f}) {p:.0f} ms")


if __name__ == "__main__":
    main()
