"""Local training of many devices at once (one edge round of one cluster), vectorised over devices.

The trainable parameters of the devices are *stacked*: ``stacked[name]`` has shape (D, *param.shape), row ``d``
being device ``d``'s copy. :func:`local_train` runs ``tau`` optimiser steps for all devices together with
``torch.func.functional_call`` + ``vmap`` and one autograd pass (:func:`_device_grads`): each device on its own
minibatches, each updating only the modules its row of ``masks`` (D, K) assigns to it (``x[u, k]`` of the plan);
the copy of a module a device was not assigned is returned bit-identical. :func:`local_train_reference` does the
same with a plain per-device loop and ordinary autograd; the tests check that both agree.

Devices are grouped by *signature* (the modalities present and the tasks labelled in their minibatches) and
each group is one ``vmap`` call, so a device runs only the encoders of its modalities and only its tasks'
prompts and heads, exactly as on the device. Optimiser state (momentum, Adam moments) lives for one call (one
edge round) and starts from zero, the usual choice in federated learning.

FedProx (``prox_mu`` > 0) adds ``prox_mu / 2 * ||w - w_start||^2`` to every device's loss, ``w_start`` its copy at
the start of the call: the vectorised path adds its gradient ``prox_mu * (w - w_start)`` to the vmapped gradients
(:func:`proximal`), the reference path adds the term to the loss and lets autograd differentiate it.

Typical use by a trainer, per cluster and edge round::

    stacked = stack_params(model, n_devices)                  # or the cluster's current copies
    batches = sample_device_batches(device_tables, tau, batch_size, rng)
    stacked, counts = local_train(model, stacked, plan.train[cluster], batches, tau, lr)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.func import functional_call, vmap

from .model import M3TModel, task_loss
from .packed import DeviceBatches, PackedTables
from .table import MultiModalTable

OPTIMIZERS = ("sgd", "adam")


class LocalResult(NamedTuple):
    """``params`` the new stacked parameters; ``sample_counts`` (D, T) int64 labelled samples each device
    trained on per task (0 for a device that trained nothing), the weights of a sample-weighted average."""

    params: dict[str, Tensor]
    sample_counts: Tensor


# --------------------------------------------------------------------------- helpers
def sample_device_batches(tables: Sequence[MultiModalTable], steps: int, batch_size: int,
                          rng: np.random.Generator | int = 0) -> DeviceBatches:
    """Draw ``steps`` minibatches of ``batch_size`` rows for each device table and stack them.

    Rows are drawn without replacement within a call (a device with fewer than ``steps * batch_size`` rows
    goes through reshuffled passes of its data), for all devices at once (:meth:`PackedTables.sample`).
    ``tables`` is a sequence of tables or a :class:`PackedTables`; ``rng`` is a numpy Generator or a seed."""
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    if isinstance(tables, PackedTables):
        packed = tables
    else:
        tables = list(tables)
        if not tables:
            raise ValueError("tables: need at least one device table")
        if len({t.encoded for t in tables}) > 1:
            raise ValueError("tables: all device tables must be pre-encoded for the same modalities")
        packed = PackedTables.from_tables(tables)
    devices = np.arange(len(packed))
    rows = packed.sample(devices, steps, batch_size, rng)
    has = packed.modality_counts().any(axis=0)
    return packed.gather(rows, [m for j, m in enumerate(packed.modality_names) if has[j]])


def stack_params(model: M3TModel, n_devices: int, names: Sequence[str] | None = None) -> dict[str, Tensor]:
    """``n_devices`` copies of the model's trainable parameters (or of ``names``): {name: (D, *shape)}."""
    params = dict(model.named_parameters())
    names = model.trainable_names() if names is None else tuple(names)
    return {n: params[n].detach().unsqueeze(0).repeat(n_devices, *([1] * params[n].dim())).clone() for n in names}


def unstack_params(stacked: Mapping[str, Tensor], d: int) -> dict[str, Tensor]:
    """Device ``d``'s copy: {name: tensor}."""
    return {n: x[d] for n, x in stacked.items()}


