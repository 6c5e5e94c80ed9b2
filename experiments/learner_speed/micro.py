"""Micro-benchmarks behind the learner-speed notes (one torch thread, the default model's shapes: 256 devices x 16
samples, 8 prompt tokens of width 64, 4 experts of width 128, top-2, 4 heads of 16):

1. the sparse MoE layer, forward and backward: every device with its own experts (``vmap(grad)``, the trainer's
   case) vs one shared set on the same 4,096 samples (central training's case); and the per-device layer for 20
   devices (the calls of a 40-device round);
2. the prompts' attention over 14 keys under ``vmap(grad)``: the explicit products the model uses vs torch's
   ``scaled_dot_product_attention`` (its CPU backward has no vmap rule and falls back to a loop);
3. the experts' first product for 1,024 (device, expert) groups: torch's grouped kernel vs a batched matmul with
   every group padded to the largest;
4. a softmax over the attention scores of 4,000 samples (4 heads, 8 queries), forward and backward: 14 keys, the
   same 14 padded to 16 (``layers.softmax_last``), and 16 keys.

    PYTHONPATH=. python experiments/learner_speed/micro.py

Items 1 and 3 use only ``layers.MoE``, so an older commit's MoE is timed by the same script:
``git worktree add /tmp/before <commit>`` and ``PYTHONPATH=/tmp/before python experiments/learner_speed/micro.py``.

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


def moe_layer(devices: int = D) -> tuple[float, float]:
    """(per-device experts under vmap(grad), shared experts with autograd), forward + backward, ms."""
    moe = MoE(DM, E, H, K)
    stacked = {n: p.detach().unsqueeze(0).repeat(devices, *[1] * p.dim()).clone() for n, p in moe.named_parameters()}
    x, valid = torch.randn(devices, B, P, DM), torch.ones(devices, B, P, dtype=torch.bool)

    def loss(params, x, valid):
        y, aux = functional_call(moe, params, (x, valid))
        return (y ** 2).sum() + aux

    per_device = vmap(grad(loss))
    shared = copy.deepcopy(moe)

    def central():
        shared.zero_grad(set_to_none=True)
        y, aux = shared(x.reshape(devices * B, P, DM), valid.reshape(devices * B, P))
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


def softmax_widths(samples: int = 4000) -> tuple[float, float, float]:
    """(14 keys, 14 keys padded to 16 by ``softmax_last``, 16 keys): softmax forward + backward over the attention
    scores of ``samples`` samples, ms (``softmax_last`` is imported here: it exists from commit 999a80b on)."""
    from hffm_opt.learners.layers import softmax_last

    out = []
    for keys, fn in ((KEYS, lambda t: t.softmax(-1)), (KEYS, softmax_last), (16, lambda t: t.softmax(-1))):
        x = torch.randn(samples, HEADS, P, keys, requires_grad=True)
        g = torch.randn(samples, HEADS, P, keys)
        out.append(best_ms(lambda x=x, g=g, fn=fn: fn(x).backward(g)))
    return out[0], out[1], out[2]


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    keep_freed_memory()
    fl, central = moe_layer()
    print(f"MoE layer, forward + backward, {D} devices x {B} samples: per-device experts {fl:.0f} ms, "
          f"shared experts {central:.0f} ms")
    fl20, _ = moe_layer(20)
    print(f"MoE layer, forward + backward, 20 devices x {B} samples, per-device experts: {fl20:.1f} ms")
    explicit, fused = attention()
    print(f"attention under vmap(grad): explicit products {explicit:.0f} ms, scaled_dot_product_attention "
          f"{fused:.0f} ms")
    g, p, cap, mean = grouped_vs_padded()
    print(f"experts' first product, {D * E} groups: grouped kernel {g:.0f} ms, batched matmul padded to {cap} rows "
          f"(mean {mean:.0f}) {p:.0f} ms")
    narrow, padded, wide = softmax_widths()
    print(f"softmax, forward + backward, 4,000 samples' scores: 14 keys {narrow:.1f} ms, 14 keys padded to 16 "
          f"{padded:.1f} ms, 16 keys {wide:.1f} ms")


if __name__ == "__main__":
    main()
