"""Local training of many devices at once (one edge round of one cluster), vectorised over devices.

The trainable parameters of the devices are *stacked*: ``stacked[name]`` has shape (D, *param.shape), row ``d``
being device ``d``'s copy. :func:`local_train` runs ``tau`` optimiser steps for all devices together with
``torch.func.functional_call`` + ``vmap`` + ``grad``: each device on its own minibatches, each updating only the
modules its row of ``masks`` (D, K) assigns to it (``x[u, k]`` of the plan); the copy of a module a device was
not assigned is returned bit-identical. :func:`local_train_reference` does the same with a plain per-device
loop and ordinary autograd; the tests check that both agree.

Devices are grouped by *signature* (the modalities present and the tasks labelled in their minibatches) and
each group is one ``vmap`` call, so a device runs only the encoders of its modalities and only its tasks'
prompts and heads, exactly as on the device. Optimiser state (momentum, Adam moments) lives for one call (one
edge round) and starts from zero, the usual choice in federated learning.

Typical use by a trainer, per cluster and edge round::

    stacked = stack_params(model, n_devices)                  # or the cluster's current copies
    batches = sample_device_batches(device_tables, tau, batch_size, rng)
    stacked, counts = local_train(model, stacked, plan.train[cluster], batches, tau, lr)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.func import functional_call, grad, vmap

from .model import M3TModel, task_loss
from .table import Batch, MultiModalTable

OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True, eq=False)
class DeviceBatches:
    """Minibatches of D devices for S steps: ``inputs[m]`` (D, S, B, *shape), ``present[m]`` (D, S, B) bool,
    ``labels`` (D, S, B, T) int64 (-1 = no label), and ``encoded[m]`` (D, S, B, n_tokens, d_model) for the
    modalities of pre-encoded tables (:meth:`MultiModalTable.with_encoded`). A device lacking modality ``m``
    has ``present[m]`` all False (and zeros in ``inputs[m]``, never used)."""

    inputs: dict[str, Tensor]
    present: dict[str, Tensor]
    labels: Tensor
    encoded: dict[str, Tensor] = field(default_factory=dict)

    @property
    def n_devices(self) -> int:
        """D, devices."""
        return int(self.labels.shape[0])

    @property
    def n_steps(self) -> int:
        """S, steps held."""
        return int(self.labels.shape[1])

    @property
    def batch_size(self) -> int:
        """B, samples per step."""
        return int(self.labels.shape[2])

    def step(self, d: int, s: int, modalities: Sequence[str] | None = None) -> Batch:
        """Device ``d``'s minibatch of step ``s`` as a :class:`Batch` (keys limited to ``modalities``)."""
        keys = list(self.present) if modalities is None else list(modalities)
        return Batch({m: self.inputs[m][d, s] for m in keys if m in self.inputs},
                     {m: self.present[m][d, s] for m in keys}, self.labels[d, s],
                     {m: self.encoded[m][d, s] for m in keys if m in self.encoded})

    def select(self, devices) -> "DeviceBatches":
        """The batches of a subset of devices (index array)."""
        idx = torch.as_tensor(np.asarray(devices, dtype=np.int64))
        return DeviceBatches({m: x[idx] for m, x in self.inputs.items()},
                             {m: p[idx] for m, p in self.present.items()}, self.labels[idx],
                             {m: x[idx] for m, x in self.encoded.items()})


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
    goes through reshuffled passes of its data). ``rng`` is a numpy Generator or a seed."""
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    if not tables:
        raise ValueError("tables: need at least one device table")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps = {steps}, batch_size = {batch_size}: both must be >= 1")
    names = tables[0].modality_names
    if len({t.encoded for t in tables}) > 1:
        raise ValueError("tables: all device tables must be pre-encoded for the same modalities")
    union = [m for j, m in enumerate(names) if any(t.has_modalities()[j] for t in tables)]
    need = steps * batch_size
    per_dev = []
    for u, t in enumerate(tables):
        if len(t) == 0:
            raise ValueError(f"tables[{u}] ({t.name}) has no rows: a device without data cannot train")
        reps = -(-need // len(t))
        rows = np.concatenate([rng.permutation(len(t)) for _ in range(reps)])[:need]
        per_dev.append(t.batch(rows, modalities=union))

    def stack(key):
        return {m: torch.stack([getattr(b, key)[m] for b in per_dev]).unflatten(1, (steps, batch_size))
                for m in union if m in getattr(per_dev[0], key)}

    labels = torch.stack([b.labels for b in per_dev]).unflatten(1, (steps, batch_size))
    return DeviceBatches(stack("inputs"), stack("present"), labels, stack("encoded"))


def stack_params(model: M3TModel, n_devices: int, names: Sequence[str] | None = None) -> dict[str, Tensor]:
    """``n_devices`` copies of the model's trainable parameters (or of ``names``): {name: (D, *shape)}."""
    params = dict(model.named_parameters())
    names = model.trainable_names() if names is None else tuple(names)
    return {n: params[n].detach().unsqueeze(0).repeat(n_devices, *([1] * params[n].dim())).clone() for n in names}


