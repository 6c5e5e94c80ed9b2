"""Central (non-federated) training: the foundation-model pre-training stand-in, the centralised upper
reference, and a linear-probe baseline on the frozen features.

Units: seconds for time limits; accuracies are fractions in [0, 1] over the rows labelled for a task.
"""

from __future__ import annotations

import math
import time
from typing import Sequence

import numpy as np
import torch

from hffm_opt._io import atomic_path
from hffm_opt.errors import ConfigError

from .benchmarks import Benchmark
from .cache import cache_dir
from .device import one_torch_thread, resolve_device
from .model import M3TModel, task_loss
from .pretraining import contrastive_pretrain, masked_pretrain
from .table import MultiModalTable


@torch.no_grad()
def evaluate_accuracy(model: M3TModel, table: MultiModalTable, batch_size: int = 512,
                      tasks: Sequence[str] | None = None) -> dict[str, float]:
    """Per-task accuracy of ``model`` on ``table`` (rows labelled for the task; NaN for a task with none), on the
    model's device."""
    table = table.to(next(model.parameters()).device)
    tasks = model.task_names if tasks is None else tuple(tasks)
    cols = [model.task_names.index(t) for t in tasks]
    correct = np.zeros(len(tasks))
    total = np.zeros(len(tasks))
    for b in table.loader(batch_size):
        out = model(**b.model_kwargs(), tasks=tasks)
        for i, (t, j) in enumerate(zip(tasks, cols)):
            y = b.labels[:, j]
            ok = y >= 0
            correct[i] += (out.logits[t].argmax(-1)[ok] == y[ok]).sum().item()
            total[i] += ok.sum().item()
    return {t: (correct[i] / total[i] if total[i] else math.nan) for i, t in enumerate(tasks)}


