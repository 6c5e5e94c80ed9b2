"""The hierarchical federated trainer: runs a :class:`~hffm_opt.plan.Plan` on the real model, on a simulated clock.

Semantics (section 3 and 6 of the design). The state is one copy of the trainable parameters per cluster (edge
server): after each edge round every device of a cluster holds its cluster's aggregate. Per edge round:

0. who takes part: with the defaults every device that trains at least one module, holds data and is not a
   straggler of ``evaluate(scenario, plan)``. With dynamics (:attr:`TrainConfig.dynamic`) the round is realised
   first: available devices (:mod:`~hffm_opt.learners.participation`: Bernoulli or a trace), a sampled fraction
   of them, the round priced by ``evaluate`` on its channel (block fading re-solves the continuous part,
   :mod:`~hffm_opt.learners.dynamics`), and that round's stragglers dropped;
1. every participating device starts from its cluster's copy and trains exactly its modules ``plan.train[u]``
   for ``tau`` local steps of ``batch`` samples (:func:`~hffm_opt.learners.local.local_train`: many devices per
   vmapped call; FedProx with ``prox_mu`` > 0);
2. module-wise, sample-weighted aggregation inside each cluster: module ``k`` of cluster ``e`` becomes the
   weighted mean of the copies of the participants of ``e`` that trained ``k``, weight ``n_{u,t}`` (training
   rows of task ``t``) for ``prompt:t``/``head:t`` and ``n_u`` (all training rows) for every other module, passed
   through the edge tier's server optimiser (:mod:`~hffm_opt.learners.server`; FedAvg: the mean itself); a module
   nobody in the cluster trained keeps its value. Aggregation at the D2D aggregator or at the edge gives the
   same numbers (only the price differs, which ``evaluate`` knows);
3. after every ``plan.e_agg``-th edge round, each module whose tier is ``cloud`` in a cluster is averaged across
   those clusters, weighted by the clusters' total weights of that module (of the devices that took part in the
   period), passed through the cloud tier's server optimiser (its ``old`` model: the global model of the last
   cloud aggregation) and sent back to them. Modules whose tier is below the cloud (edge-only plans,
   cluster-local experts) never leave their cluster. A star plan (``e_agg`` = 1, every tier cloud) is therefore
   a global weighted average every round.

The simulated clock and energy advance by ``evaluate``'s figures of the round (``Metrics.round_end_s``,
``Metrics.round_energy_j`` of the plan, repeated period after period, or of each realised round); the trainer
never prices anything itself. Evaluation (on ``data.global_test``, or ``data.validation`` with
``eval_split="validation"``): ``accuracy`` is the mean over clusters of the cluster model's accuracy weighted by
cluster size; ``served_accuracy`` the mean over devices of the accuracy, on the device's own tasks, of the model
that serves it (its cluster's copy: after a cloud aggregation the global model for the cloud-tier modules);
personalised accuracy the mean over devices of their cluster model's accuracy on their own test rows (mean over
their tasks). Accuracies are in percent.

Every tensor of training, aggregation and evaluation lives on ``config.device`` (the CPU by default, CUDA on
request); the devices' rows are packed in contiguous tensors (:class:`~hffm_opt.learners.packed.PackedTables`) and
an edge round draws all its minibatch rows at once; the caller's model and tables are never moved. On a CPU with
several torch threads the vectorised calls of an edge round run at once in forked worker processes, one per core
(:mod:`~hffm_opt.learners.workers`), which the run stops when it ends, fails or is interrupted.
Randomness: the minibatch rows come from a generator seeded with ``config.seed``; fading, availability and
sampling from their own streams of the same seed (:func:`~hffm_opt.learners.participation.stream`).

A checkpoint (atomic, :func:`hffm_opt._io.atomic_path`) is written after every global round and at the end; it
holds the cluster copies, every generator, the server optimisers' state and the realised rounds' state, and
calling :func:`train` again with the same inputs and ``checkpoint_dir`` resumes from it and yields a
bit-identical :class:`History`.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import asdict

import numpy as np
import torch

from hffm_opt.evaluate import Metrics, evaluate
from hffm_opt.network.scenario import Scenario
from hffm_opt.plan import CLOUD, Plan

from . import checkpoint
from .checkpoint import CHECKPOINT
from .config import FederatedData, TrainConfig, _require
from .device import cpu_workers, devices_per_call, one_torch_thread, resolve_device, waves
from .dynamics import RoundPricer
from .evaluation import accuracy, correct, device_accuracy, distinct, seeded_rows, served_accuracy
from .history import History
from .local import local_train
from .packed import PackedTables
from .participation import Participation
from .server import server_optimizer
from .table import MultiModalTable
from .workers import ForkedWorkers, fork_available, shared_zeros

__all__ = ["CHECKPOINT", "FederatedData", "History", "TrainConfig", "learning_key", "reclock", "train", "train_plans",
           "training_calls"]

EVAL_SUBSET_STREAM = 7  # the random stream (with the config's seed) that draws the ``eval_rows`` subset


# --------------------------------------------------------------------------- the run
def train(scenario: Scenario, plan: Plan, data: FederatedData, config: TrainConfig = TrainConfig(), *,
          progress: Callable[[Iterable], Iterable] | None = None, checkpoint_dir=None,
          on_round: Callable[[dict], None] | None = None) -> History:
    """Train ``data.model`` federatedly under ``plan`` for ``config.rounds`` edge rounds (see the module docstring).

    ``progress`` wraps the iterable of rounds (e.g. ``tqdm``); ``checkpoint_dir`` enables checkpoint/resume;
    ``on_round(record)`` is called after every edge round with its record (an exception it raises, e.g.
    ``optuna.TrialPruned``, stops training and propagates). Raises ``PlanError`` for an invalid plan,
    ``ConfigError`` when the scenario, the plan, the data and the configuration do not describe the same modules
    and devices (or ``eval_split="validation"`` without ``data.validation``), ``CheckpointError`` for a checkpoint
    of another run.
    """
    run = _Run(scenario, plan, data, config)
    try:
        start = checkpoint.resume(run, checkpoint_dir) if checkpoint_dir is not None else 0
        rounds = range(start + 1, config.rounds + 1)
        for r in (progress(rounds) if progress is not None else rounds):
            record = run.edge_round(r)
            if checkpoint_dir is not None and (r % plan.e_agg == 0 or r == config.rounds):
                checkpoint.save(run, checkpoint_dir, r)
            if on_round is not None:
                on_round(record)
    finally:
        run.close()
    return History([dict(r) for r in run.records if r["round"] <= config.rounds], run.meta())


def training_calls(scenario: Scenario, plan: Plan, data: FederatedData, config: TrainConfig = TrainConfig()
                   ) -> tuple[PackedTables, np.ndarray, list[list[slice]]]:
    """What an edge round of :func:`train` works on: every device's training rows (packed, on the run's device),
    the participating devices in the order they are trained (by cluster), and the waves of vectorised calls (slices
    of those devices; the calls of a wave run at once, one per CPU core)."""
    run = _Run(scenario, plan, data, config)
    devs = np.flatnonzero(run.participants)
    order = devs[np.argsort(run.assoc[devs], kind="stable")]
    return run.train_data, order, waves(devs.size, run.chunk, run.workers)


class _Run:
    """The state of one training run and its edge round (internal: :func:`train` is the interface)."""

    def __init__(self, scenario: Scenario, plan: Plan, data: FederatedData, config: TrainConfig):
        model = data.model
        names = model.module_names()
        _require(scenario.module_names == names, "scenario.modules", scenario.module_names,
                 f"must be the model's modules {names} (build the scenario from module_catalogue(model))")
        _require(len(data.train) == scenario.n_devices, "len(data.train)", len(data.train),
                 f"must equal the scenario's {scenario.n_devices} devices")
        _require(config.eval_split != "validation" or data.validation is not None, "eval_split", config.eval_split,
                 "needs data.validation (a held-out validation table), which is None")
        self.tau = config.local_steps or plan.local_steps
        self.batch = config.batch_size or plan.batch_size
        # priced (and checked) with the local steps and batch size actually run
        as_run = plan.replace(local_steps=self.tau, batch_size=self.batch)
        self.metrics: Metrics = evaluate(scenario, as_run)
        frozen = [k for k in names if model.is_frozen(k)]
        trained = [names[k] for k in np.flatnonzero(plan.train.any(axis=0))]
        bad = sorted(set(trained) & set(frozen))
        _require(not bad, "plan.train", bad, "modules frozen in the model cannot be trained")
        self.scenario, self.plan, self.data, self.config = scenario, plan, data, config
        self.device = resolve_device(config.device)
        # the model's frozen parts and every device's rows live on the run's device, in contiguous tensors
        self.model = model if self.device.type == "cpu" else copy.deepcopy(model).to(self.device)
        self.train_data = PackedTables.from_tables(data.train).to(self.device).with_stream(self.model)
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
        #: (U,) devices that can take part at all: they train a module and hold training rows
        self.eligible = plan.train.any(axis=1) & (n_rows > 0)
        self.participants = (~self.metrics.stragglers) & self.eligible
        self._w_plan = w * plan.train
        #: (U, K) aggregation weight of device u for module k this round (0 = does not contribute)
        self.weights = self._w_plan * self.participants[:, None]
        self.seen = np.zeros(scenario.n_devices, bool)  # took part in a round of the current period
        self.clusters = {n: p.detach().unsqueeze(0).repeat(self.n_edges, *([1] * p.dim())).clone()
                         for n, p in self.model.named_parameters() if n in self.param_names}
        kw = {"lr": config.server_lr, "momentum": config.server_momentum, "betas": config.server_betas,
              "eps": config.server_eps}
        self.edge_opt, self.cloud_opt = (server_optimizer(o, **kw) for o in (config.edge_optimizer,
                                                                            config.cloud_optimizer))
        self.server_state: dict = {"edge": {n: {} for n in self.param_names},
                                   "cloud": {n: {} for n in self.param_names},
                                   "global": {n: x[:1].clone() for n, x in self.clusters.items()}}
        self.rng = np.random.default_rng(config.seed)
        self.who = Participation(scenario.n_devices, config.availability, config.availability_trace,
                                 config.participation, config.seed)
        self.pricer = RoundPricer(scenario, as_run, self.metrics, config.fading, config.seed)
        self._round = (self.metrics, scenario.n_devices, int((self.eligible & self.metrics.stragglers).sum()), None)
        self.records: list[dict] = []
        self.signature = ""  # set by checkpoint.resume, before any checkpoint is written
        self._eval_sizes = np.bincount(self.assoc, minlength=self.n_edges).astype(float)
        self._weights_t = torch.as_tensor(self.weights, dtype=torch.float32, device=self.device)
        self._eval_table: MultiModalTable | None = None
        self._eval_subset: MultiModalTable | None = None
        self._tests: PackedTables | None = None
        # devices with the same modalities and tasks train in one vmapped call per chunk
        has = np.concatenate([self.train_data.modality_counts() > 0, n_task > 0], axis=1)
        self._groups = np.unique(has, axis=0, return_inverse=True)[1].reshape(-1)
        self._mods = [m for j, m in enumerate(model.modality_names) if has[:, j].any()]
        cfg = model.cfg
        tokens = cfg.n_prompts * len(cfg.tasks) + sum(m.n_tokens for m in cfg.modalities)
        # a CPU runs one call per torch thread at once (at most one per core), each on one thread, in forked worker
        # processes (self._on_cores)
        self.workers = cpu_workers() if self.device.type == "cpu" and fork_available() else 1
        self.chunk = config.devices_per_call or devices_per_call(
            self.device, tokens, self.batch, cfg.d_model, sum(p.numel() for p in model.parameters() if p.requires_grad),
            calls_at_once=self.workers)
        self._pool: ForkedWorkers | None = None

    # ------------------------------------------------------------------ one edge round
    def edge_round(self, r: int) -> dict:
        """Run edge round ``r`` (1-based): who takes part, local training, cluster aggregation, cloud aggregation
        at period ends."""
        if self.config.dynamic:
            self._realise(r)
        self.seen |= self.participants
        position = (r - 1) % self.plan.e_agg
        with one_torch_thread(self.device):  # on a CPU the calls of a wave each hold a core (_on_cores)
            self._train_and_aggregate()
            if position == self.plan.e_agg - 1:
                self._cloud_aggregate()
        record = self._record(r, position)
        self.records.append(record)
        return record

    def _realise(self, r: int) -> None:
        """The realised round ``r``: available and sampled devices, its price, its participants and weights."""
        available = self.who.available(r)
        chosen = self.who.sample(available & self.eligible)
        price = self.pricer.price(None if self.who.everyone else chosen)
        late = chosen & price.metrics.stragglers
        self.participants = chosen & ~late
        self.weights = self._w_plan * self.participants[:, None]
        self._weights_t = torch.as_tensor(self.weights, dtype=torch.float32, device=self.device)
        self._round = (price.metrics, int(available.sum()), int(late.sum()), price.resolved)

    def _train_and_aggregate(self) -> None:
        devs = np.flatnonzero(self.participants)
        devs = devs[np.argsort(self.assoc[devs], kind="stable")]
        if devs.size == 0:
            return
        rows = self.train_data.sample(devs, self.tau, self.batch, self.rng)  # every minibatch of the round
        num = {n: torch.zeros_like(x) for n, x in self.clusters.items()}
        den = {n: torch.zeros(self.n_edges, dtype=x.dtype, device=self.device) for n, x in self.clusters.items()}
        if self.device.type == "cpu":
            for wave in waves(devs.size, self.chunk, self.workers):  # the calls of a wave at once, summed in order
                for s, sums in zip(wave, self._on_cores([(devs[s], rows[s]) for s in wave])):
                    self._add_to_clusters(devs[s], sums, num, den)
        else:
            start = 0
            while start < devs.size:
                idx = devs[start:start + self.chunk]
                try:
                    sums = self._sums(idx, rows[start:start + self.chunk])
                except torch.cuda.OutOfMemoryError:
                    if self.chunk <= 1:
                        raise
                    torch.cuda.empty_cache()
                    self.chunk = max(1, self.chunk // 2)  # retry the same devices in smaller calls
                    continue
                self._add_to_clusters(idx, sums, num, den)
                start += idx.size
        for n in self.param_names:  # the edge tier's server optimiser on the clusters that aggregated n
            d = den[n].view(-1, *([1] * (num[n].dim() - 1)))
            mean = num[n] / d.clamp(min=1e-30)
            self.clusters[n] = self.edge_opt.step(self.clusters[n], mean, self.server_state["edge"][n], den[n] > 0)

    def _on_cores(self, calls: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[dict, dict]]:
        """:meth:`_sums` of every call (devices, rows) on a CPU, each on one torch thread (the edge round runs on one,
        :meth:`edge_round`): one call in this process,
        several at once in forked workers (:mod:`.workers`, made at the first such wave and kept for the run). The
        clusters' copies go to the workers, and call ``i``'s sums come back, through shared memory (slot ``i``);
        only the devices, their rows and weights travel through the pipes."""
        if len(calls) == 1:
            return [self._sums(*calls[0])]
        if self._pool is None:
            homes = min(self.chunk, self.n_edges)  # a call's devices have at most this many home clusters
            self._shared = {n: shared_zeros(x.shape) for n, x in self.clusters.items()}
            self._slots = [({n: shared_zeros((homes, *x.shape[1:])) for n, x in self.clusters.items()},
                            {n: shared_zeros((homes,)) for n in self.clusters}) for _ in range(self.workers)]
            self._pool = ForkedWorkers(self._worker_sums, self.workers)
        for n, x in self.clusters.items():
            self._shared[n].copy_(x)
        items = [(i, idx, rows, self._weights_t[torch.from_numpy(idx)].numpy()) for i, (idx, rows) in enumerate(calls)]
        return [tuple({n: x[:h] for n, x in part.items()} for part in self._slots[i])
                for i, h in enumerate(self._pool.map(items))]

    def _worker_sums(self, item) -> int:
        """:meth:`_sums` of one call in a worker process, from the shared clusters' copies into shared slot ``i``;
        returns the number of home clusters written."""
        i, idx, rows, weights = item
        num, den = self._sums(idx, rows, (self._home_copies(idx, self._shared)[0], torch.from_numpy(weights)))
        for part, sums in zip(self._slots[i], (num, den)):
            for n, x in sums.items():
                part[n][:len(x)].copy_(x)
        return len(next(iter(num.values())))

    def _home_copies(self, idx: np.ndarray, clusters: dict | None = None) -> tuple[dict[str, torch.Tensor],
                                                                                  torch.Tensor]:
        """The copies (of ``clusters``, default the run's) of the distinct home clusters of devices ``idx``, in cluster
        order ({n: (H, *shape)}), and the devices' aggregation weights per module ((D, K))."""
        homes = torch.from_numpy(np.unique(self.assoc[idx])).to(self.device)
        weights = self._weights_t[torch.from_numpy(idx).to(self.device)]
        source = self.clusters if clusters is None else clusters
        return {n: x.index_select(0, homes) for n, x in source.items()}, weights

    def _sums(self, idx: np.ndarray, rows: np.ndarray, state=None) -> tuple[dict[str, torch.Tensor], dict]:
        """Local training of devices ``idx`` (sorted by cluster) on their minibatch ``rows`` from their home clusters'
        copies, and the trained copies' weighted sums per home cluster: ({n: (H, *shape)}, {n: (H,)} the weights;
        a matmul per parameter: deterministic). ``state`` (:meth:`_home_copies`) defaults to the run's own."""
        c = self.config
        copies, weights = self._home_copies(idx) if state is None else state
        _, inverse = np.unique(self.assoc[idx], return_inverse=True)
        inverse_t = torch.from_numpy(inverse.reshape(-1)).to(self.device)
        stacked = {n: x.index_select(0, inverse_t) for n, x in copies.items()}
        res = local_train(self.model, stacked, self.plan.train[idx], self.train_data.gather(rows, self._mods), self.tau,
                          c.lr, optimizer=c.optimizer, momentum=c.momentum, weight_decay=c.weight_decay,
                          prox_mu=c.prox_mu, module_names=self.scenario.module_names, groups=self._groups[idx])
        n_homes = int(inverse.max()) + 1
        onehot = torch.zeros(n_homes, len(idx), dtype=torch.float32, device=self.device)
        onehot[inverse_t, torch.arange(len(idx), device=self.device)] = 1
        num, den = {}, {}
        for n, k in zip(self.param_names, self.param_module):
            wk = onehot * weights[:, k]
            x = res.params[n]
            num[n] = (wk @ x.reshape(len(idx), -1)).view(n_homes, *x.shape[1:])
            den[n] = wk.sum(dim=1)
        return num, den

    def _add_to_clusters(self, idx: np.ndarray, sums: tuple[dict, dict], num: dict, den: dict) -> None:
        """One call's sums per home cluster (:meth:`_sums`) added into the clusters' sums ``num``/``den``."""
        homes = torch.from_numpy(np.unique(self.assoc[idx])).to(self.device)
        for n in self.param_names:
            num[n].index_add_(0, homes, sums[0][n])
            den[n].index_add_(0, homes, sums[1][n])

    def close(self) -> None:
        """Stop the run's worker processes, if it has any."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _cloud_aggregate(self) -> None:
        """Each cloud-tier module averaged over its clusters (weights: the devices that took part in the period),
        through the cloud tier's server optimiser, and sent back."""
        tier = self.plan.tier
        cluster_weights = np.zeros((self.n_edges, tier.shape[1]))  # (E, K)
        np.add.at(cluster_weights, self.assoc, self._w_plan * self.seen[:, None])
        self.seen[:] = False
        one = torch.ones(1, dtype=torch.bool, device=self.device)
        for n, k in zip(self.param_names, self.param_module):
            to_cloud = tier[:, k] == CLOUD
            w = np.where(to_cloud, cluster_weights[:, k], 0.0)
            if w.sum() <= 0:
                continue
            x = self.clusters[n]
            wt = torch.as_tensor(w / w.sum(), dtype=x.dtype, device=x.device).view(-1, *([1] * (x.dim() - 1)))
            mean = (x * wt).sum(dim=0, keepdim=True)
            new = self.cloud_opt.step(self.server_state["global"][n], mean, self.server_state["cloud"][n], one)
            self.server_state["global"][n] = new
            mask = torch.as_tensor(to_cloud, device=x.device).view(-1, *([1] * (x.dim() - 1)))
            self.clusters[n] = torch.where(mask, new.expand_as(x), x)

    # ------------------------------------------------------------------ bookkeeping
    def _record(self, r: int, position: int) -> dict:
        m, available, stragglers, resolved = self._round
        clock = _clock(m, self.plan.mode, r)
        if self.config.dynamic:  # the realised rounds, one after the other (not the plan's period repeated)
            last = self.records[-1] if self.records else {"time_s": 0.0, "energy_j": 0.0}
            clock["time_s"] = last["time_s"] + clock["round_latency_s"]
            clock["energy_j"] = last["energy_j"] + clock["round_energy_j"]
        c = self.config
        evaluated = c.eval_every > 0 and (r % c.eval_every == 0 or r == c.rounds)
        record = {"round": r, **clock, "available": available, "participants": int(self.participants.sum()),
                  "stragglers": stragglers, "resolved": resolved, "evaluated": evaluated, "accuracy": None,
                  "accuracy_by_task": None, "served_accuracy": None, "served_accuracy_by_task": None,
                  "personalised_accuracy": None}
        if evaluated:
            record.update(self._evaluate(last=r == c.rounds))
        return record

    def _evaluate(self, last: bool) -> dict:
        """Accuracy of the cluster models on the evaluation split (all distinct clusters in one vmapped pass; before
        the ``last`` round on the ``eval_rows`` subset when configured), the served accuracy of every device and, if
        configured (test split), each device's cluster model on its own test rows."""
        tasks = self.model.task_names
        c = self.config
        personalised = c.personalised and c.eval_split == "test"
        if self._eval_table is None:  # moved to the run's device at the first evaluation
            table = self.data.validation if c.eval_split == "validation" else self.data.global_test
            self._eval_table = table.to(self.device)
            self._eval_subset = self._eval_table
            if 0 < c.eval_rows < len(table):
                rows = seeded_rows(len(table), c.eval_rows, (c.seed, EVAL_SUBSET_STREAM))
                self._eval_subset = table.subset(rows, f"{table.name}/subset").to(self.device)
            self._tests = PackedTables.from_tables(self.data.test).to(self.device) if personalised else None
        first, which = distinct(self.clusters)
        pick = torch.from_numpy(first).to(self.device)
        models = {n: x.index_select(0, pick) for n, x in self.clusters.items()}
        ok, labelled = correct(self.model, models, self._eval_table if last else self._eval_subset, c.eval_batch)
        acc = accuracy(ok, labelled)[which]  # (E, T)
        size = self._eval_sizes
        by_task = {t: _pct((acc[:, j] * size).sum() / size.sum()) if np.isfinite(acc[:, j]).all() else None
                   for j, t in enumerate(tasks)}
        valid = [v for v in by_task.values() if v is not None]
        served, served_task = served_accuracy(acc, self.assoc, self.scenario.devices.tasks)
        personal = None
        if self._tests is not None:
            dev_acc = device_accuracy(self.model, self.clusters, self.assoc, self._tests, self.config.eval_batch)
            dev_acc = dev_acc[np.isfinite(dev_acc)]
            personal = _pct(float(np.mean(dev_acc))) if dev_acc.size else None
        return {"accuracy": float(np.mean(valid)) if valid else None, "accuracy_by_task": by_task,
                "served_accuracy": _pct(served) if np.isfinite(served) else None,
                "served_accuracy_by_task": {t: _pct(v) if np.isfinite(v) else None for t, v in zip(tasks, served_task)},
                "personalised_accuracy": personal}

    def meta(self) -> dict:
        """What the history was produced from."""
        return _meta(self.scenario, self.plan, self.metrics, self.config, self.tau, self.batch)


def _clock(m: Metrics, mode: str, r: int) -> dict:
    """The clock fields of static edge round ``r`` (1-based) of a plan priced ``m``: the plan's period repeated."""
    g = m.e_agg
    done, position = (r - 1) // g, (r - 1) % g
    bits = m.bits_by_part
    if mode == "star":
        per_round = {"d2d": 0.0, "edge": 0.0, "cloud": bits["uplink"] / 8}
    else:
        per_round = {"d2d": bits["d2d"] / 8 / g, "edge": (bits["uplink"] + bits["downlink"]) / 8 / g,
                     "cloud": bits["backhaul"] / 8 if position == g - 1 else 0.0}
    return {"global_round": done + 1, "time_s": done * m.period_latency_s + float(m.round_end_s[position]),
            "energy_j": done * m.period_energy_j + float(np.cumsum(m.round_energy_j)[position]),
            "round_latency_s": float(m.round_end_s[position] - (m.round_end_s[position - 1] if position else 0.0)),
            "round_energy_j": float(m.round_energy_j[position]), "bytes_by_tier": per_round}


def _meta(scenario: Scenario, plan: Plan, m: Metrics, config: TrainConfig, tau: int, batch: int) -> dict:
    return {"scheduler": plan.scheduler, "mode": plan.mode, "e_agg": int(plan.e_agg), "scenario": scenario.name,
            "n_devices": scenario.n_devices, "latency_s": m.latency_s, "energy_j": m.energy_j, "local_steps": tau,
            "batch_size": batch, "eval_split": config.eval_split, "config": asdict(config)}


def learning_key(scenario: Scenario, plan: Plan, config: TrainConfig) -> str | None:
    """A hash of everything the *learning* of a static run depends on besides the data and the configuration:
    who trains what (``plan.train``), the association, the tiers, ``e_agg`` and the stragglers of the plan as run.
    Two plans with the same key train the same models round by round and differ only in their clock and energy
    (e.g. aggregation at a D2D aggregator or at the edge). None for a dynamic run (fading, availability, sampling),
    whose rounds depend on each plan's own price."""
    if config.dynamic:
        return None
    as_run = plan.replace(local_steps=config.local_steps or plan.local_steps,
                          batch_size=config.batch_size or plan.batch_size)
    h = hashlib.sha1()
    for part in (plan.train, plan.tier, plan.association, evaluate(scenario, as_run).stragglers):
        h.update(np.ascontiguousarray(part).tobytes())
    h.update(f"{plan.e_agg}/{plan.mode}/{plan.train.shape}/{plan.tier.shape}".encode())
    return h.hexdigest()


def train_plans(scenario: Scenario, plans: list[Plan], data: FederatedData, config: TrainConfig = TrainConfig(), *,
                progress: Callable[[int, Plan], Callable | None] | None = None) -> list[History]:
    """:func:`train` of every plan, training once per :func:`learning_key`: the other plans of a group get the
    group's records with their own clock and energy (:func:`reclock`), equal to what training them would record.
    ``progress(i, plan)`` returns the round wrapper of plan ``i`` (or None)."""
    trained: dict[str, History] = {}
    out = []
    for i, plan in enumerate(plans):
        key = learning_key(scenario, plan, config)
        if key is not None and key in trained:
            out.append(reclock(trained[key], scenario, plan, config))
            continue
        history = train(scenario, plan, data, config, progress=progress(i, plan) if progress else None)
        if key is not None:
            trained[key] = history
        out.append(history)
    return out


def reclock(history: History, scenario: Scenario, plan: Plan, config: TrainConfig) -> History:
    """``history`` of a static run with the clock, energy and bytes of ``plan`` (same learning key)."""
    tau, batch = config.local_steps or plan.local_steps, config.batch_size or plan.batch_size
    m = evaluate(scenario, plan.replace(local_steps=tau, batch_size=batch))
    records = [{**r, **_clock(m, plan.mode, r["round"])} for r in history.records]
    return History(records, _meta(scenario, plan, m, config, tau, batch))


def _pct(fraction: float) -> float:
    return 100.0 * float(fraction)
