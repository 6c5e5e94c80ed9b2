"""The hierarchical federated trainer: runs a :class:`~hffm_opt.plan.Plan` on the real model, on a simulated clock.

Semantics (section 3 and 6 of the design). The state is one copy of the trainable parameters per cluster (edge
server): after each edge round every device of a cluster holds its cluster's aggregate. Per edge round:

1. every participating device (not a straggler of ``evaluate(scenario, plan)``, trains at least one module,
   holds data) starts from its cluster's copy and trains exactly its modules ``plan.train[u]`` for ``tau``
   local steps of ``batch`` samples (:func:`~hffm_opt.learners.local.local_train`: many devices per vmapped call);
2. module-wise, sample-weighted aggregation inside each cluster: module ``k`` of cluster ``e`` becomes the
   weighted mean of the copies of the participants of ``e`` that trained ``k``, weight ``n_{u,t}`` (training
   rows of task ``t``) for ``prompt:t``/``head:t`` and ``n_u`` (all training rows) for every other module; a module
   nobody in the cluster trained keeps its value. Aggregation at the D2D aggregator or at the edge gives the
   same numbers (only the price differs, which ``evaluate`` knows);
3. after every ``plan.e_agg``-th edge round, each module whose tier is ``cloud`` in a cluster is averaged across
   those clusters, weighted by the clusters' total weights of that module, and sent back to them. Modules whose
   tier is below the cloud (edge-only plans, cluster-local experts) never leave their cluster. A star plan
   (``e_agg`` = 1, every tier cloud) is therefore a global weighted average every round.

The simulated clock and energy advance by ``evaluate``'s figures (``Metrics.round_end_s``,
``Metrics.round_energy_j``, repeated period after period); the trainer never prices anything itself. Accuracy
on the global test set is that of the model a device holds, i.e. the mean over clusters of the cluster model's
accuracy weighted by cluster size; personalised accuracy is the mean over devices of their cluster model's
accuracy on their own test rows (mean over their tasks). Accuracies are in percent.

Every tensor of training, aggregation and evaluation lives on ``config.device`` (the CPU by default, CUDA on
request); the devices' rows are packed in contiguous tensors (:class:`~hffm_opt.learners.packed.PackedTables`) and
an edge round draws all its minibatch rows at once; the caller's model and tables are never moved.

A checkpoint (atomic, :func:`hffm_opt._io.atomic_path`) is written after every global round and at the end;
calling :func:`train` again with the same inputs and ``checkpoint_dir`` resumes from it and yields a
bit-identical :class:`History`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from hffm_opt._io import atomic_path, atomic_write
from hffm_opt.evaluate import Metrics, evaluate
from hffm_opt.network.scenario import Scenario
from hffm_opt.plan import CLOUD, Plan

from .device import check_device_name, devices_per_call, resolve_device
from .evaluation import accuracy, correct, device_accuracy, distinct
from .local import OPTIMIZERS, local_train
from .model import M3TModel
from .packed import PackedTables
from .table import MultiModalTable

CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class TrainConfig:
    """How to train (the plan says who trains what, where it is aggregated, and what it costs).

    - ``rounds`` (20): edge rounds to run (>= 1); a global round is ``plan.e_agg`` edge rounds.
    - ``lr`` (0.01): learning rate of the local optimiser; ``optimizer`` (``"adam"``, or ``"sgd"`` with
      ``momentum`` and ``weight_decay``, both 0); its state restarts every edge round.
    - ``local_steps`` (tau) and ``batch_size`` (samples per step), None = the plan's ``local_steps`` and
      ``batch_size``; either way ``evaluate`` prices the plan with the values actually run.
    - ``seed`` (0): seeds the minibatch draws (the only randomness of training).
    - ``eval_every`` (1): evaluate every this many edge rounds and at the last one (0 = never, for benchmarks);
      ``personalised`` (True): also evaluate each device's cluster model on its local test rows.
    - ``eval_batch`` (2048): rows per evaluation forward pass; ``devices_per_call`` (None = automatic: 256 on a
      CPU, on a GPU as many as fit in half its free memory): most devices one :func:`local_train` call trains.
    - ``device`` (``"cpu"``): the torch device every tensor of training, aggregation and evaluation lives on:
      ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (CUDA when available); CUDA where there is none is a
      ``ConfigError``. Results on the CPU and on CUDA agree to float tolerance.
    """

    rounds: int = 20
    lr: float = 1e-2
    optimizer: str = "adam"
    momentum: float = 0.0
    weight_decay: float = 0.0
    local_steps: int | None = None
    batch_size: int | None = None
    seed: int = 0
    eval_every: int = 1
    personalised: bool = True
    eval_batch: int = 2048
    devices_per_call: int | None = None
    device: str = "cpu"

    def __post_init__(self):
        for name in ("rounds", "eval_batch"):
            _require(getattr(self, name) >= 1, name, getattr(self, name), "must be an integer >= 1")
        for name in ("local_steps", "batch_size", "devices_per_call"):
            v = getattr(self, name)
            _require(v is None or v >= 1, name, v, "must be None or an integer >= 1")
        _require(self.eval_every >= 0, "eval_every", self.eval_every, "must be >= 0 (0 = never evaluate)")
        _require(self.lr > 0 and math.isfinite(self.lr), "lr", self.lr, "must be a finite number > 0")
        _require(self.optimizer in OPTIMIZERS, "optimizer", self.optimizer, f"must be one of {OPTIMIZERS}")
        _require(self.momentum >= 0 and self.weight_decay >= 0, "momentum/weight_decay",
                 (self.momentum, self.weight_decay), "must be >= 0")
        check_device_name(self.device)


def _require(ok: bool, name: str, value, rule: str) -> None:
    if not ok:
        raise ValueError(f"{name} = {value!r}: {rule}")


@dataclass(frozen=True, eq=False)
class FederatedData:
    """What training needs besides the scenario and the plan.

    ``model``: the starting model (pre-trained frozen core, fresh trainable modules; never modified);
    ``train``/``test``: each device's training and local test table (device index order of the scenario), a
    sequence of tables or one :class:`~hffm_opt.learners.packed.PackedTables`, ideally pre-encoded
    (:meth:`MultiModalTable.with_encoded`); ``global_test``: the global test set.
    """

    model: M3TModel
    train: tuple[MultiModalTable, ...]
    test: tuple[MultiModalTable, ...]
    global_test: MultiModalTable

    def __post_init__(self):
        tables = []
        for name in ("train", "test"):
            value = getattr(self, name)
            value = value if isinstance(value, PackedTables) else tuple(value)
            object.__setattr__(self, name, value)
            tables += [value] if isinstance(value, PackedTables) else list(value)
        _require(len(self.train) == len(self.test), "len(test)", len(self.test),
                 f"must equal len(train) = {len(self.train)} (one table per device)")
        for t in (*tables, self.global_test):
            _require(t.task_names == self.model.task_names, f"{t.name}.tasks", t.task_names,
                     f"must be the model's tasks {self.model.task_names}")


# --------------------------------------------------------------------------- history
@dataclass
class History:
    """Per-edge-round records of a training run and what they were produced from (``meta``).

    Each record: ``round`` (1-based edge round), ``global_round``, ``time_s`` (simulated, cumulative, s),
    ``energy_j`` (cumulative, J), ``participants``, ``bytes_by_tier`` (``d2d``, ``edge``, ``cloud``: bytes moved in
    that round, the evaluator's per-period bits with the backhaul in the period's last round and the rest spread
    evenly), ``evaluated`` and, when evaluated, ``accuracy`` (percent, mean over tasks, global test set),
    ``accuracy_by_task`` (percent) and ``personalised_accuracy`` (percent); None when not evaluated.
    """

    records: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def _evaluated(self) -> list[dict]:
        return [r for r in self.records if r["accuracy"] is not None]

    @property
    def final_accuracy(self) -> float | None:
        """Accuracy (percent) of the last evaluated round, None if none was evaluated."""
        ev = self._evaluated()
        return ev[-1]["accuracy"] if ev else None

    def accuracy_at(self, time_s: float | None = None, energy_j: float | None = None) -> float | None:
        """The last evaluated accuracy (percent) reached within ``time_s`` simulated seconds and ``energy_j``
        joules (None = no limit); None if no evaluation falls within the budget."""
        ok = [r for r in self._evaluated() if (time_s is None or r["time_s"] <= time_s)
              and (energy_j is None or r["energy_j"] <= energy_j)]
        return ok[-1]["accuracy"] if ok else None

    def _first_reaching(self, target_pct: float) -> dict | None:
        return next((r for r in self._evaluated() if r["accuracy"] >= target_pct), None)

    def time_to(self, target_pct: float) -> float | None:
        """Simulated time (s) at which the accuracy first reached ``target_pct`` percent, None if never."""
        r = self._first_reaching(target_pct)
        return None if r is None else r["time_s"]

    def energy_to(self, target_pct: float) -> float | None:
        """Cumulative energy (J) when the accuracy first reached ``target_pct`` percent, None if never."""
        r = self._first_reaching(target_pct)
        return None if r is None else r["energy_j"]

    def to_frame(self):
        """The records as a pandas DataFrame (``acc_<task>`` and ``bytes_<tier>`` columns flattened)."""
        import pandas as pd

        rows = []
        for r in self.records:
            flat = {k: v for k, v in r.items() if k not in ("accuracy_by_task", "bytes_by_tier")}
            flat.update({f"acc_{t}": v for t, v in (r["accuracy_by_task"] or {}).items()})
            flat.update({f"bytes_{t}": v for t, v in r["bytes_by_tier"].items()})
            rows.append(flat)
        return pd.DataFrame(rows)

    def to_json(self) -> str:
        """``{"meta": ..., "records": [...]}`` as JSON text."""
        return json.dumps({"meta": self.meta, "records": self.records})

    @classmethod
    def from_json(cls, text: str) -> "History":
        """Inverse of :meth:`to_json`."""
        doc = json.loads(text)
        return cls(records=doc["records"], meta=doc["meta"])

    def save(self, directory, name: str = "history") -> tuple[Path, Path]:
        """Write ``<name>.csv`` and ``<name>.json`` into ``directory`` atomically; returns both paths."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        csv_path, json_path = directory / f"{name}.csv", directory / f"{name}.json"
        atomic_write(csv_path, self.to_frame().to_csv(index=False))
        atomic_write(json_path, self.to_json())
        return csv_path, json_path