def unstack_params(stacked: Mapping[str, Tensor], d: int) -> dict[str, Tensor]:
    """Device ``d``'s copy: {name: tensor}."""
    return {n: x[d] for n, x in stacked.items()}


def param_masks(model: M3TModel, stacked: Mapping[str, Tensor], masks, module_names: Sequence[str] | None = None
                ) -> dict[str, Tensor]:
    """Per-parameter (D,) bool masks from the per-module (D, K) mask (columns named by ``module_names``,
    default :meth:`M3TModel.module_names`; a module not among them is never updated)."""
    module_names = tuple(model.module_names() if module_names is None else module_names)
    masks = torch.as_tensor(np.asarray(masks, dtype=bool))
    d = _n_devices(stacked)
    if masks.shape != (d, len(module_names)):
        raise ValueError(f"masks.shape = {tuple(masks.shape)}: must be ({d} devices, {len(module_names)} modules)")
    col = {k: i for i, k in enumerate(module_names)}
    none = torch.zeros(d, dtype=torch.bool)
    return {n: masks[:, col[model.module_of(n)]] if model.module_of(n) in col else none for n in stacked}


def _n_devices(stacked: Mapping[str, Tensor]) -> int:
    if not stacked:
        raise ValueError("stacked: no parameters given (nothing to train)")
    sizes = {int(x.shape[0]) for x in stacked.values()}
    if len(sizes) != 1:
        raise ValueError(f"stacked parameters disagree on the number of devices: {sorted(sizes)}")
    return sizes.pop()


def _signatures(model: M3TModel, batches: DeviceBatches, tau: int) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """Per device: (modalities present in its first tau batches, tasks labelled in them), in model order."""
    mods = [m for m in model.modality_names if m in batches.present]
    has_m = {m: batches.present[m][:, :tau].flatten(1).any(1) for m in mods}
    has_t = (batches.labels[:, :tau] >= 0).flatten(1, 2).any(1)  # (D, T)
    out = []
    for d in range(batches.n_devices):
        out.append((tuple(m for m in mods if bool(has_m[m][d])),
                    tuple(t for j, t in enumerate(model.task_names) if bool(has_t[d, j]))))
    return out


def _check(model: M3TModel, stacked, batches: DeviceBatches, tau: int, optimizer: str):
    params = dict(model.named_parameters())
    for m in batches.encoded:
        if any(model.module_of(n) == f"encoder:{m}" for n in stacked):
            raise ValueError(f"batches carry cached tokens of modality {m!r} but encoder:{m} is being trained")
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


