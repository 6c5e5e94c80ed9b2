"""What a training run is given: :class:`TrainConfig` (how to train) and :class:`FederatedData` (the model and
the tables). Both are checked when built; a bad value raises :class:`~hffm_opt.errors.ConfigError` naming the
field, the value and the rule. :mod:`hffm_opt.learners.trainer` re-exports both."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from hffm_opt.errors import ConfigError

from .device import check_device_name
from .local import OPTIMIZERS
from .model import M3TModel
from .packed import PackedTables
from .server import SERVER_OPTIMIZERS
from .table import MultiModalTable

FADING = ("static", "block")
EVAL_SPLITS = ("test", "validation")


@dataclass(frozen=True)
class TrainConfig:
    """How to train (the plan says who trains what, where it is aggregated, and what it costs).

    - ``rounds`` (20): edge rounds to run (>= 1); a global round is ``plan.e_agg`` edge rounds.
    - ``lr`` (0.01): learning rate of the local optimiser; ``optimizer`` (``"adam"``, or ``"sgd"`` with
      ``momentum`` and ``weight_decay``, both 0); its state restarts every edge round.
    - ``prox_mu`` (0): FedProx, the proximal term ``prox_mu / 2 ||w - w_start||^2`` added to every device's local
      loss (``w_start`` its cluster's copy at the start of the round); 0 = plain local training.
    - ``local_steps`` (tau) and ``batch_size`` (samples per step), None = the plan's ``local_steps`` and
      ``batch_size``; either way ``evaluate`` prices the plan with the values actually run.
    - ``edge_optimizer`` / ``cloud_optimizer`` (``"fedavg"``): the server optimiser of the cluster aggregation
      and of the cloud average, ``"fedavg"``, ``"fedavgm"`` or ``"fedadam"``
      (:mod:`hffm_opt.learners.server`), with ``server_lr`` (None = 1 for FedAvgM, 0.01 for FedAdam),
      ``server_momentum`` (0.9, FedAvgM), ``server_betas`` ((0.9, 0.99), FedAdam) and ``server_eps`` (1e-3, FedAdam).
    - ``seed`` (0): seeds the minibatch draws and, on separate streams, the fading, availability and sampling draws.
    - ``fading`` (``"static"``): ``"block"`` redraws every gain each edge round and re-solves the plan's
      continuous part for it (:mod:`hffm_opt.learners.dynamics`); ``availability`` (1.0): the probability that a
      device is available in a round, one for all or one per device; ``availability_trace`` (None): a CSV file
      of available intervals instead (:mod:`hffm_opt.learners.participation`); ``participation`` (1.0): the
      fraction of the available devices sampled each round, in (0, 1].
    - ``eval_every`` (1): evaluate every this many edge rounds and at the last one (0 = never, for benchmarks);
      ``personalised`` (True): also evaluate each device's cluster model on its local test rows (test split only);
      ``eval_split`` (``"test"``): score on ``data.global_test``, or on ``data.validation`` with ``"validation"``
      (tuning and early stopping never touch the test set); ``eval_rows`` (0 = all): the evaluations before the
      last round score a seeded random subset of this many rows of that split (the same rows every time, drawn
      with ``seed``), the last round always every row.
    - ``eval_batch`` (2048): rows per evaluation forward pass; ``devices_per_call`` (None = automatic: 256 on a
      CPU, on a GPU as many as fit in half its free memory): most devices one local-training call trains (on a CPU
      the calls of an edge round are balanced and run one per torch thread at once, in forked worker processes, see
      :mod:`~hffm_opt.learners.workers`).
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
    prox_mu: float = 0.0
    edge_optimizer: str = "fedavg"
    cloud_optimizer: str = "fedavg"
    server_lr: float | None = None
    server_momentum: float = 0.9
    server_betas: tuple[float, float] = (0.9, 0.99)
    server_eps: float = 1e-3
    fading: str = "static"
    availability: float | tuple[float, ...] = 1.0
    availability_trace: str | None = None
    participation: float = 1.0
    eval_split: str = "test"
    eval_rows: int = 0

    def __post_init__(self):
        for name in ("rounds", "eval_batch"):
            _require(_is_int(getattr(self, name)) and getattr(self, name) >= 1, name, getattr(self, name),
                     "must be an integer >= 1")
        for name in ("local_steps", "batch_size", "devices_per_call"):
            v = getattr(self, name)
            _require(v is None or (_is_int(v) and v >= 1), name, v, "must be None or an integer >= 1")
        _require(_is_int(self.eval_every) and self.eval_every >= 0, "eval_every", self.eval_every,
                 "must be an integer >= 0 (0 = never evaluate)")
        _require(_is_int(self.eval_rows) and self.eval_rows >= 0, "eval_rows", self.eval_rows,
                 "must be an integer >= 0 (0 = every row of the evaluation split)")
        _require(_finite(self.lr) and self.lr > 0, "lr", self.lr, "must be a finite number > 0")
        _require(self.optimizer in OPTIMIZERS, "optimizer", self.optimizer, f"must be one of {OPTIMIZERS}")
        _require(_finite(self.momentum) and _finite(self.weight_decay) and self.momentum >= 0
                 and self.weight_decay >= 0, "momentum/weight_decay", (self.momentum, self.weight_decay),
                 "must be finite numbers >= 0")
        _require(_finite(self.prox_mu) and self.prox_mu >= 0, "prox_mu", self.prox_mu, "must be a finite number >= 0")
        for name in ("edge_optimizer", "cloud_optimizer"):
            _require(getattr(self, name) in SERVER_OPTIMIZERS, name, getattr(self, name),
                     f"must be one of {SERVER_OPTIMIZERS}")
        _require(self.server_lr is None or (_finite(self.server_lr) and self.server_lr > 0), "server_lr",
                 self.server_lr, "must be None or a finite number > 0")
        _require(_finite(self.server_momentum) and 0 <= self.server_momentum < 1, "server_momentum",
                 self.server_momentum, "must be in [0, 1)")
        betas = self.server_betas
        _require(isinstance(betas, (tuple, list)) and len(betas) == 2 and all(_finite(b) and 0 <= b < 1 for b in betas),
                 "server_betas", betas, "must be two numbers in [0, 1)")
        object.__setattr__(self, "server_betas", (float(betas[0]), float(betas[1])))
        _require(_finite(self.server_eps) and self.server_eps > 0, "server_eps", self.server_eps,
                 "must be a finite number > 0")
        _require(self.fading in FADING, "fading", self.fading, f"must be one of {FADING}")
        self._check_availability()
        _require(_finite(self.participation) and 0 < self.participation <= 1, "participation", self.participation,
                 "must be in (0, 1]")
        _require(self.eval_split in EVAL_SPLITS, "eval_split", self.eval_split, f"must be one of {EVAL_SPLITS}")
        check_device_name(self.device)

    def _check_availability(self) -> None:
        a = self.availability
        many = isinstance(a, (tuple, list, np.ndarray))
        values = [float(v) for v in np.asarray(a, dtype=float).reshape(-1)] if many else None
        ok = (values is not None and len(values) > 0 and all(0 <= v <= 1 for v in values)) or \
            (not many and _finite(a) and 0 <= a <= 1)
        _require(ok, "availability", a, "must be a probability in [0, 1] or a non-empty sequence of them (one per "
                 "device)")
        object.__setattr__(self, "availability", tuple(values) if many else float(a))
        trace = self.availability_trace
        _require(trace is None or isinstance(trace, (str, os.PathLike)), "availability_trace", trace,
                 "must be None or the path of a CSV file device,start_round,end_round")
        if trace is not None:
            object.__setattr__(self, "availability_trace", os.fspath(trace))
            _require(self.availability == 1.0, "availability", self.availability,
                     "must stay 1.0 when availability_trace is given (the trace says who is available)")

    @property
    def dynamic(self) -> bool:
        """True when the rounds differ from the plan's single priced period (fading, availability, sampling)."""
        return (self.fading != "static" or self.availability_trace is not None or self.participation < 1
                or min(np.atleast_1d(self.availability)) < 1)


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _finite(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


def _require(ok: bool, name: str, value, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{name} = {value!r}: {rule}")


@dataclass(frozen=True, eq=False)
class FederatedData:
    """What training needs besides the scenario and the plan.

    ``model``: the starting model (pre-trained frozen core, fresh trainable modules; never modified);
    ``train``/``test``: each device's training and local test table (device index order of the scenario), a
    sequence of tables or one :class:`~hffm_opt.learners.packed.PackedTables`, ideally pre-encoded
    (:meth:`MultiModalTable.with_encoded`); ``global_test``: the global test set; ``validation``: an optional
    held-out validation table (same tasks), scored instead of ``global_test`` when ``TrainConfig.eval_split`` is
    ``"validation"`` (tuning and early stopping never touch the test set).
    """

    model: M3TModel
    train: tuple[MultiModalTable, ...]
    test: tuple[MultiModalTable, ...]
    global_test: MultiModalTable
    validation: MultiModalTable | None = None

    def __post_init__(self):
        tables = []
        for name in ("train", "test"):
            value = getattr(self, name)
            value = value if isinstance(value, PackedTables) else tuple(value)
            object.__setattr__(self, name, value)
            tables += [value] if isinstance(value, PackedTables) else list(value)
        _require(len(self.train) == len(self.test), "len(test)", len(self.test),
                 f"must equal len(train) = {len(self.train)} (one table per device)")
        extra = () if self.validation is None else (self.validation,)
        for t in (*tables, self.global_test, *extra):
            _require(t.task_names == self.model.task_names, f"{t.name}.tasks", t.task_names,
                     f"must be the model's tasks {self.model.task_names}")