def _host_masks(model: M3TModel, stacked: Mapping[str, Tensor], masks, module_names) -> dict[str, np.ndarray]:
    module_names = tuple(model.module_names() if module_names is None else module_names)
    masks = np.asarray(masks.cpu() if isinstance(masks, Tensor) else masks, dtype=bool)
    d = _n_devices(stacked)
    if masks.shape != (d, len(module_names)):
        raise ValueError(f"masks.shape = {tuple(masks.shape)}: must be ({d} devices, {len(module_names)} modules)")
    col = {k: i for i, k in enumerate(module_names)}
    none = np.zeros(d, dtype=bool)
    return {n: masks[:, col[model.module_of(n)]] if model.module_of(n) in col else none for n in stacked}


def param_masks(model: M3TModel, stacked: Mapping[str, Tensor], masks, module_names: Sequence[str] | None = None
                ) -> dict[str, Tensor]:
    """Per-parameter (D,) bool masks from the per-module (D, K) mask (columns named by ``module_names``,
    default :meth:`M3TModel.module_names`; a module not among them is never updated), on the parameters' device."""
    host = _host_masks(model, stacked, masks, module_names)
    return {n: torch.from_numpy(m.copy()).to(stacked[n].device) for n, m in host.items()}


def _n_devices(stacked: Mapping[str, Tensor]) -> int:
    if not stacked:
        raise ValueError("stacked: no parameters given (nothing to train)")
    sizes = {int(x.shape[0]) for x in stacked.values()}
    if len(sizes) != 1:
        raise ValueError(f"stacked parameters disagree on the number of devices: {sorted(sizes)}")
    return sizes.pop()