class _Optim:
    """Functional SGD (momentum, weight decay) / Adam on tensors with an arbitrary leading device axis."""

    def __init__(self, kind, lr, momentum, weight_decay, betas, eps):
        self.kind, self.lr, self.momentum, self.wd, self.betas, self.eps = kind, lr, momentum, weight_decay, betas, eps
        self.state: dict[str, tuple] = {}
        self.t = 0

    def step(self, params: dict[str, Tensor], grads: dict[str, Tensor], masks: dict[str, Tensor]) -> dict[str, Tensor]:
        self.t += 1
        out = {}
        for n, g in grads.items():
            p = params[n]
            if self.wd:
                g = g + self.wd * p
            if self.kind == "sgd":
                if self.momentum:
                    buf = g if n not in self.state else self.momentum * self.state[n][0] + g
                    self.state[n] = (buf,)
                    g = buf
                new = p - self.lr * g
            else:
                b1, b2 = self.betas
                m, v = self.state.get(n, (torch.zeros_like(p), torch.zeros_like(p)))
                m = b1 * m + (1 - b1) * g
                v = b2 * v + (1 - b2) * g * g
                self.state[n] = (m, v)
                m_hat = m / (1 - b1 ** self.t)
                v_hat = v / (1 - b2 ** self.t)
                new = p - self.lr * m_hat / (v_hat.sqrt() + self.eps)
            mask = masks[n].view(-1, *([1] * (p.dim() - 1))) if p.dim() > masks[n].dim() else masks[n]
            out[n] = torch.where(mask, new, p)
        return out


def _loss_fn(model: M3TModel, mods: tuple[str, ...], tasks: tuple[str, ...], aux_weight: float):
    task_index = [model.task_names.index(t) for t in tasks]

    def loss(diff: dict[str, Tensor], fixed: dict[str, Tensor], inputs, present, labels, encoded) -> Tensor:
        task_valid = {t: labels[..., j] >= 0 for t, j in zip(tasks, task_index)}
        out = functional_call(model, {**fixed, **diff}, (inputs, present),
                              {"tasks": tasks, "task_valid": task_valid, "encoded": encoded}, strict=False)
        return task_loss(model, out, labels, tasks, task_index, aux_weight)

    return loss


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


def _prepare(model, stacked, masks, batches, tau, module_names, optimizer):
    tau = batches.n_steps if tau is None else int(tau)
    _check(model, stacked, batches, tau, optimizer)
    pmask = param_masks(model, stacked, masks, module_names)
    trains = torch.stack([pmask[n] for n in stacked], dim=1).any(dim=1) if stacked else torch.zeros(0, dtype=torch.bool)
    sigs = _signatures(model, batches, tau)
    counts = (batches.labels[:, :tau] >= 0).flatten(1, 2).sum(1).to(torch.int64)  # (D, T)
    counts = counts * trains[:, None].to(torch.int64)
    return tau, pmask, trains, sigs, counts


