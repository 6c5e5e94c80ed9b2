"""The module catalogue (section 2 of the design) derived from the real PyTorch model.

One :class:`~hffm_opt.network.scenario.ModuleSpec` per module of :class:`~hffm_opt.learners.model.M3TModel`, in
:meth:`~hffm_opt.learners.model.M3TModel.module_names` order, so the optimiser and the trainer talk about the
same modules. Units: bits, FLOP per sample, bytes.

- ``full_bits`` = bits of all the module's parameters (32 per float32 parameter); ``update_bits`` = bits of
  its trainable parameters (0 for a frozen module).
- ``flops_per_sample`` (phi_k) is counted from the layer shapes on one reference sample (default: every modality
  present and every task's prompts in the sequence, the largest sample): 2 FLOP per multiply-add of linear and
  convolution layers (+1 per bias element), 5 per element of a normalisation, and the two attention products
  (2 n (n + m) d each for n queries over n + m keys) plus softmax (5 per score), counted on what the forward pass
  runs (the prompts attend to the modality tokens as context; the last layer computes only the prompts' outputs; a
  sample alone: a batch projects the prompts into the first layer once for all its samples, a little less per sample).
  Element-wise activations are not counted. Experts are priced as the sparse
  layer they are: an expert's forward is its dense cost times top_k/E (the expected share of tokens routed to it
  under balanced routing), which is what the sparse dispatch of :class:`~hffm_opt.learners.layers.MoE` runs (exactly,
  by grouped products on a CPU, whose first layer carries its bias as 4 input columns; plus at most
  ``E x (block - 1)`` padding rows per call with blocks). Costs are *additive*: each module carries the cost of its own
  layers, so the per-sample training cost of a device is the sum over its Need set: ``3 x forward`` for a trained
  module (forward, activation gradient, weight gradient), ``2 x forward`` for a frozen module that gradients pass
  through (a trainable module sits upstream, e.g. the frozen backbone below trained prompts and adapters),
  ``1 x forward`` for a frozen module nothing upstream of which is trained (the frozen encoders). Prompts carry no layer
  of their own (their tokens' cost is in the backbone's count).
- ``memory_bytes`` = bytes of the parameters (+ ``activation_batch`` x the module's output activations of one
  sample, if given); ``train_memory_bytes`` = gradients + optimiser state of the trainable parameters
  (Adam: 2 moments; SGD with momentum: 1 buffer; plain SGD: none).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from hffm_opt.errors import ConfigError
from hffm_opt.network.scenario import ModuleSpec

from .layers import Attention, MoE
from .model import M3TModel

_STAGE = {"encoder": 0, "prompt": 0, "backbone": 1, "adapter": 1, "gate": 2, "expert": 2, "head": 3}
_OPT_STATE = {"adam": 2, "sgd_momentum": 1, "sgd": 0}


def module_param_counts(model: M3TModel) -> dict[str, tuple[int, int]]:
    """``{module: (all parameters, trainable parameters)}`` from the torch parameters of each module."""
    out = {}
    for k, params in model.module_parameters().items():
        total = sum(p.numel() for p in params.values())
        train = 0 if model.is_frozen(k) else total
        out[k] = (int(total), int(train))
    return out


def _dummy_inputs(model: M3TModel, modalities: Sequence[str]) -> dict[str, torch.Tensor]:
    out = {}
    for m in model.cfg.modalities:
        if m.name in modalities:
            out[m.name] = torch.zeros((1,) + m.shape, dtype=torch.float32)
    return out


@torch.no_grad()
def forward_flops(model: M3TModel, modalities: Sequence[str] | None = None, tasks: Sequence[str] | None = None
                  ) -> tuple[dict[str, float], dict[str, float]]:
    """Forward FLOPs and output activations (values) per module for one sample with ``modalities`` present and
    the prompts of ``tasks`` in the sequence (defaults: all). Experts at their sparse (top_k/E) share."""
    modalities = model.modality_names if modalities is None else tuple(modalities)
    tasks = model.task_names if tasks is None else tuple(tasks)
    flops = {k: 0.0 for k in model.module_names()}
    acts = {k: 0.0 for k in model.module_names()}
    hooks = []

    def owner(qualname: str) -> str:
        return model._module_of(qualname + ".weight")

    def hook_for(qualname: str, mod: nn.Module):
        def hook(module, args, output):
            x = args[0]
            if isinstance(module, MoE):  # the experts, at the rows they run: top_k of E per token
                share = module.top_k / len(module.experts)
                for j, e in enumerate(module.experts):
                    d, h = e.fc1.in_features, e.fc1.out_features
                    rows = share * (x.numel() // d)
                    flops[f"expert:{j}"] += rows * (2.0 * d * h + h + 2.0 * h * d + d)
                    acts[f"expert:{j}"] += rows * (h + d)
                return
            k = owner(qualname)
            if model.module_kind(k) == "expert":
                return  # counted by the MoE's hook (an expert layer runs only on its routed rows)
            if isinstance(module, nn.Linear):
                rows = x.numel() // module.in_features
                f = 2.0 * module.in_features * module.out_features * rows
                f += module.out_features * rows if module.bias is not None else 0.0
            elif isinstance(module, nn.Conv2d):
                c_out, c_in_g, kh, kw = module.weight.shape
                spatial = output.numel() // c_out
                f = 2.0 * c_in_g * kh * kw * c_out * spatial + (output.numel() if module.bias is not None else 0.0)
            elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
                f = 5.0 * x.numel()
            elif isinstance(module, Attention):  # scores and mixing over n + m keys; the context's keys, values
                b, n, d = x.shape
                m = 0 if len(args) < 3 or args[2] is None else args[2].shape[1]
                f = 2.0 * 2.0 * b * n * (n + m) * d + 5.0 * b * module.n_heads * n * (n + m)
                f += (2.0 * d * 2 * d + 2 * d) * b * m
            else:
                return
            flops[k] += f
            if not isinstance(module, Attention):
                acts[k] += float(output.numel())
        return hook

    for qualname, mod in model.named_modules():
        if isinstance(mod, (nn.Linear, nn.Conv2d, nn.LayerNorm, nn.GroupNorm, Attention, MoE)):
            hooks.append(mod.register_forward_hook(hook_for(qualname, mod)))
    try:
        model(_dummy_inputs(model, modalities), tasks=tasks)
    finally:
        for h in hooks:
            h.remove()
    return flops, acts


def module_catalogue(model: M3TModel, *, optimizer: str = "adam", cluster_local_experts: bool | Sequence[int] = False,
                     modalities: Sequence[str] | None = None, tasks: Sequence[str] | None = None,
                     activation_batch: int = 0) -> tuple[ModuleSpec, ...]:
    """The catalogue of ``model`` (see the module docstring for every rule).

    ``optimizer`` (``"adam"``, ``"sgd_momentum"``, ``"sgd"``) sets the optimiser state in
    ``train_memory_bytes``; ``cluster_local_experts`` marks all (True) or the listed experts cluster-local
    (never sent to the cloud); ``modalities``/``tasks`` choose the reference sample of the FLOP count (default
    all); ``activation_batch`` adds that many samples' activations to ``memory_bytes``.
    """
    opt_state = optimizer_state(optimizer)
    local = _local_experts(model, cluster_local_experts)
    counts = module_param_counts(model)
    fwd, acts = forward_flops(model, modalities, tasks)
    params = model.module_parameters()
    names = model.module_names()
    trainable = {k: counts[k][1] > 0 for k in names}
    mults = cost_multipliers(model, trainable)
    specs = []
    for k in names:
        kind = model.module_kind(k)
        key = k.split(":", 1)[1] if kind in ("encoder", "prompt", "head") else None
        bits = sum(p.numel() * p.element_size() * 8 for p in params[k].values())
        n_bytes = sum(p.numel() * p.element_size() for p in params[k].values())
        mult = mults[k]
        elem = next(iter(params[k].values())).element_size() if params[k] else 4
        train_mem = n_bytes * (1 + opt_state) if trainable[k] else 0.0
        specs.append(ModuleSpec(
            name=k, kind=kind, key=key,
            update_bits=float(bits) if trainable[k] else 0.0,
            full_bits=float(bits),
            flops_per_sample=float(mult * fwd[k]),
            memory_bytes=float(n_bytes + activation_batch * acts[k] * elem),
            train_memory_bytes=float(train_mem),
            trainable=bool(trainable[k]),
            cluster_local=bool(kind == "expert" and int(k.split(":")[1]) in local and trainable[k]),
        ))
    return tuple(specs)


def optimizer_state(optimizer: str) -> int:
    """Buffers of optimiser state per trainable parameter (Adam 2, SGD with momentum 1, plain SGD 0)."""
    if optimizer not in _OPT_STATE:
        raise ConfigError(f"optimizer = {optimizer!r}: must be one of {sorted(_OPT_STATE)}")
    return _OPT_STATE[optimizer]


def _local_experts(model: M3TModel, cluster_local_experts: bool | Sequence[int]) -> set[int]:
    if isinstance(cluster_local_experts, bool):
        return set(range(model.cfg.n_experts)) if cluster_local_experts else set()
    local = {int(j) for j in cluster_local_experts}
    if any(not 0 <= j < model.cfg.n_experts for j in local):
        raise ConfigError(f"cluster_local_experts = {sorted(local)}: experts are 0..{model.cfg.n_experts - 1}")
    return local


def cost_multipliers(model: M3TModel, trainable: dict[str, bool]) -> dict[str, float]:
    """Per module, training FLOP per forward FLOP (module docstring): 3 for a trained module, 2 for a frozen one
    that gradients pass through (a trained module sits upstream), 1 for a frozen one with nothing trained
    upstream. ``trainable`` maps every module name of ``model`` to whether it is trained."""
    names = model.module_names()
    out = {}
    for k in names:
        if trainable[k]:
            out[k] = 3.0
            continue
        st = _STAGE[model.module_kind(k)]
        upstream = any(trainable[j] and (_STAGE[model.module_kind(j)] < st or
                                         (st == 1 and _STAGE[model.module_kind(j)] == 1 and j != k))
                       for j in names)
        out[k] = 2.0 if upstream else 1.0
    return out


def catalogue_summary(specs: Sequence[ModuleSpec]) -> list[dict]:
    """The catalogue as a list of plain dicts (for a table or JSON)."""
    return [{"name": s.name, "kind": s.kind, "key": s.key, "update_bits": s.update_bits, "full_bits": s.full_bits,
             "flops_per_sample": s.flops_per_sample, "memory_bytes": s.memory_bytes,
             "train_memory_bytes": s.train_memory_bytes, "trainable": s.trainable,
             "cluster_local": s.cluster_local} for s in specs]
