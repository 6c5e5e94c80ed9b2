"""F4, the joint plan, as a model object: what :func:`hffm_opt.solvers.solve` needs to run F4 or exact enumeration.

Problem (section 4; consistent accounting): per cluster choose direct uploads or a D2D aggregator and relay tree
(discrete), and CPU frequencies, uplink bandwidth and powers, D2D powers (continuous). The ``objective``:

- ``"energy"`` (default): least energy per edge round (J) with the latency per edge round <= ``target_latency_s``;
- ``"latency"``: least latency per edge round (s), with the energy per edge round <= ``energy_budget_j`` if given;
- ``"weighted"``: least ``w_latency * latency_s + w_energy * energy_j`` (weights per s and per J, both > 0).

By default module assignment, tiers, association and ``e_agg`` are those of the ``start`` plan, which the search
also starts from; the full-F4 options (:func:`check_full_options`) free placement, tiers and association (the
optimising schedulers pick it and the target: :func:`hffm_opt.schedulers.optimising.joint_model`). The builder
runs a pre-check of capacities and (given a target) deadlines that names the responsible device or edge.
The full-F4 options' data live here too: the modules that may stay in their cluster (:func:`edge_allowed`), each
device's candidate edges (:func:`candidate_edges`) and the coverage rule (:func:`covers`).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..errors import ConfigError
from ..network.channel import shannon_rate
from ..network.scenario import Scenario
from ..network.topology import cluster_links
from ..plan import Plan
from .cluster import cluster_data

OBJECTIVES = ("energy", "latency", "weighted")
COVERAGES = ("full", "cluster")
ASSOCIATIONS = ("fixed", "optimise")
FULL_OPTIONS = ("coverage", "min_trainers", "w_U", "edge_tiers", "association", "assoc_candidates", "max_iterations",
                "tolerance")


def check_full_options(coverage="full", min_trainers=1, w_U=0.0, edge_tiers=False, association="fixed",
                       assoc_candidates=3, max_iterations=10, tolerance=1e-6) -> dict:
    """The options of full F4 (placement, tiers, association; :mod:`hffm_opt.solvers.f4.alternation`), checked:
    raise :class:`~hffm_opt.errors.ConfigError` naming the field, the value and the rule; returns them as a dict.

    ``coverage``: ``"full"`` (every trainable module a device needs is trained, as the baselines do) or
    ``"cluster"`` (each module needed in a cluster trained by at least ``min_trainers`` of its devices);
    ``w_U`` (J per unit of utility, >= 0); ``edge_tiers`` (every module may stay at the edge, not only the
    cluster-local ones: such a module is then averaged inside its cluster only and never leaves it);
    ``association`` in :data:`ASSOCIATIONS` over each device's ``assoc_candidates`` nearest edges;
    ``max_iterations`` (>= 1) and ``tolerance`` (relative, >= 0) of the alternation."""
    def integer(name, value, low):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ConfigError(f"{name} = {value!r}: must be an integer >= {low}")

    if coverage not in COVERAGES:
        raise ConfigError(f"coverage = {coverage!r}: must be one of {list(COVERAGES)}")
    if association not in ASSOCIATIONS:
        raise ConfigError(f"association = {association!r}: must be one of {list(ASSOCIATIONS)}")
    integer("min_trainers", min_trainers, 1)
    integer("assoc_candidates", assoc_candidates, 1)
    integer("max_iterations", max_iterations, 1)
    for name, value in (("w_U", w_U), ("tolerance", tolerance)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"{name} = {value!r}: must be a finite number >= 0")
    if not isinstance(edge_tiers, (bool, np.bool_)):
        raise ConfigError(f"edge_tiers = {edge_tiers!r}: must be true or false")
    if w_U > 0 and coverage == "full":
        raise ConfigError(f"w_U = {w_U!r}: only with coverage 'cluster' (with coverage 'full' every module is trained "
                          "and the utility is fixed)")
    return {"coverage": coverage, "min_trainers": int(min_trainers), "w_U": float(w_U), "edge_tiers": bool(edge_tiers),
            "association": association, "assoc_candidates": int(assoc_candidates),
            "max_iterations": int(max_iterations), "tolerance": float(tolerance)}


@dataclass(frozen=True)
class JointModel:
    """F4 on one scenario: the starting plan (its name in ``start_name``), the latency target per edge round (s;
    None unless the objective is ``energy``), the objective and its data (module docstring), the pre-check's verdict
    and the builder's time (s); ``round_cap_s`` (energy objective, plain F4): each edge round but the period's last
    ends within it (s, from the round's start; inf = only the period counts)."""

    program: ClassVar[str] = "joint"  # the key of the solver registry's table
    scenario: Scenario
    start: Plan
    target_latency_s: float | None
    start_name: str
    precheck_message: str | None
    build_s: float
    name: str = "F4 joint plan"
    objective: str = "energy"
    energy_budget_j: float | None = None
    w_latency: float | None = None
    w_energy: float | None = None
    coverage: str = "full"
    min_trainers: int = 1
    w_U: float = 0.0
    edge_tiers: bool = False
    association: str = "fixed"
    assoc_candidates: int = 3
    max_iterations: int = 10
    tolerance: float = 1e-6
    round_cap_s: float = math.inf

    @property
    def alternates(self) -> bool:
        """Whether F4 also decides module assignment, tiers or association (see
        :mod:`hffm_opt.solvers.f4.alternation`; for the latency and weighted objectives, at each target they
        solve): coverage ``"cluster"``, ``edge_tiers`` or ``association == "optimise"`` (cluster-local modules
        always stay in their cluster, as every start plan has them)."""
        return self.coverage == "cluster" or self.edge_tiers or self.association == "optimise"

    @property
    def e_agg(self) -> int:
        """Edge rounds per global period (the starting plan's)."""
        return int(self.start.e_agg)

    def at_target(self, target_latency_s: float) -> JointModel:
        """The energy-at-target model of the same start with ``target_latency_s`` (s per edge round), pre-checked."""
        return dataclasses.replace(build_joint(self.scenario, self.start, target_latency_s, self.start_name),
                                   **{f: getattr(self, f) for f in FULL_OPTIONS})


def edge_allowed(scenario: Scenario, edge_tiers: bool) -> np.ndarray:
    """(K,) modules that may stay in their cluster (edge or aggregator tier): the cluster-local ones, or every
    module with ``edge_tiers``."""
    local = scenario.module_arrays["cluster_local"]
    return np.ones_like(local) if edge_tiers else local.copy()


def candidate_edges(scenario: Scenario, k: int) -> np.ndarray:
    """(U, E) bool: each device's ``k`` nearest edges with a finite uplink gain (ties by edge index), the edges
    ``association="optimise"`` may move it to."""
    dev, edges = scenario.devices, scenario.edges
    dist = np.linalg.norm(dev.position_m[:, None, :] - edges.position_m[None, :, :], axis=2)
    dist = np.where(np.isfinite(dev.uplink_gain), dist, np.inf)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    out = np.zeros(dist.shape, bool)
    np.put_along_axis(out, order, True, axis=1)
    return out & np.isfinite(dist)


def covers(scenario: Scenario, devices, cluster, train, min_trainers: int) -> bool:
    """Coverage ``"cluster"``: in each cluster, every trainable module some of its ``devices`` need is trained by
    at least ``min(min_trainers, devices able to)`` of them (able: the module's training state fits the device's
    memory beside what it holds), the rule F1 keeps. ``devices`` (n,) indices, ``cluster`` (n,) their clusters,
    ``train`` (n, K) bool what they train."""
    mods = scenario.module_arrays
    devices = np.asarray(devices, dtype=np.int64)
    cand = scenario.need[devices] & mods["trainable"][None, :]
    free = scenario.devices.memory_bytes[devices] - scenario.need[devices] @ mods["memory_bytes"]
    able = cand & (mods["train_memory_bytes"][None, :] <= free[:, None])
    ids, inverse = np.unique(np.asarray(cluster), return_inverse=True)
    trained = np.zeros((len(ids), len(scenario.modules)))
    can = np.zeros_like(trained)
    np.add.at(trained, inverse, np.asarray(train, bool) & cand)
    np.add.at(can, inverse, able)
    return bool((trained >= np.minimum(min_trainers, can)).all())


def _positive(name: str, value, required: bool) -> None:
    if value is None and not required:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} = {value!r}: must be a finite number > 0")