# --------------------------------------------------------------------------- the vectorised path
def local_train(model: M3TModel, stacked: Mapping[str, Tensor], masks, batches: DeviceBatches, tau: int | None = None,
                lr: float = 0.05, *, optimizer: str = "sgd", momentum: float = 0.0, weight_decay: float = 0.0,
                betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, aux_weight: float | None = None,
                module_names: Sequence[str] | None = None, chunk_size: int | None = None,
                encoder_chunk: int = 1024) -> LocalResult:
    """``tau`` local optimiser steps for D devices at once (vmap over devices within each signature group).

    ``stacked`` {param name: (D, *shape)} the devices' copies of the parameters to train (others come from
    ``model``); ``masks`` (D, K) bool, device d may update module k (columns ``module_names``, default
    ``model.module_names()``); ``batches`` the devices' minibatches (its first ``tau`` steps are used, default
    all); ``lr`` learning rate; ``optimizer`` ``"sgd"`` (``momentum``, ``weight_decay``) or ``"adam"``;
    ``aux_weight`` weight of the MoE balance loss (default the model's). ``chunk_size`` bounds how many devices
    one vmap call processes at once (memory). Encoders that are not stacked (frozen, shared by all devices) run
    once for all devices and steps, ``encoder_chunk`` samples at a time, outside the vmapped gradient.
    Returns :class:`LocalResult` (new stacked params, (D, T) counts). The inputs are not modified; a masked
    module's copy is returned bit-identical.
    """
    tau, pmask, trains, sigs, counts = _prepare(model, stacked, masks, batches, tau, module_names, optimizer)
    aux_weight = model.cfg.aux_loss_weight if aux_weight is None else aux_weight
    out = {n: x.clone() for n, x in stacked.items()}
    groups: dict[tuple, list[int]] = {}
    for d, sig in enumerate(sigs):
        if bool(trains[d]) and sig[0] and sig[1]:
            groups.setdefault(sig, []).append(d)
    for (mods, tasks), devs in groups.items():
        idx = torch.tensor(devs, dtype=torch.int64)
        params = {n: x[idx] for n, x in stacked.items()}
        gmask = {n: m[idx] for n, m in pmask.items()}
        diff_names = [n for n in params if bool(gmask[n].any())]
        fixed = {n: params[n] for n in params if n not in diff_names}
        diff = {n: params[n] for n in diff_names}
        dmask = {n: gmask[n] for n in diff_names}
        gb = batches.select(idx)
        # encoders that are the model's own (not stacked) are the same for every device: run them once, batched
        shared = [m for m in mods if not any(model.module_of(n) == f"encoder:{m}" for n in stacked)]
        encoded = {m: gb.encoded[m] for m in shared if m in gb.encoded}
        encoded.update(_shared_tokens(model, gb, [m for m in shared if m not in encoded], tau, encoder_chunk))
        grad_fn = vmap(grad(_loss_fn(model, mods, tasks, aux_weight)), in_dims=0, chunk_size=chunk_size)
        opt = _Optim(optimizer, lr, momentum, weight_decay, betas, eps)
        for s in range(tau):
            inputs = {m: gb.inputs[m][:, s] for m in mods if m not in shared}
            present = {m: gb.present[m][:, s] for m in mods}
            enc_s = {m: encoded[m][:, s] for m in shared}
            grads = grad_fn(diff, fixed, inputs, present, gb.labels[:, s], enc_s)
            diff = opt.step(diff, grads, dmask)
        for n, x in diff.items():
            out[n][idx] = x
    return LocalResult(out, counts)


# --------------------------------------------------------------------------- the reference path
def local_train_reference(model: M3TModel, stacked: Mapping[str, Tensor], masks, batches: DeviceBatches,
                          tau: int | None = None, lr: float = 0.05, *, optimizer: str = "sgd", momentum: float = 0.0,
                          weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                          aux_weight: float | None = None, module_names: Sequence[str] | None = None) -> LocalResult:
    """The same computation as :func:`local_train`, one device after the other with plain autograd."""
    tau, pmask, trains, sigs, counts = _prepare(model, stacked, masks, batches, tau, module_names, optimizer)
    aux_weight = model.cfg.aux_loss_weight if aux_weight is None else aux_weight
    out = {n: x.clone() for n, x in stacked.items()}
    for d, (mods, tasks) in enumerate(sigs):
        if not (bool(trains[d]) and mods and tasks):
            continue
        task_index = [model.task_names.index(t) for t in tasks]
        params = {n: x[d].clone() for n, x in stacked.items()}
        diff_names = [n for n in params if bool(pmask[n][d])]
        masks_d = {n: torch.ones((), dtype=torch.bool) for n in diff_names}
        opt = _Optim(optimizer, lr, momentum, weight_decay, betas, eps)
        for s in range(tau):
            b = batches.step(d, s, mods)
            leaves = {n: params[n].detach().requires_grad_(n in diff_names) for n in params}
            task_valid = {t: b.labels[:, j] >= 0 for t, j in zip(tasks, task_index)}
            res = functional_call(model, leaves, (b.inputs, b.present),
                                  {"tasks": tasks, "task_valid": task_valid, "encoded": b.encoded or None},
                                  strict=False)
            loss = task_loss(model, res, b.labels, tasks, task_index, aux_weight)
            grads = torch.autograd.grad(loss, [leaves[n] for n in diff_names], allow_unused=True)
            grads = {n: torch.zeros_like(params[n]) if g is None else g for n, g in zip(diff_names, grads)}
            new = opt.step({n: params[n] for n in diff_names}, grads, masks_d)
            params.update(new)
        for n in diff_names:
            out[n][d] = params[n]
    return LocalResult(out, counts)
