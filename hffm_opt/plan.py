"""A ``Plan``: every decision of one global period (section 3 of the design), and its JSON form.

Indices refer to the scenario's device index ``u``, edge index ``e`` and module index ``k``. Units: Hz, W,
cycles/s, s. A plan is only data: :func:`hffm_opt.evaluate.evaluate` checks it against a scenario. A plan records
the name and :attr:`~hffm_opt.network.scenario.Scenario.fingerprint` of the scenario it was made for (every
scheduler's plan does), and ``evaluate`` refuses it for another one. Plan files are read strictly: an unknown
key, a value of the wrong type or shape, or an unknown ``version`` is refused with the field and the rule.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ._io import atomic_write, dumps_json
from .errors import PlanError
from .network.documents import (
    as_list,
    as_number,
    as_numbers,
    as_str,
    as_table,
    check_keys,
    check_version,
    frozen,
    read_document,
    short,
)

if TYPE_CHECKING:
    from .network.scenario import Scenario

MODES = ("star", "hierarchical")
TIERS = ("aggregator", "edge", "cloud")  # tier index 0, 1, 2: the highest node that aggregates a module
RELAY_MODES = ("aggregate", "forward")  # in-network aggregation on relay trees, or store-and-forward
AGG, EDGE, CLOUD = range(len(TIERS))
FORMAT = "hffm-opt/plan"
VERSIONS = (1,)  # plan file versions this package reads (it writes the last)


_ARRAY_TYPES = {"association": np.int64, "train": bool, "tier": np.int8, "aggregator": np.int64, "parent": np.int64,
                "bandwidth_hz": float, "power_w": float, "d2d_power_w": float, "d2d_down_power_w": float,
                "cpu_hz": float}


@dataclass(frozen=True, eq=False)
class Plan:
    """The decisions of one global period.

    - ``mode``: ``"star"`` (every device sends its update straight to the cloud each round) or
      ``"hierarchical"`` (devices -> cluster -> cloud every ``e_agg`` edge rounds).
    - ``association`` (U,) edge index a(u); ``train`` (U, K) bool x[u,k]; ``tier`` (E, K) index into
      :data:`TIERS` (the highest node aggregating module k of cluster e: D2D aggregator, edge, or cloud).
    - ``aggregator`` (E,) D2D aggregator device per cluster, -1 = no D2D; ``parent`` (U,) next hop of the relay
      tree toward the aggregator, -1 for the aggregator and for devices of clusters without D2D.
    - ``bandwidth_hz`` (U,) uplink share b_u; ``power_w`` (U,) uplink power p_u; ``d2d_power_w`` (U,) power u
      transmits with to parent(u); ``d2d_down_power_w`` (U,) power parent(u) transmits with to u in the
      broadcast; ``cpu_hz`` (U,) CPU frequency f_u. Each power sets its link's rate and is charged for its energy.
    - ``e_agg`` edge rounds per global period; ``local_steps`` tau and ``batch_size`` (samples per step) per
      edge round; ``deadline_s`` the round deadline T for compute + reaching the aggregation point (None = wait
      for everyone); ``relay_mode`` as in :data:`RELAY_MODES`.
    - ``scenario_name``/``scenario_fingerprint``: the scenario the plan was made for (empty for a plan built by
      hand, which ``evaluate`` accepts for any scenario of its size; a plan file must write the fingerprint, empty
      or not).
    """

    mode: str
    e_agg: int
    association: np.ndarray
    train: np.ndarray
    tier: np.ndarray
    aggregator: np.ndarray
    parent: np.ndarray
    bandwidth_hz: np.ndarray
    power_w: np.ndarray
    d2d_power_w: np.ndarray
    d2d_down_power_w: np.ndarray
    cpu_hz: np.ndarray
    local_steps: int = 1
    batch_size: int = 16
    deadline_s: float | None = None
    relay_mode: str = "aggregate"
    scheduler: str = ""
    meta: dict = field(default_factory=dict)
    scenario_name: str = ""
    scenario_fingerprint: str = ""

    def __post_init__(self):
        for name, dtype in _ARRAY_TYPES.items():
            object.__setattr__(self, name, frozen(getattr(self, name), dtype, name, PlanError))

    def for_scenario(self, scenario: Scenario) -> "Plan":
        """This plan, recorded as made for ``scenario`` (its name and fingerprint)."""
        return self.replace(scenario_name=scenario.name, scenario_fingerprint=scenario.fingerprint)

    def cluster_modules(self, train: np.ndarray | None = None) -> np.ndarray:
        """(E, K) bool: the modules each cluster's devices train (``train``: a (U, K) part of :attr:`train`, e.g.
        without the stragglers; default all of it)."""
        out = np.zeros(self.tier.shape, bool)
        np.logical_or.at(out, self.association, self.train if train is None else train)
        return out

    @property
    def uses_d2d(self) -> np.ndarray:
        """(E,) bool: clusters that aggregate over a D2D relay tree."""
        return self.aggregator >= 0

    def cycles_per_flop(self, scenario: Scenario, devices=None) -> np.ndarray:
        """(n,) CPU cycles per FLOP per sample each device (of ``devices``, default all) spends in one edge round:
        tau steps of its batch (capped by the samples it holds) over its FLOPs per cycle."""
        devices = np.arange(scenario.n_devices) if devices is None else np.asarray(devices)
        dev = scenario.devices
        batch = np.minimum(self.batch_size, dev.samples[devices].sum(axis=1))
        return self.local_steps * batch / dev.flops_per_cycle[devices]

    def module_cycles(self, scenario: Scenario, devices=None) -> np.ndarray:
        """(n, K) CPU cycles each device (of ``devices``, default all) would spend training each module in one edge
        round (:meth:`cycles_per_flop` times the module's FLOPs per sample)."""
        return self.cycles_per_flop(scenario, devices)[:, None] * scenario.module_arrays["flops_per_sample"][None, :]

    def round_cycles(self, scenario: Scenario, devices=None) -> np.ndarray:
        """(n,) CPU cycles each device (of ``devices``, default all) spends training its modules in one edge round
        (:meth:`module_cycles` summed over the modules it trains)."""
        devices = np.arange(scenario.n_devices) if devices is None else np.asarray(devices)
        return (self.module_cycles(scenario, devices) * self.train[devices]).sum(axis=1)

    def replace(self, **changes) -> "Plan":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    # ----------------------------------------------------------------- JSON
    def to_dict(self) -> dict:
        """JSON-ready dict (arrays as lists, tiers by name)."""
        out = {"format": FORMAT, "version": VERSIONS[-1]}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "tier":
                v = [[TIERS[t] for t in row] for row in v.tolist()]
            elif isinstance(v, np.ndarray):
                v = v.astype(int).tolist() if v.dtype == bool else v.tolist()
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "Plan":
        """Inverse of :meth:`to_dict`; raises :class:`PlanError` naming the field of a malformed document."""
        err = PlanError
        fields = {f.name: f for f in dataclasses.fields(cls)}
        required = [n for n, f in fields.items() if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING]
        if as_table(data, "", err).get("format") != FORMAT:
            found = short(data["format"]) if "format" in data else "<missing>"
            raise err(f"format = {found}: a plan file must have format {FORMAT!r}")
        check_keys(data, "", {"format", "version", *fields}, err, required=required)
        if "scenario_fingerprint" not in data:
            raise err("scenario_fingerprint = <missing>: a plan file must name the scenario it was made for (\"\" "
                      "for a hand-made plan that fits any scenario of its size)")
        check_version(data.get("version", VERSIONS[-1]), "version", VERSIONS, err)
        kwargs = {k: v for k, v in data.items() if k in fields}
        for name in ("mode", "relay_mode", "scheduler", "scenario_name", "scenario_fingerprint"):
            if name in kwargs:
                as_str(kwargs[name], name, err)
        for name in ("e_agg", "local_steps", "batch_size"):
            if name in kwargs:
                as_number(kwargs[name], name, err, integer=True)
        as_number(kwargs.get("deadline_s"), "deadline_s", err, none=True)
        as_table(kwargs.get("meta", {}), "meta", err)
        for name in ("association", "aggregator", "parent"):
            as_numbers(kwargs[name], name, err, integer=True)
        for name in ("bandwidth_hz", "power_w", "d2d_power_w", "d2d_down_power_w", "cpu_hz"):
            as_numbers(kwargs[name], name, err)
        _matrix(kwargs["train"], "train", lambda v, w: as_number(v, w, err, integer=True, low=0, high=1))
        tier = _matrix(kwargs["tier"], "tier", lambda v, w: as_str(v, w, err, choices=TIERS))
        kwargs["tier"] = [[TIERS.index(t) for t in row] for row in tier]
        return cls(**kwargs)

    def save(self, path) -> None:
        """Write the plan as JSON atomically (temporary file, then rename)."""
        atomic_write(path, dumps_json(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path) -> "Plan":
        """Read a plan written by :meth:`save`; raises :class:`PlanError` naming the file and what is wrong."""
        data = read_document(path, "plan", PlanError)
        with plan_file(path):
            return cls.from_dict(data)


@contextmanager
def plan_file(path):
    """Prefix a :class:`PlanError` raised inside with ``plan file '<path>': `` (the file it is about)."""
    try:
        yield
    except PlanError as exc:
        raise PlanError(f"plan file {str(path)!r}: {exc}") from None


def _matrix(value, where: str, cell) -> list:
    """A rectangular list of lists whose every cell passes ``cell(value, where)``; a row whose length differs from
    the most common one is refused by its index."""
    rows = as_list(value, where, PlanError)
    for i, row in enumerate(rows):
        as_list(row, f"{where}[{i}]", PlanError)
    width = Counter(map(len, rows)).most_common(1)[0][0] if rows else None
    for i, row in enumerate(rows):
        as_list(row, f"{where}[{i}]", PlanError, width)
        for j, v in enumerate(row):
            cell(v, f"{where}[{i}][{j}]")
    return rows


def baseline_plan(scenario: Scenario, *, mode: str, e_agg: int, top_tier: str, name: str, local_steps: int = 1,
                  batch_size: int = 16) -> Plan:
    """The prototype's fixed decisions: everything needed is trained, equal bandwidth, fixed powers, full CPU.

    ``top_tier`` is the highest aggregation tier ("cloud" or "edge"); cluster-local modules stop at the edge;
    ``local_steps`` (tau) and ``batch_size`` are the training workload of an edge round the plan is made for.
    """
    dev, proto = scenario.devices, scenario.prototype
    n, n_e = scenario.n_devices, scenario.n_edges
    mods = scenario.module_arrays
    counts = np.bincount(dev.edge, minlength=n_e)
    tier = np.full((n_e, len(scenario.modules)), TIERS.index(top_tier), dtype=np.int8)
    tier[:, mods["cluster_local"]] = np.minimum(tier[:, mods["cluster_local"]], EDGE)
    return Plan(mode=mode, e_agg=e_agg, association=dev.edge.copy(), train=scenario.need & mods["trainable"], tier=tier,
                aggregator=np.full(n_e, -1), parent=np.full(n, -1),
                bandwidth_hz=scenario.edges.bandwidth_hz[dev.edge] / counts[dev.edge],
                power_w=np.minimum(proto.uplink_rate_power_w, dev.pmax_w),
                d2d_power_w=np.minimum(proto.d2d_rate_power_w, dev.pmax_w),
                d2d_down_power_w=np.full(n, proto.d2d_rate_power_w), cpu_hz=dev.cpu_hz.copy(), scheduler=name,
                local_steps=local_steps, batch_size=batch_size)