#: each datum of an objective and the objectives it belongs to (a target latency only with ``energy``, ...)
OBJECTIVE_DATA = {"target_latency_s": ("energy",), "energy_budget_j": ("latency",), "w_latency": ("weighted",),
                  "w_energy": ("weighted",)}


def check_objective(objective: str, target_latency_s, energy_budget_j, w_latency, w_energy) -> None:
    """Raise :class:`~hffm_opt.errors.ConfigError` naming the field when the objective's data do not fit it: a
    target only (and always) with ``energy``, an energy budget only with ``latency``, both weights only (and always)
    with ``weighted``."""
    if objective not in OBJECTIVES:
        raise ConfigError(f"objective = {objective!r}: must be one of {list(OBJECTIVES)}")
    _positive("target_latency_s", target_latency_s, objective == "energy")
    _positive("energy_budget_j", energy_budget_j, False)
    _positive("w_latency", w_latency, objective == "weighted")
    _positive("w_energy", w_energy, objective == "weighted")
    given = {"target_latency_s": target_latency_s, "energy_budget_j": energy_budget_j, "w_latency": w_latency,
             "w_energy": w_energy}
    for name, allowed in OBJECTIVE_DATA.items():
        value = given[name]
        if value is not None and objective not in allowed:
            raise ConfigError(f"{name} = {value!r}: only with objective {' or '.join(map(repr, allowed))} (objective "
                              f"= {objective!r})")