# --------------------------------------------------------------------------- the run
def train(scenario: Scenario, plan: Plan, data: FederatedData, config: TrainConfig = TrainConfig(), *,
          progress: Callable[[Iterable], Iterable] | None = None, checkpoint_dir=None,
          on_round: Callable[[dict], None] | None = None) -> History:
    """Train ``data.model`` federatedly under ``plan`` for ``config.rounds`` edge rounds (see the module docstring).

    ``progress`` wraps the iterable of rounds (e.g. ``tqdm``); ``checkpoint_dir`` enables checkpoint/resume;
    ``on_round(record)`` is called after every edge round with its record (an exception it raises, e.g.
    ``optuna.TrialPruned``, stops training and propagates). Raises ``PlanError`` for an invalid plan and
    ``ValueError`` when the scenario, the plan and the data do not describe the same modules and devices.
    """
    run = _Run(scenario, plan, data, config)
    start = run.resume(checkpoint_dir) if checkpoint_dir is not None else 0
    rounds = range(start + 1, config.rounds + 1)
    for r in (progress(rounds) if progress is not None else rounds):
        record = run.edge_round(r)
        if checkpoint_dir is not None and (r % plan.e_agg == 0 or r == config.rounds):
            run.checkpoint(checkpoint_dir, r)
        if on_round is not None:
            on_round(record)
    return History([dict(r) for r in run.records if r["round"] <= config.rounds], run.meta())


