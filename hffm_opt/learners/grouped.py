"""Grouped products for the mixture of experts: rows sorted by expert, each group of rows through its own expert's
two layers, without padding and without copying a weight per block.

:func:`grouped_mlp` ``(x (R, K), w1 (G, K, H), w2 (G, H, N), offs (G,) int32) -> (R, N)``: rows ``offs[g-1]:offs[g]``
of ``x`` through ``gelu(rows @ w1[g]) @ w2[g]`` (``offs`` cumulative row ends, ``offs[-1] == R``; an empty group is
allowed). Each product is torch's ``_grouped_mm``, differentiated by torch's own formula (the input gradient is a
grouped product by the transposed weights, the weight gradient a grouped ``x^T dy`` split along the rows). torch has
no ``vmap`` rule for it (its fallback loops over the batch), so this module registers one
(``torch.library.register_vmap``): a batch of D independent problems becomes one product over D x G groups, and the
experts of all devices run as one call under ``torch.func.vmap`` (the trainer's forward; its backward is plain autograd
on the stacked tensors, :func:`hffm_opt.learners.local._device_grads`). A rule on torch's operator costs less
than an autograd function of our own, whose every call under ``vmap(grad)`` runs Python dispatch code: a 20-device MoE
layer step, forward and backward on one thread, took 13.5 ms with the two layers as one such function (commit
``1e754b6``), 12.1 ms with the rule (256 devices: 147 vs 131 ms; ``experiments/learner_speed/micro.py``). The FLOP
counter learns the products' cost (2 R K N; a weight gradient 2 R K N too), so ``torch.utils.flop_counter`` measures
what runs.
The products under ``vmap`` run on one thread: with several torch threads the kernel's per-group parallel regions took
50x to 300x longer (60 ms -> 3 to 17 s for 1,024 groups of 64 rows on 2 cores shared with another process). The
backward's products run on the caller's threads (the trainer's calls each hold one). Units: none.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F
from torch.utils import flop_counter

from .device import one_torch_thread


def _one_thread(a: Tensor, b: Tensor, offs: Tensor) -> Tensor:
    """``torch._grouped_mm`` on one thread (module docstring)."""
    with one_torch_thread():
        return torch._grouped_mm(a, b, offs=offs)


def _flat_offsets(offs: Tensor, rows: int) -> Tensor:
    """(D, G) per-problem row ends -> (D * G,) row ends in the D problems' stacked rows."""
    shift = torch.arange(offs.shape[0], dtype=offs.dtype, device=offs.device)[:, None] * rows
    return (offs + shift).reshape(-1)


def _grouped_mm_vmap(info, in_dims, a: Tensor, b: Tensor, offs: Tensor | None = None, bias=None, out_dtype=None):
    """The ``vmap`` rule of ``_grouped_mm`` for the two forms the experts use: (R, K) x (G, K, N) -> (R, N), and the
    weight gradient's (K, R) x (R, N) split along R -> (G, K, N); D problems become one product over D x G groups."""
    if offs is None or bias is not None or out_dtype is not None or b.dim() - (in_dims[1] is not None) not in (2, 3):
        raise NotImplementedError("the vmap rule of _grouped_mm covers grouped rows with offsets only")
    n = info.batch_size
    a, b, offs = (t.movedim(d, 0) if d is not None else t.expand(n, *t.shape)
                  for t, d in zip((a, b, offs), in_dims[:3]))
    if b.dim() == 4:  # (D, R, K) x (D, G, K, N) -> (D, R, N)
        rows = a.shape[1]
        y = _one_thread(a.reshape(n * rows, -1), b.reshape(-1, *b.shape[2:]), _flat_offsets(offs, rows))
        return y.view(n, rows, -1), 0
    rows = a.shape[2]  # (D, K, R) x (D, R, N) -> (D, G, K, N)
    y = _one_thread(a.transpose(0, 1).reshape(a.shape[1], n * rows), b.reshape(n * rows, -1), _flat_offsets(offs, rows))
    return y.view(n, offs.shape[1], *y.shape[1:]), 0


def grouped_mlp(x: Tensor, w1: Tensor, w2: Tensor, offs: Tensor) -> Tensor:
    """``gelu(rows @ w1[g]) @ w2[g]`` for the rows ``offs[g-1]:offs[g]`` of ``x`` (R, K); ``w1`` (G, K, H), ``w2``
    (G, H, N). Differentiable in ``x``, ``w1`` and ``w2``, and under ``torch.func.vmap``."""
    return _one_thread(F.gelu(_one_thread(x, w1, offs)), w2, offs)


def grouped_available(device: torch.device) -> bool:
    """Whether :func:`grouped_mlp` runs on ``device`` in float32 (torch's CPU kernel; its CUDA kernel needs
    bfloat16)."""
    return device.type == "cpu" and hasattr(torch, "_grouped_mm")


def _grouped_flops(a_shape, b_shape, *args, **kwargs) -> int:
    """FLOPs of ``_grouped_mm``: 2 x rows x K x N for (R, K) x (G, K, N); 2 x K_total x M x N for (M, K) x (K, N)
    split along K (the weight gradient)."""
    if len(b_shape) == 3:
        return 2 * a_shape[0] * a_shape[1] * b_shape[2]
    return 2 * a_shape[0] * a_shape[1] * b_shape[1]


if hasattr(torch.ops.aten, "_grouped_mm") and torch.ops.aten._grouped_mm not in flop_counter.flop_registry:
    flop_counter.register_flop_formula(torch.ops.aten._grouped_mm)(_grouped_flops)

if hasattr(torch.ops.aten, "_grouped_mm") and not getattr(torch.ops.aten._grouped_mm, "_hffm_vmap", False):
    torch.library.register_vmap("aten::_grouped_mm", _grouped_mm_vmap)
    torch.ops.aten._grouped_mm._hffm_vmap = True  # once per process, whatever imports this module again