def build_joint(scenario: Scenario, start: Plan, target_latency_s: float | None, start_name: str = "",
                objective: str = "energy", energy_budget_j: float | None = None, w_latency: float | None = None,
                w_energy: float | None = None, round_cap_s: float = math.inf, **full) -> JointModel:
    """The F4 model of ``scenario`` from ``start`` (module docstring), pre-checked; bad objective data raise
    :class:`~hffm_opt.errors.ConfigError` (:func:`check_objective`); ``full`` are the options of
    :func:`check_full_options` (default: placement, tiers and association those of ``start``); ``round_cap_s``
    (s, > 0) caps each edge round but the last, with the energy objective and without the full-F4 options."""
    t0 = time.perf_counter()
    check_objective(objective, target_latency_s, energy_budget_j, w_latency, w_energy)
    full = check_full_options(**full)
    if isinstance(round_cap_s, bool) or not isinstance(round_cap_s, numbers.Real) or not round_cap_s > 0:
        raise ConfigError(f"round_cap_s = {round_cap_s!r}: must be a number of seconds > 0 (inf: no cap)")
    if math.isfinite(round_cap_s) and (objective != "energy" or full != check_full_options()):
        raise ConfigError(f"round_cap_s = {round_cap_s!r}: only with the energy objective and plain F4 (the start's "
                          "placement, tiers and association)")
    if start.mode != "hierarchical":
        raise ConfigError(f"start.mode = {start.mode!r}: F4 plans hierarchical training")
    target = None if target_latency_s is None else float(target_latency_s)
    message = joint_precheck(scenario, start, target)
    model = JointModel(scenario, start, target, start_name or start.scheduler, message, time.perf_counter() - t0)
    return dataclasses.replace(model, objective=objective, energy_budget_j=energy_budget_j, w_latency=w_latency,
                               w_energy=w_energy, round_cap_s=float(round_cap_s), **full)


def joint_precheck(scenario: Scenario, start: Plan, target_latency_s: float | None) -> str | None:
    """Why F4 is infeasible, naming the device or edge server, or None (a necessary-condition check).

    - memory: a device cannot hold the modules it needs while training the ones ``start`` assigns it;
    - deadline: a device's compute at full CPU speed plus its fastest first hop at full power (its upload with
      the whole band of its edge, or its best D2D link) exceeds the target; an edge server whose backhaul transfer
      alone exceeds the period e_agg x target (without a target: the memory check only).
    """
    dev, mods, e_agg = scenario.devices, scenario.module_arrays, int(start.e_agg)
    held = (scenario.need & ~start.train) @ mods["memory_bytes"] + start.train @ (mods["memory_bytes"]
                                                                               + mods["train_memory_bytes"])
    over = np.flatnonzero(held > dev.memory_bytes)
    if over.size:
        u = int(over[0])
        return (f"memory: device {dev.ids[u]} needs {held[u]:.6g} bytes to hold and train its modules but has "
                f"{dev.memory_bytes[u]:.6g} bytes" + (f" ({over.size - 1} more devices likewise)" if over.size > 1 else ""))
    if target_latency_s is None:
        return None
    noise, d2d = scenario.noise_psd_w_per_hz, scenario.d2d
    no_d2d = start.replace(aggregator=np.full(scenario.n_edges, -1), parent=np.full(scenario.n_devices, -1))
    for e in range(scenario.n_edges):
        data = cluster_data(scenario, no_d2d, e)  # each device's own update on its first hop
        if len(data.members) == 0:
            continue
        fixed = data.backhaul_s + data.downlink_s  # the least any structure spends on them (one edge downlink)
        if fixed > e_agg * target_latency_s:
            return (f"deadline: edge {scenario.edges.ids[e]}'s backhaul and downlink transfers alone take "
                    f"{fixed:.6g} s, above the period {e_agg} x {target_latency_s:.6g} s")
        compute = np.where(data.cycles > 0, data.cycles / data.fmax, 0.0)
        direct = data.up_bits / shannon_rate(data.band_hz, data.pmax, data.up_gain, noise)
        hop = np.full(len(data.members), np.inf)
        keep, src, _ = cluster_links(scenario, data.members)
        if keep.size:
            rate = shannon_rate(d2d.bandwidth_hz, dev.pmax_w[d2d.src[keep]], d2d.gain[keep], noise)
            np.minimum.at(hop, src, data.up_bits[src] / rate)
        need = compute + np.where(data.up_bits > 0, np.minimum(direct, hop), 0.0)
        late = np.flatnonzero(need > target_latency_s)
        if late.size:
            u = int(late[0])
            return (f"deadline: device {dev.ids[data.members[u]]} needs {compute[u]:.6g} s of compute at full CPU speed "
                    f"and {need[u] - compute[u]:.6g} s for its fastest first hop at full power (the whole band of edge "
                    f"{scenario.edges.ids[e]} or its best D2D link): above the target {target_latency_s:.6g} s per round")
    return None