def training_calls(scenario: Scenario, plan: Plan, data: FederatedData, config: TrainConfig = TrainConfig()
                   ) -> tuple[PackedTables, np.ndarray, int]:
    """What an edge round of :func:`train` works on: every device's training rows (packed, on the run's device),
    the participating devices in the order they are trained (by cluster), and the devices per vectorised call."""
    run = _Run(scenario, plan, data, config)
    devs = np.flatnonzero(run.participants)
    return run.train_data, devs[np.argsort(run.assoc[devs], kind="stable")], int(run.chunk)


class _Run:
    """The state of one training run and its edge round (internal: :func:`train` is the interface)."""

    def __init__(self, scenario: Scenario, plan: Plan, data: FederatedData, config: TrainConfig):
        model = data.model
        names = model.module_names()
        _require(scenario.module_names == names, "scenario.modules", scenario.module_names,
                 f"must be the model's modules {names} (build the scenario from module_catalogue(model))")
        _require(len(data.train) == scenario.n_devices, "len(data.train)", len(data.train),
                 f"must equal the scenario's {scenario.n_devices} devices")
        self.tau = config.local_steps or plan.local_steps
        self.batch = config.batch_size or plan.batch_size
        # priced (and checked) with the local steps and batch size actually run
        self.metrics: Metrics = evaluate(scenario, plan.replace(local_steps=self.tau, batch_size=self.batch))
        frozen = [k for k in names if model.is_frozen(k)]
        trained = [names[k] for k in np.flatnonzero(plan.train.any(axis=0))]
        bad = sorted(set(trained) & set(frozen))
        _require(not bad, "plan.train", bad, "modules frozen in the model cannot be trained")
        self.scenario, self.plan, self.data, self.config = scenario, plan, data, config
        self.device = resolve_device(config.device)
        # the model's frozen parts and every device's rows live on the run's device, in contiguous tensors
        self.model = model if self.device.type == "cpu" else copy.deepcopy(model).to(self.device)
        self.train_data = PackedTables.from_tables(data.train).to(self.device)
        self.assoc = plan.association.astype(np.int64)
        self.n_edges = scenario.n_edges
        self.param_names = model.trainable_names()
        self.param_module = [names.index(model.module_of(n)) for n in self.param_names]
        self.rows = self.train_data.row_counts()
        n_rows = self.rows.astype(float)
        n_task = self.train_data.label_counts().astype(float)
        w = np.repeat(n_rows[:, None], len(names), axis=1)
        for k, name in enumerate(names):
            if model.module_kind(name) in ("prompt", "head"):
                w[:, k] = n_task[:, model.task_names.index(name.split(":", 1)[1])]
        self.participants = (~self.metrics.stragglers) & plan.train.any(axis=1) & (n_rows > 0)
        #: (U, K) aggregation weight of device u for module k (0 = does not contribute)
        self.weights = w * plan.train * self.participants[:, None]
        #: (E, K) total weight of each cluster for each module (the cloud's weights)
        self.cluster_weights = np.zeros((self.n_edges, len(names)))
        np.add.at(self.cluster_weights, self.assoc, self.weights)
        self.clusters = {n: p.detach().unsqueeze(0).repeat(self.n_edges, *([1] * p.dim())).clone()
                         for n, p in self.model.named_parameters() if n in self.param_names}
        self.rng = np.random.default_rng(config.seed)
        self.records: list[dict] = []
        self._signature = ""  # set by resume(), before any checkpoint is written
        self._eval_sizes = np.bincount(self.assoc, minlength=self.n_edges).astype(float)
        self._weights_t = torch.as_tensor(self.weights, dtype=torch.float32, device=self.device)
        self._global_test: MultiModalTable | None = None
        self._tests: PackedTables | None = None
        # devices with the same modalities and tasks train in one vmapped call per chunk
        has = np.concatenate([self.train_data.modality_counts() > 0, n_task > 0], axis=1)
        self._groups = np.unique(has, axis=0, return_inverse=True)[1].reshape(-1)
        self._mods = [m for j, m in enumerate(model.modality_names) if has[:, j].any()]
        cfg = model.cfg
        tokens = cfg.n_prompts * len(cfg.tasks) + sum(m.n_tokens for m in cfg.modalities)
        self.chunk = config.devices_per_call or devices_per_call(
            self.device, tokens, self.batch, cfg.d_model, sum(p.numel() for p in model.parameters() if p.requires_grad))

    # ------------------------------------------------------------------ one edge round
    def edge_round(self, r: int) -> dict:
        """Run edge round ``r`` (1-based): local training, cluster aggregation, cloud aggregation at period ends."""
        self._train_and_aggregate()
        position = (r - 1) % self.plan.e_agg
        if position == self.plan.e_agg - 1:
            self._cloud_aggregate()
        record = self._record(r, position)
        self.records.append(record)
        return record

    def _train_and_aggregate(self) -> None:
        devs = np.flatnonzero(self.participants)
        devs = devs[np.argsort(self.assoc[devs], kind="stable")]
        if devs.size == 0:
            return
        rows = self.train_data.sample(devs, self.tau, self.batch, self.rng)  # every minibatch of the round
        num = {n: torch.zeros_like(x) for n, x in self.clusters.items()}
        den = {n: torch.zeros(self.n_edges, dtype=x.dtype, device=self.device) for n, x in self.clusters.items()}
        start = 0
        while start < devs.size:
            size = self.chunk
            try:
                self._train_chunk(devs[start:start + size], rows[start:start + size], num, den)
            except torch.cuda.OutOfMemoryError:
                if self.chunk <= 1:
                    raise
                torch.cuda.empty_cache()
                self.chunk = max(1, self.chunk // 2)  # retry the same devices in smaller calls
                continue
            start += size
        for n in self.param_names:
            d = den[n].view(-1, *([1] * (num[n].dim() - 1)))
            self.clusters[n] = torch.where(d > 0, num[n] / d.clamp(min=1e-30), self.clusters[n])

    def _train_chunk(self, idx: np.ndarray, rows: np.ndarray, num: dict, den: dict) -> None:
        """Local training of devices ``idx`` (sorted by cluster) on their minibatch ``rows``, then their
        weighted copies added into the clusters' sums ``num``/``den`` (a matmul per parameter: deterministic)."""
        c = self.config
        home = self.assoc[idx]
        home_t = torch.from_numpy(home).to(self.device)
        stacked = {n: x.index_select(0, home_t) for n, x in self.clusters.items()}
        batches = self.train_data.gather(rows, self._mods)
        res = local_train(self.model, stacked, self.plan.train[idx], batches, self.tau, c.lr,
                          optimizer=c.optimizer, momentum=c.momentum, weight_decay=c.weight_decay,
                          module_names=self.scenario.module_names, groups=self._groups[idx])
        homes, inverse = np.unique(home, return_inverse=True)
        onehot = torch.zeros(len(homes), len(idx), dtype=torch.float32, device=self.device)
        onehot[torch.from_numpy(inverse.reshape(-1)).to(self.device), torch.arange(len(idx), device=self.device)] = 1
        w = self._weights_t[torch.from_numpy(idx).to(self.device)]  # (D, K)
        homes_t = torch.from_numpy(homes).to(self.device)
        for n, k in zip(self.param_names, self.param_module):
            wk = onehot * w[:, k]
            x = res.params[n]
            num[n].index_add_(0, homes_t, (wk @ x.reshape(len(idx), -1)).view(len(homes), *x.shape[1:]))
            den[n].index_add_(0, homes_t, wk.sum(dim=1))

    def _cloud_aggregate(self) -> None:
        tier = self.plan.tier
        for n, k in zip(self.param_names, self.param_module):
            to_cloud = tier[:, k] == CLOUD
            w = np.where(to_cloud, self.cluster_weights[:, k], 0.0)
            if w.sum() <= 0:
                continue
            x = self.clusters[n]
            wt = torch.as_tensor(w / w.sum(), dtype=x.dtype, device=x.device).view(-1, *([1] * (x.dim() - 1)))
            mean = (x * wt).sum(dim=0, keepdim=True)
            mask = torch.as_tensor(to_cloud, device=x.device).view(-1, *([1] * (x.dim() - 1)))
            self.clusters[n] = torch.where(mask, mean.expand_as(x), x)

    # ------------------------------------------------------------------ bookkeeping
    def _record(self, r: int, position: int) -> dict:
        m, g = self.metrics, self.plan.e_agg
        done = (r - 1) // g
        time_s = done * m.period_latency_s + float(m.round_end_s[position])
        energy_j = done * m.period_energy_j + float(np.cumsum(m.round_energy_j)[position])
        bits = m.bits_by_part
        last = position == g - 1
        if self.plan.mode == "star":
            per_round = {"d2d": 0.0, "edge": 0.0, "cloud": bits["uplink"] / 8}
        else:
            per_round = {"d2d": bits["d2d"] / 8 / g, "edge": (bits["uplink"] + bits["downlink"]) / 8 / g,
                         "cloud": bits["backhaul"] / 8 if last else 0.0}
        c = self.config
        evaluated = c.eval_every > 0 and (r % c.eval_every == 0 or r == c.rounds)
        record = {"round": r, "global_round": done + 1, "time_s": time_s, "energy_j": energy_j,
                  "participants": int(self.participants.sum()), "bytes_by_tier": per_round, "evaluated": evaluated,
                  "accuracy": None, "accuracy_by_task": None, "personalised_accuracy": None}
        if evaluated:
            record.update(self._evaluate())
        return record

    def _evaluate(self) -> dict:
        """Accuracy of the cluster models on the global test set (all distinct clusters in one vmapped pass) and,
        if configured, each device's cluster model on its own test rows."""
        tasks = self.model.task_names
        if self._global_test is None:  # moved to the run's device at the first evaluation
            self._global_test = self.data.global_test.to(self.device)
            self._tests = PackedTables.from_tables(self.data.test).to(self.device) if self.config.personalised \
                else None
        first, which = distinct(self.clusters)
        pick = torch.from_numpy(first).to(self.device)
        models = {n: x.index_select(0, pick) for n, x in self.clusters.items()}
        ok, labelled = correct(self.model, models, self._global_test, self.config.eval_batch)
        acc = accuracy(ok, labelled)[which]  # (E, T)
        size = self._eval_sizes
        by_task = {t: _pct((acc[:, j] * size).sum() / size.sum()) if np.isfinite(acc[:, j]).all() else None
                   for j, t in enumerate(tasks)}
        valid = [v for v in by_task.values() if v is not None]
        personal = None
        if self._tests is not None:
            dev_acc = device_accuracy(self.model, self.clusters, self.assoc, self._tests, self.config.eval_batch)
            dev_acc = dev_acc[np.isfinite(dev_acc)]
            personal = _pct(float(np.mean(dev_acc))) if dev_acc.size else None
        return {"accuracy": float(np.mean(valid)) if valid else None, "accuracy_by_task": by_task,
                "personalised_accuracy": personal}

    # ------------------------------------------------------------------ checkpoints
    def meta(self) -> dict:
        """What the history was produced from."""
        return {"scheduler": self.plan.scheduler, "mode": self.plan.mode, "e_agg": int(self.plan.e_agg),
                "scenario": self.scenario.name, "n_devices": self.scenario.n_devices,
                "latency_s": self.metrics.latency_s, "energy_j": self.metrics.energy_j,
                "local_steps": self.tau, "batch_size": self.batch, "config": asdict(self.config)}

    def signature(self) -> str:
        """Hash of every input of the run but ``config.rounds`` (a checkpoint is only resumed by the same run):
        plan, configuration, scenario name and modules, data sizes and the starting model's parameters."""
        h = hashlib.sha1()
        cfg = asdict(self.config)
        cfg.pop("rounds")
        h.update(json.dumps({"plan": self.plan.to_dict(), "config": cfg, "scenario": self.scenario.name,
                             "modules": self.scenario.module_names, "devices": self.scenario.n_devices,
                             "rows": self.rows.tolist()}, sort_keys=True, default=str).encode())
        for n, p in self.model.named_parameters():
            h.update(p.detach().cpu().numpy().tobytes())
        return h.hexdigest()

    def checkpoint(self, directory, r: int) -> None:
        """Write the state after edge round ``r`` atomically into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        clusters = {n: x.cpu() for n, x in self.clusters.items()}  # portable: a CPU copy whatever the device
        state = {"signature": self._signature, "round": r, "clusters": clusters,
                 "rng": json.dumps(self.rng.bit_generator.state), "records": json.dumps(self.records)}
        with atomic_path(directory / CHECKPOINT) as tmp:
            torch.save(state, tmp)

    def resume(self, directory) -> int:
        """Load the checkpoint in ``directory`` if there is one; returns the last edge round it holds (0 = none)."""
        self._signature = self.signature()
        path = Path(directory) / CHECKPOINT
        if not path.exists():
            return 0
        from hffm_opt.errors import CheckpointError

        afresh = "delete it, or start afresh with hffm-opt train --restart"
        try:  # truncated, corrupted or not a checkpoint: zip, pickle, torch, key, type and JSON errors alike
            state = torch.load(path, weights_only=True)
            signature, last, clusters = state["signature"], int(state["round"]), dict(state["clusters"])
            rng, records = json.loads(state["rng"]), json.loads(state["records"])
        except Exception as exc:  # noqa: BLE001
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
            raise CheckpointError(f"checkpoint_dir = {str(directory)!r}: the checkpoint {str(path)!r} is unreadable "
                                  f"({reason}); {afresh}") from None
        if signature != self._signature:
            raise CheckpointError(f"checkpoint_dir = {str(directory)!r}: the checkpoint {str(path)!r} was written by a "
                                  f"run with other inputs (scenario, plan, configuration or data); use another --out, "
                                  f"or {afresh}")
        self.clusters = {n: x.to(self.device).clone() for n, x in clusters.items()}
        self.rng.bit_generator.state = rng
        self.records = records
        return last


def _pct(fraction: float) -> float:
    return 100.0 * float(fraction)