def _presence(model: M3TModel, batches: DeviceBatches, tau: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(modalities the batches carry, (D, M') modality present in a device's first tau batches, (D, T) task
    labelled in them), one transfer to the host."""
    mods = [m for m in model.modality_names if m in batches.present]
    cols = [batches.present[m][:, :tau].flatten(1).any(1, keepdim=True) for m in mods]
    cols.append((batches.labels[:, :tau] >= 0).flatten(1, 2).any(1))
    host = torch.cat(cols, dim=1).cpu().numpy()
    return mods, host[:, :len(mods)], host[:, len(mods):]


def _signatures(model: M3TModel, batches: DeviceBatches, tau: int) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """Per device: (modalities present in its first tau batches, tasks labelled in them), in model order."""
    mods, has_m, has_t = _presence(model, batches, tau)
    return [(tuple(m for j, m in enumerate(mods) if has_m[d, j]),
             tuple(t for j, t in enumerate(model.task_names) if has_t[d, j])) for d in range(batches.n_devices)]


def _groups(model: M3TModel, batches: DeviceBatches, tau: int, trains: np.ndarray, groups=None
            ) -> list[tuple[tuple[str, ...], tuple[str, ...], np.ndarray]]:
    """The vmap groups: (modalities, tasks, devices). Without ``groups`` devices are grouped by their own
    signature; with ``groups`` ((D,) ids) each group runs with the union of its devices' signatures (a device
    lacking a modality or a task of its group computes masked tokens that change nothing: same result)."""
    mods, has_m, has_t = _presence(model, batches, tau)
    active = trains & has_m.any(axis=1) & has_t.any(axis=1)
    if groups is None:
        code = np.concatenate([has_m, has_t], axis=1)
        ids = np.unique(code, axis=0, return_inverse=True)[1].reshape(-1)
    else:
        ids = np.asarray(groups)
    out = []
    for g in np.unique(ids[active]):
        devs = np.flatnonzero(active & (ids == g))
        gm, gt = has_m[devs].any(axis=0), has_t[devs].any(axis=0)
        out.append((tuple(m for j, m in enumerate(mods) if gm[j]),
                    tuple(t for j, t in enumerate(model.task_names) if gt[j]), devs))
    return out


def proximal(grads: Mapping[str, Tensor], params: Mapping[str, Tensor], start: Mapping[str, Tensor], mu: float
             ) -> dict[str, Tensor]:
    """FedProx: ``grads[n] + mu * (params[n] - start[n])``, the gradient of ``mu/2 ||w - w_start||^2`` added
    (``grads`` itself when ``mu`` is 0)."""
    if not mu:
        return dict(grads)
    names = list(grads)
    diff = torch._foreach_sub([params[n] for n in names], [start[n] for n in names])
    return dict(zip(names, torch._foreach_add([grads[n] for n in names], diff, alpha=mu)))


def _check(model: M3TModel, stacked, batches: DeviceBatches, tau: int, optimizer: str, prox_mu: float = 0.0):
    params = dict(model.named_parameters())
    for m in batches.encoded:
        if any(model.module_of(n) == f"encoder:{m}" for n in stacked):
            raise ValueError(f"batches carry cached tokens of modality {m!r} but encoder:{m} is being trained")
    if batches.stream and any(model.module_kind(model.module_of(n)) in ("encoder", "backbone") for n in stacked):
        raise ValueError("batches carry the cached first-layer stream but an encoder or the backbone is being trained")
    for n, x in stacked.items():
        if n not in params:
            raise ValueError(f"stacked[{n!r}]: not a parameter of the model")
        if tuple(x.shape[1:]) != tuple(params[n].shape):
            raise ValueError(f"stacked[{n!r}].shape = {tuple(x.shape)}: must be (D, *{tuple(params[n].shape)})")
    d = _n_devices(stacked)
    if batches.n_devices != d:
        raise ValueError(f"batches hold {batches.n_devices} devices, stacked parameters {d}")
    if not 1 <= tau <= batches.n_steps:
        raise ValueError(f"tau = {tau}: must be in 1..{batches.n_steps} (the steps the batches hold)")
    if batches.labels.shape[-1] != len(model.task_names):
        raise ValueError(f"batches.labels has {batches.labels.shape[-1]} task columns, "
                         f"the model {len(model.task_names)}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer = {optimizer!r}: must be one of {OPTIMIZERS}")
    if not (math.isfinite(prox_mu) and prox_mu >= 0):
        raise ValueError(f"prox_mu = {prox_mu!r}: must be a finite number >= 0")


class _Optim:
    """Functional SGD (momentum, weight decay) / Adam on tensors with an arbitrary leading device axis; state lives
    for one call (one edge round). Adam is torch's fused kernel (one pass over all parameters) on copies of the
    parameters, which it updates in place; a row masked out (False in ``masks[n]``) gets a zero gradient, keeps
    zero moments and so stays bit-identical. SGD is a few ``torch._foreach_*`` passes."""

    def __init__(self, kind, lr, momentum, weight_decay, betas, eps):
        self.kind, self.lr, self.momentum, self.wd, self.betas, self.eps = kind, lr, momentum, weight_decay, betas, eps
        self.state: list | None = None
        self.t = 0

    def step(self, params: dict[str, Tensor], grads: dict[str, Tensor], masks: Mapping[str, Tensor]
             ) -> dict[str, Tensor]:
        """New parameters; ``masks[n]`` (D,) keeps the rows it marks False bit-identical (absent = all True)."""
        self.t += 1
        names = list(grads)
        p = [params[n] for n in names]
        g = [grads[n] for n in names]
        if self.wd:
            g = torch._foreach_add(g, p, alpha=self.wd)
        if self.kind == "adam" and hasattr(torch, "_fused_adam_"):
            return self._fused_adam(names, p, g, masks)
        if self.kind == "sgd":
            if self.momentum:
                if self.state is None:
                    self.state = [x.clone() for x in g]
                else:
                    torch._foreach_mul_(self.state, self.momentum)
                    torch._foreach_add_(self.state, g)
                g = self.state
            new = torch._foreach_add(p, g, alpha=-self.lr)
        else:
            b1, b2 = self.betas
            if self.state is None:
                self.state = [[torch.zeros_like(x) for x in p], [torch.zeros_like(x) for x in p]]
            m, v = self.state
            torch._foreach_mul_(m, b1)
            torch._foreach_add_(m, g, alpha=1 - b1)
            torch._foreach_mul_(v, b2)
            torch._foreach_addcmul_(v, g, g, value=1 - b2)
            den = torch._foreach_div(v, 1 - b2 ** self.t)
            torch._foreach_sqrt_(den)
            torch._foreach_add_(den, self.eps)
            new = torch._foreach_add(p, torch._foreach_div(m, den), alpha=-self.lr / (1 - b1 ** self.t))
        out = dict(zip(names, new))
        for n, mask in masks.items():
            out[n] = torch.where(mask.view(-1, *([1] * (out[n].dim() - 1))), out[n], params[n])
        return out

    def _fused_adam(self, names, p, g, masks) -> dict[str, Tensor]:
        g = [x.contiguous() for x in g]
        for i, n in enumerate(names):
            if n in masks:
                g[i] = g[i] * masks[n].view(-1, *([1] * (g[i].dim() - 1))).to(g[i].dtype)
        if self.state is None:  # own copies of the parameters (updated in place), moments, step counts
            self.state = [[x.clone(memory_format=torch.contiguous_format) for x in p],
                          [torch.zeros_like(x, memory_format=torch.contiguous_format) for x in p],
                          [torch.zeros_like(x, memory_format=torch.contiguous_format) for x in p],
                          [torch.zeros((), dtype=torch.float32, device=x.device) for x in p]]
        own, m, v, steps = self.state
        torch._foreach_add_(steps, 1.0)
        torch._fused_adam_(own, g, m, v, [], steps, lr=self.lr, beta1=self.betas[0], beta2=self.betas[1],
                           weight_decay=0.0, eps=self.eps, amsgrad=False, maximize=False)
        return dict(zip(names, own))


def _loss_fn(model: M3TModel, mods: tuple[str, ...], tasks: tuple[str, ...], aux_weight: float):
    task_index = [model.task_names.index(t) for t in tasks]

    def loss(diff: dict[str, Tensor], fixed: dict[str, Tensor], inputs, present, labels, encoded, stream) -> Tensor:
        task_valid = {t: labels[..., j] >= 0 for t, j in zip(tasks, task_index)}
        out = functional_call(model, {**fixed, **diff}, (inputs, present),
                              {"tasks": tasks, "task_valid": task_valid, "encoded": encoded, "stream": stream},
                              strict=False, tie_weights=False)  # the model ties no weights
        return task_loss(model, out, labels, tasks, task_index, aux_weight)

    return loss


def _rows(x, lo: int, n: int):
    """Rows ``lo:lo + n`` of a tensor, or of each tensor of a dict (the devices' slice of a stacked argument)."""
    return {k: v[lo:lo + n] for k, v in x.items()} if isinstance(x, dict) else x[lo:lo + n]


def _device_grads(loss_fn, chunk_size: int | None):
    """``(diff, fixed, *batch) -> {name: (D, *shape) gradient}``: each device's gradient of its own loss with respect
    to its rows of ``diff``. The devices' losses are computed by one ``vmap`` of ``loss_fn`` (``chunk_size`` devices
    at a time, default all) and their sum is differentiated by plain autograd: a device's loss depends on its own
    rows only, so the sum's gradient is each device's own, and the backward runs on the stacked tensors without
    ``vmap``'s per-operator batching (faster than ``vmap(grad(...))``: ``bench --learner``,
    ``experiments/learner_speed/README.md``)."""
    per_device = vmap(loss_fn)

    def grads(diff: dict[str, Tensor], *rest) -> dict[str, Tensor]:
        if not diff:
            return {}
        n_dev = _n_devices(diff)
        step = n_dev if chunk_size is None else chunk_size
        names, parts = list(diff), []
        for lo in range(0, n_dev, step):
            leaves = [_rows(diff[n], lo, step).detach().requires_grad_() for n in names]
            with torch.enable_grad():
                losses = per_device(dict(zip(names, leaves)), *(_rows(x, lo, step) for x in rest))
                parts.append(torch.autograd.grad(losses.sum(), leaves, allow_unused=True, materialize_grads=True))
        return {n: torch.cat([p[i] for p in parts]) if len(parts) > 1 else parts[0][i] for i, n in enumerate(names)}

    return grads


@torch.no_grad()
def _shared_tokens(model: M3TModel, gb: DeviceBatches, mods: Sequence[str], tau: int, chunk: int) -> dict[str, Tensor]:
    """Tokens of the model's own encoders for the first ``tau`` steps of every device: {m: (G, tau, B, n, d)}."""
    out = {}
    for m in mods:
        x = gb.inputs[m][:, :tau]
        lead = x.shape[:3]
        flat = x.flatten(0, 2)
        toks = torch.cat([model.encoders[m](flat[i:i + chunk]) for i in range(0, len(flat), max(1, chunk))])
        out[m] = toks.unflatten(0, lead)
    return out


def _prepare(model, stacked, masks, batches, tau, module_names, optimizer, prox_mu):
    """(tau, host per-parameter masks, host (D,) trains anything, (D, T) sample counts on the batches' device)."""
    tau = batches.n_steps if tau is None else int(tau)
    _check(model, stacked, batches, tau, optimizer, prox_mu)
    hmask = _host_masks(model, stacked, masks, module_names)
    trains = np.stack([hmask[n] for n in stacked], axis=1).any(axis=1)
    counts = (batches.labels[:, :tau] >= 0).flatten(1, 2).sum(1).to(torch.int64)  # (D, T)
    counts = counts * torch.from_numpy(trains).to(counts.device)[:, None].to(torch.int64)
    return tau, hmask, trains, counts


# --------------------------------------------------------------------------- the vectorised path
def local_train(model: M3TModel, stacked: Mapping[str, Tensor], masks, batches: DeviceBatches, tau: int | None = None,
                lr: float = 0.05, *, optimizer: str = "sgd", momentum: float = 0.0, weight_decay: float = 0.0,
                betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, aux_weight: float | None = None,
                prox_mu: float = 0.0, module_names: Sequence[str] | None = None, chunk_size: int | None = None,
                encoder_chunk: int = 1024, groups=None) -> LocalResult:
    """``tau`` local optimiser steps for D devices at once (one vmap over the devices of each group).

    ``stacked`` {param name: (D, *shape)} the devices' copies of the parameters to train (others come from
    ``model``); ``masks`` (D, K) bool, device d may update module k (columns ``module_names``, default
    ``model.module_names()``); ``batches`` the devices' minibatches (its first ``tau`` steps are used, default
    all); ``lr`` learning rate; ``optimizer`` ``"sgd"`` (``momentum``, ``weight_decay``) or ``"adam"``;
    ``aux_weight`` weight of the MoE balance loss (default the model's); ``prox_mu`` the FedProx coefficient
    (0 = none; the proximal centre is each device's copy in ``stacked``). Devices are grouped by the modalities
    and tasks of their batches, or by ``groups`` ((D,) ids, each group run with the union of its devices'
    modalities and tasks: fewer, larger calls, the same result). ``chunk_size`` bounds how many devices one
    vmap call processes at once (memory). Encoders that are not stacked (frozen, shared by all devices) run
    once for all devices and steps, ``encoder_chunk`` samples at a time, outside the vmapped gradient.
    Every tensor stays on the device of ``stacked`` and ``batches``; the local steps make no host sync.
    Returns :class:`LocalResult` (new stacked params, (D, T) counts). The inputs are not modified; a masked
    module's copy is returned bit-identical.
    """
    tau, hmask, trains, counts = _prepare(model, stacked, masks, batches, tau, module_names, optimizer, prox_mu)
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size = {chunk_size!r}: must be None (every device at once) or an integer >= 1")
    aux_weight = model.cfg.aux_loss_weight if aux_weight is None else aux_weight
    n_dev = _n_devices(stacked)
    out = dict(stacked)
    written: set[str] = set()
    for mods, tasks, devs in _groups(model, batches, tau, trains, groups):
        whole = len(devs) == n_dev
        idx = torch.from_numpy(devs).to(next(iter(stacked.values())).device)
        params = {n: x if whole else x.index_select(0, idx) for n, x in stacked.items()}
        diff_names = [n for n in params if hmask[n][devs].any()]
        fixed = {n: params[n] for n in params if n not in diff_names}
        diff = {n: params[n] for n in diff_names}
        centre = dict(diff)  # FedProx's w_start (the optimiser never writes into these tensors)
        dmask = {n: torch.from_numpy(hmask[n][devs].copy()).to(idx.device) for n in diff_names
                 if not hmask[n][devs].all()}
        gb = batches if whole else batches.select(idx)
        # encoders that are the model's own (not stacked) are the same for every device: run them once, batched
        # (or not at all, with the rows' cached first-layer stream)
        stream = {m: gb.stream[m] for m in mods if m in gb.stream}
        shared = [m for m in mods if not any(model.module_of(n) == f"encoder:{m}" for n in stacked) or m in stream]
        encoded = {m: gb.encoded[m] for m in shared if m in gb.encoded}
        encoded.update(_shared_tokens(model, gb, [m for m in shared if m not in encoded and m not in stream], tau,
                                      encoder_chunk))
        grad_fn = _device_grads(_loss_fn(model, mods, tasks, aux_weight), chunk_size)
        opt = _Optim(optimizer, lr, momentum, weight_decay, betas, eps)
        for s in range(tau):
            inputs = {m: gb.inputs[m][:, s] for m in mods if m not in shared}
            present = {m: gb.present[m][:, s] for m in mods}
            enc_s = {m: encoded[m][:, s] for m in shared if m in encoded}
            grads = grad_fn(diff, fixed, inputs, present, gb.labels[:, s], enc_s,
                            {m: x[:, s] for m, x in stream.items()})
            diff = opt.step(diff, proximal(grads, diff, centre, prox_mu), dmask)
        for n, x in diff.items():
            if whole:
                out[n] = x
            else:
                if n not in written:
                    out[n] = out[n].clone()
                out[n].index_copy_(0, idx, x)
            written.add(n)
    out = {n: x if n in written else x.clone() for n, x in out.items()}
    return LocalResult(out, counts)


# --------------------------------------------------------------------------- the reference path
def local_train_reference(model: M3TModel, stacked: Mapping[str, Tensor], masks, batches: DeviceBatches,
                          tau: int | None = None, lr: float = 0.05, *, optimizer: str = "sgd", momentum: float = 0.0,
                          weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                          aux_weight: float | None = None, prox_mu: float = 0.0,
                          module_names: Sequence[str] | None = None) -> LocalResult:
    """The same computation as :func:`local_train`, one device after the other with plain autograd (the FedProx
    term added to the loss)."""
    tau, hmask, trains, counts = _prepare(model, stacked, masks, batches, tau, module_names, optimizer, prox_mu)
    aux_weight = model.cfg.aux_loss_weight if aux_weight is None else aux_weight
    out = {n: x.clone() for n, x in stacked.items()}
    for d, (mods, tasks) in enumerate(_signatures(model, batches, tau)):
        if not (trains[d] and mods and tasks):
            continue
        task_index = [model.task_names.index(t) for t in tasks]
        params = {n: x[d].clone() for n, x in stacked.items()}
        diff_names = [n for n in params if hmask[n][d]]
        opt = _Optim(optimizer, lr, momentum, weight_decay, betas, eps)
        for s in range(tau):
            b = batches.step(d, s, mods)
            leaves = {n: params[n].detach().requires_grad_(n in diff_names) for n in params}
            task_valid = {t: b.labels[:, j] >= 0 for t, j in zip(tasks, task_index)}
            res = functional_call(model, leaves, (), {"tasks": tasks, "task_valid": task_valid, **b.model_kwargs()},
                                  strict=False)
            loss = task_loss(model, res, b.labels, tasks, task_index, aux_weight)
            if prox_mu:
                loss = loss + prox_mu / 2 * sum(((leaves[n] - stacked[n][d]) ** 2).sum() for n in diff_names)
            grads = torch.autograd.grad(loss, [leaves[n] for n in diff_names], allow_unused=True)
            grads = {n: torch.zeros_like(params[n]) if g is None else g for n, g in zip(diff_names, grads)}
            params.update(opt.step({n: params[n] for n in diff_names}, grads, {}))
        for n in diff_names:
            out[n][d] = params[n]
    return LocalResult(out, counts)