def train_central(model: M3TModel, train: MultiModalTable, *, epochs: float = 1.0, batch_size: int = 16,
                  lr: float = 1e-3, optimizer: str = "adam", weight_decay: float = 0.0, seed: int = 0,
                  time_limit_s: float | None = None, aux_weight: float | None = None, schedule: str = "constant",
                  params: Sequence[torch.nn.Parameter] | None = None, progress: bool = False,
                  device: str | torch.device | None = None) -> dict:
    """Train the model's trainable parameters (or ``params``) on all rows of ``train``, ``batch_size`` rows a
    step (use the federated batch size for a fair comparison), for ``epochs`` passes (fractions allowed) or
    until ``time_limit_s`` seconds of wall time. ``schedule`` ``"constant"`` or ``"cosine"`` (learning rate
    decayed to 0 over the planned steps). ``device`` (``cpu``, ``cuda``, ``auto``; None = where the model is)
    moves the model there first; the rows follow the model. Returns ``{"steps", "seconds", "loss"}`` (mean loss
    of the last 100 steps)."""
    if device is not None:
        model.to(resolve_device(device))
    train = train.to(next(model.parameters()).device)
    aux_weight = model.cfg.aux_loss_weight if aux_weight is None else aux_weight
    params = [p for p in model.parameters() if p.requires_grad] if params is None else list(params)
    if not params:
        raise ConfigError("nothing to train: the model has no trainable parameter")
    if optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    else:
        raise ConfigError(f"optimizer = {optimizer!r}: must be 'adam' or 'sgd'")
    tasks = model.task_names
    cols = list(range(len(tasks)))
    n_steps = int(math.ceil(epochs * len(train) / batch_size))
    if n_steps and len(train) < batch_size:
        raise ConfigError(f"train = {train.name!r}: {len(train)} rows, fewer than batch_size = {batch_size} (only "
                         "full batches are trained)")
    if schedule == "cosine":
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda i: 0.5 * (1.0 + math.cos(math.pi * min(i, n_steps) / max(n_steps, 1))))
    elif schedule == "constant":
        sched = None
    else:
        raise ConfigError(f"schedule = {schedule!r}: must be 'constant' or 'cosine'")
    losses: list[torch.Tensor] = []
    start = time.perf_counter()
    step = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_steps, desc=f"central {train.name}", leave=False)
    epoch = 0
    while step < n_steps:
        for b in train.loader(batch_size, shuffle=True, seed=seed + epoch, drop_last=True):
            tv = {t: b.labels[:, j] >= 0 for t, j in zip(tasks, cols)}
            out = model(**b.model_kwargs(), tasks=tasks, task_valid=tv)
            loss = task_loss(model, out, b.labels, tasks, cols, aux_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            losses.append(loss.detach())  # no host sync per step
            step += 1
            if bar is not None:
                bar.update(1)
            if step >= n_steps or (time_limit_s is not None and time.perf_counter() - start > time_limit_s):
                n_steps = step
                break
        epoch += 1
    if bar is not None:
        bar.close()
    tail = torch.stack(losses[-100:]).mean().item() if losses else math.nan
    return {"steps": step, "seconds": time.perf_counter() - start, "loss": float(tail)}


def pretrain_encoders(model: M3TModel, public: MultiModalTable, *, epochs: float = 12.0, batch_size: int = 32,
                      lr: float = 2e-3, seed: int = 0, modalities: Sequence[str] | None = None,
                      time_limit_s: float | None = None) -> dict[str, dict]:
    """Stage 1 of the supervised :func:`pretrain` (``objective="supervised"``): each encoder of ``modalities``
    (default: the image modalities) alone, with
    temporary linear heads on the max over its tokens, on the tasks that modality can serve alone (tasks whose
    ``requires`` is empty or just that modality), using the ``public`` rows that have the modality and such a
    label. Vector encoders are left out by default: trained alone on a weak single-modality task (easy-VQA's
    question type) they collapse what the joint tasks need (which colour or shape a question asks about).
    Returns per-modality summaries (``{"steps", "seconds", "loss"}``); a modality with no such task is skipped."""
    out = {}
    names = model.modality_names
    if modalities is None:
        modalities = [m.name for m in model.cfg.modalities if m.kind == "image"]
    for j, m in enumerate(names):
        if m not in modalities:
            continue
        tasks = [t for t in model.cfg.tasks if set(t.requires) <= {m}]
        cols = [model.task_names.index(t.name) for t in tasks]
        if not tasks:
            continue
        lab = public.labels[:, cols]
        rows = ((public.index[:, j] >= 0) & (lab >= 0).any(1)).nonzero().flatten().numpy()
        if len(rows) == 0:
            continue
        table = public.subset(rows)
        g = torch.Generator().manual_seed(seed + 7 * j)
        heads = torch.nn.ModuleList(torch.nn.Linear(model.cfg.d_model, t.n_classes) for t in tasks)
        for h in heads:
            torch.nn.init.normal_(h.weight, 0.0, 0.02, generator=g)
            torch.nn.init.zeros_(h.bias)
        enc = model.encoders[m]
        params = list(enc.parameters()) + list(heads.parameters())
        opt = torch.optim.Adam(params, lr=lr)
        n_steps = int(math.ceil(epochs * len(table) / batch_size))
        losses, step, epoch, start = [], 0, 0, time.perf_counter()
        with torch.enable_grad():
            for p in enc.parameters():
                p.requires_grad_(True)
            try:
                while step < n_steps:
                    for b in table.loader(batch_size, shuffle=True, seed=seed + 1000 * j + epoch):
                        tok = enc(b.inputs[m]).amax(dim=1)
                        loss = tok.new_zeros(())
                        for h, c in zip(heads, cols):
                            y = b.labels[:, c]
                            w = (y >= 0).to(tok.dtype)
                            ce = torch.nn.functional.cross_entropy(h(tok), y.clamp(min=0), reduction="none")
                            loss = loss + (ce * w).sum() / w.sum().clamp(min=1.0)
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                        losses.append(loss.detach())  # no host sync per step
                        step += 1
                        if step >= n_steps or (time_limit_s is not None and time.perf_counter() - start > time_limit_s):
                            n_steps = step
                            break
                    epoch += 1
            finally:
                model.apply_freeze()
        tail = torch.stack(losses[-50:]).mean().item() if losses else math.nan
        out[m] = {"steps": step, "seconds": time.perf_counter() - start, "loss": float(tail)}
    return out


OBJECTIVES = ("contrastive", "masked", "supervised")
_ENCODER_OPTIONS = {"contrastive": {"temperature", "encoder_batch_size"}, "masked": {"pool", "decoder_hidden"},
                    "supervised": set()}


def pretrain(model: M3TModel, public: MultiModalTable, *, encoder_epochs: float = 12.0, epochs: float = 8.0,
             batch_size: int = 32, lr: float = 2e-3, seed: int = 0, reset: bool = True, objective: str = "masked",
             mask_ratio: float = 0.5, time_limit_s: float | None = None, progress: bool = False,
             encoder_options: dict | None = None) -> dict:
    """Central pre-training that stands in for the foundation model's pre-training.

    Uses only ``public``, a held-out split that is never given to devices (for easy-VQA, 1,000 of the 4,000
    training images with their questions). ``objective``:

    - ``"masked"`` (default): self-supervised, no label is read
      (:func:`~hffm_opt.learners.pretraining.masked_pretrain`): stage 1 (``encoder_epochs`` passes over the
      items) masked autoencoding of every trainable encoder, stage 2 (``epochs`` passes over the rows) masked
      token modelling through the backbone, ``mask_ratio`` of the input hidden. The frozen core never sees the
      downstream tasks, so a linear probe on its features is far from what the trainable modules reach.
    - ``"contrastive"``: self-supervised, no label is read
      (:func:`~hffm_opt.learners.pretraining.contrastive_pretrain`): stage 1 SimCLR-style contrastive learning of
      every image encoder on two augmented views of each public picture (``encoder_epochs`` passes, 128
      pictures a batch; 40 measured best), stage 2 the same masked token modelling as ``"masked"``.
    - ``"supervised"`` (the former default, kept for comparison): stage 1 (:func:`pretrain_encoders`) each image
      encoder with temporary heads on the tasks the image serves alone (easy-VQA: shape and colour); stage 2
      every module on all the downstream tasks. The frozen core then already solves them (linear probe 95.0 %
      against 98.9 % for central training on easy-VQA).

    Then the configured frozen kinds (default: encoders and backbone, the "foundation model") are frozen again,
    and with ``reset`` the modules federated training will train (prompts, adapters, gate, experts, heads) are
    re-initialised (adapters to the identity), so federated training starts from a pre-trained frozen core and
    fresh task-specific parts. ``time_limit_s`` bounds each stage's wall time (s). ``encoder_options`` go to the
    self-supervised stage 1 (``"masked"``: ``pool``, ``decoder_hidden`` of
    :func:`~hffm_opt.learners.pretraining.masked_pretrain_encoders`; ``"contrastive"``: ``temperature``,
    ``encoder_batch_size``).
    Returns ``{"encoders": per-modality summaries, "joint": summary of stage 2}``.
    """
    if objective not in OBJECTIVES:
        raise ConfigError(f"objective = {objective!r}: must be one of {OBJECTIVES}")
    if not 0.0 < mask_ratio < 1.0:
        raise ConfigError(f"mask_ratio = {mask_ratio!r}: must be in (0, 1)")
    unknown = set(encoder_options or {}) - _ENCODER_OPTIONS[objective]
    if unknown:
        raise ConfigError(f"encoder_options = {encoder_options!r}: {sorted(unknown)} not known to objective "
                          f"{objective!r}; known: {sorted(_ENCODER_OPTIONS[objective])}")
    if objective == "contrastive":
        out = contrastive_pretrain(model, public, encoder_epochs=encoder_epochs, epochs=epochs,
                                   batch_size=batch_size, lr=lr, seed=seed, mask_ratio=mask_ratio,
                                   time_limit_s=time_limit_s, **(encoder_options or {}))
    elif objective == "masked":
        out = masked_pretrain(model, public, encoder_epochs=encoder_epochs, epochs=epochs, batch_size=batch_size,
                              lr=lr, seed=seed, mask_ratio=mask_ratio, time_limit_s=time_limit_s,
                              **(encoder_options or {}))
    else:
        out = _supervised_pretrain(model, public, encoder_epochs=encoder_epochs, epochs=epochs,
                                   batch_size=batch_size, lr=lr, seed=seed, time_limit_s=time_limit_s,
                                   progress=progress)
    if reset:
        model.reset_modules([k for k in model.module_names() if not model.is_frozen(k)], seed=seed + 1)
    return out


def _supervised_pretrain(model: M3TModel, public: MultiModalTable, *, encoder_epochs: float, epochs: float,
                         batch_size: int, lr: float, seed: int, time_limit_s: float | None, progress: bool) -> dict:
    """``objective="supervised"`` of :func:`pretrain`: the downstream tasks' labels on the public split."""
    enc = pretrain_encoders(model, public, epochs=encoder_epochs, batch_size=batch_size, lr=lr, seed=seed,
                            time_limit_s=time_limit_s) if encoder_epochs > 0 else {}
    frozen = model.cfg.frozen_kinds
    ready = set(enc) | {m.name for m in model.cfg.modalities if m.fixed}
    keep_encoders = ready == set(model.modality_names)
    model.apply_freeze(("encoder",) if keep_encoders else ())
    try:
        table = public.with_encoded(model) if keep_encoders and epochs > 0 else public
        joint = train_central(model, table, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                              time_limit_s=time_limit_s, progress=progress) if epochs > 0 else {}
    finally:
        model.apply_freeze(frozen)
    return {"encoders": enc, "joint": joint}


@torch.no_grad()
def frozen_features(model: M3TModel, table: MultiModalTable, batch_size: int = 512) -> np.ndarray:
    """(N, M * d_model) frozen features (:meth:`M3TModel.features`) of every row of ``table``."""
    out = [model.features(**b.model_kwargs()).numpy() for b in table.loader(batch_size)]
    return np.concatenate(out) if out else np.zeros((0, len(model.modality_names) * model.cfg.d_model))


def linear_probe(model: M3TModel, train: MultiModalTable, test: MultiModalTable, *, C: float = 1.0,
                 max_iter: int = 2000, max_rows: int | None = 20000, seed: int = 0) -> dict[str, float]:
    """Baseline: one multinomial logistic regression per task on the frozen features (encoders + backbone,
    no prompts/adapters/MoE, features standardised), trained on at most ``max_rows`` labelled rows of
    ``train`` per task; returns per-task test accuracy."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    f_train, f_test = frozen_features(model, train), frozen_features(model, test)
    pres_tr = train.present.numpy().astype(np.float32)
    pres_te = test.present.numpy().astype(np.float32)
    f_train, f_test = np.hstack([f_train, pres_tr]), np.hstack([f_test, pres_te])
    rng = np.random.default_rng(seed)
    acc = {}
    for j, t in enumerate(model.task_names):
        y_tr, y_te = train.labels[:, j].numpy(), test.labels[:, j].numpy()
        rows = np.flatnonzero(y_tr >= 0)
        if max_rows is not None and len(rows) > max_rows:
            rows = np.sort(rng.choice(rows, max_rows, replace=False))
        te = y_te >= 0
        if len(rows) == 0 or not te.any() or len(np.unique(y_tr[rows])) < 2:
            acc[t] = math.nan
            continue
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
        clf.fit(f_train[rows], y_tr[rows])
        acc[t] = float((clf.predict(f_test[te]) == y_te[te]).mean())
    return acc


_CACHE_VERSION = 6  # bump when a change to the model code changes what pre-training produces (6: one thread)


def pretrained_model(bench: Benchmark, *, seed: int = 0, config: dict | None = None, cache: bool = True,
                     **pretrain_kwargs) -> M3TModel:
    """A model for ``bench`` (``bench.model_config(**config)``, initialised with ``seed``) pre-trained by
    :func:`pretrain` (``pretrain_kwargs``). With ``cache`` the weights are stored in the user cache directory
    (:func:`hffm_opt.learners.cache.cache_dir`) under a key of the benchmark's parameters, the configuration,
    the seed and the pre-training arguments (but ``progress``), and loaded from there the next time. Pre-training
    runs on one torch thread whatever the caller's count (:func:`~.device.one_torch_thread`): a thread count
    changes float rounding, which pre-training amplifies, and the cached model must not depend on which command
    happened to create it."""
    import hashlib
    import json

    cfg = bench.model_config(**(config or {}))
    model = M3TModel(cfg, seed=seed)
    key = json.dumps({"v": _CACHE_VERSION, "bench": bench.name, "params": bench.meta.get("params"),
                      "config": repr(cfg), "seed": seed,
                      "pretrain": {k: v for k, v in pretrain_kwargs.items() if k != "progress"},
                      "torch": torch.__version__},
                     sort_keys=True, default=str)
    path = cache_dir() / f"pretrained_{bench.name}_{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"
    if cache and path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model
    with one_torch_thread():
        pretrain(model, bench.public, seed=seed, **pretrain_kwargs)
    if cache:
        with atomic_path(path) as tmp:
            torch.save(model.state_dict(), tmp)
    return model


def central_vs_linear(bench: Benchmark, *, model: M3TModel | None = None, epochs: float = 2.0,
                      batch_size: int = 16, lr: float = 1e-3, seed: int = 0, time_limit_s: float | None = None,
                      schedule: str = "cosine", cache: bool = True, progress: bool = False,
                      **pretrain_kwargs) -> dict:
    """The centralised reference against the linear baseline on ``bench``.

    The model (``model``, else :func:`pretrained_model` with ``pretrain_kwargs``) is trained centrally on all
    of ``bench.train`` (its trainable modules only, ``batch_size`` rows a step as in federated training,
    ``epochs`` passes or ``time_limit_s`` seconds, learning-rate ``schedule``), and a linear probe is fitted on
    the same frozen features.
    Frozen encoders are evaluated once per item (:meth:`MultiModalTable.with_encoded`). Returns per-task test
    accuracy of both (``"central"``, ``"linear"``), their means over the tasks (``"mean"``) and the gap
    ``mean central - mean linear`` (``"gap"``, accuracy points as a fraction), the training summary and wall
    times (s)."""
    t0 = time.perf_counter()
    if model is None:
        model = pretrained_model(bench, seed=seed, cache=cache, **pretrain_kwargs)
    t1 = time.perf_counter()
    train, test = bench.train.with_encoded(model), bench.test.with_encoded(model)
    probe = linear_probe(model, train, test, seed=seed)
    t2 = time.perf_counter()
    run = train_central(model, train, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                        time_limit_s=time_limit_s, schedule=schedule, progress=progress)
    central = evaluate_accuracy(model, test)
    t3 = time.perf_counter()
    mean = {"central": float(np.nanmean(list(central.values()))), "linear": float(np.nanmean(list(probe.values())))}
    return {"central": central, "linear": probe, "mean": mean, "gap": mean["central"] - mean["linear"], "train": run,
            "seconds": {"pretrain": t1 - t0, "linear": t2 - t1, "central": t3 - t2}}
