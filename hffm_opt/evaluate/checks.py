"""``check(scenario, plan)``: every constraint of section 3 of the design; raises :class:`PlanError` naming the
field, the value and the rule, and returns the relay forest's depths for the accounting. A plan made for another
scenario (its recorded fingerprint differs) and a plan beyond the size limits (edge rounds, local steps, batch)
are refused first. A plan that trains nothing is refused, and so is an uplink that carries bits on less bandwidth
than any scenario link may have (:data:`~hffm_opt.network.limits.RANGES`: 1 Hz)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import PlanError
from ..network import trees
from ..network.documents import as_number, short
from ..network.limits import MAX_BATCH, MAX_E_AGG, MAX_LOCAL_STEPS, RANGES
from ..network.scenario import Scenario
from ..plan import AGG, CLOUD, EDGE, MODES, RELAY_MODES, TIERS, Plan

TOL = 1e-9  # relative tolerance of every capacity check
LEAST_BANDWIDTH_HZ = RANGES["edge_servers.bandwidth_hz"].low  # of an uplink that carries bits, as of any scenario link


def _bad(field_name, value, rule):
    raise PlanError(f"{field_name} = {short(value)}: {rule}")


def _first(mask, field_name, values, ids, rule):
    bad = np.flatnonzero(~mask)
    if bad.size:
        i = int(bad[0])
        v = values[i]
        _bad(f"{field_name}[{ids[i]}]", v.tolist() if hasattr(v, "tolist") else v, rule)


@dataclass(frozen=True)
class Tree:
    member: np.ndarray  # (U,) device is in a D2D cluster
    depth: np.ndarray  # (U,) depth in its relay tree, -1 outside


def check(scenario: Scenario, plan: Plan) -> Tree:
    """Every constraint of section 3; returns the relay-forest depths. Raises :class:`PlanError`."""
    n, n_e, n_k = scenario.n_devices, scenario.n_edges, len(scenario.modules)
    dev, ids = scenario.devices, scenario.devices.ids
    eid = scenario.edges.ids
    if plan.scenario_fingerprint and plan.scenario_fingerprint != scenario.fingerprint:
        other = ("another version of scenario" if plan.scenario_name == scenario.name
                 else f"scenario {plan.scenario_name!r}, not for scenario")
        _bad("plan.scenario_fingerprint", plan.scenario_fingerprint,
             f"the plan was made for {other} {scenario.name!r} (fingerprint {scenario.fingerprint}); make a plan for "
             f"this scenario")
    if plan.mode not in MODES:
        _bad("mode", plan.mode, f"must be one of {MODES}")
    if plan.relay_mode not in RELAY_MODES:
        _bad("relay_mode", plan.relay_mode, f"must be one of {RELAY_MODES}")
    for name, limit in (("e_agg", MAX_E_AGG), ("local_steps", MAX_LOCAL_STEPS), ("batch_size", MAX_BATCH)):
        as_number(getattr(plan, name), name, PlanError, integer=True, low=1, high=limit)
    if plan.mode == "star" and plan.e_agg != 1:
        _bad("e_agg", plan.e_agg, "a star plan aggregates at the cloud every round: e_agg must be 1")
    if plan.deadline_s is not None and not as_number(plan.deadline_s, "deadline_s", PlanError) > 0:
        _bad("deadline_s", plan.deadline_s, "must be a finite number of seconds > 0, or None")
    shapes = {"association": (n,), "train": (n, n_k), "tier": (n_e, n_k), "aggregator": (n_e,), "parent": (n,),
              "bandwidth_hz": (n,), "power_w": (n,), "d2d_power_w": (n,), "d2d_down_power_w": (n,), "cpu_hz": (n,)}
    for name, want in shapes.items():
        if getattr(plan, name).shape != want:
            _bad(f"{name}.shape", getattr(plan, name).shape, f"must be {want} for this scenario")
    for name in ("bandwidth_hz", "power_w", "d2d_power_w", "d2d_down_power_w", "cpu_hz"):
        v = getattr(plan, name)
        _first(np.isfinite(v) & (v >= 0), name, v, ids, "must be finite and >= 0")

    a = plan.association
    _first((a >= 0) & (a < n_e), "association", a, ids, f"must be an edge index in [0, {n_e})")
    _first((plan.aggregator >= -1) & (plan.aggregator < n), "aggregator", plan.aggregator, eid,
           "must be a device index or -1")
    _first((plan.parent >= -1) & (plan.parent < n), "parent", plan.parent, ids, "must be a device index or -1")
    _first(plan.parent != np.arange(n), "parent", plan.parent, ids, "a device cannot be its own relay parent")
    _first(np.isfinite(dev.uplink_gain[np.arange(n), a]), "association", eid[a], ids,
           "no uplink gain to that edge server: the association is not allowed")
    mods = scenario.module_arrays
    x = plan.train
    _first(~(x & ~scenario.need).any(axis=1), "train", x.astype(int), ids, "a device may train only modules in Need(u)")
    _first(~(x & ~mods["trainable"]).any(axis=1), "train", x.astype(int), ids, "frozen modules cannot be trained")
    if not x.any():
        raise PlanError("train = <all 0>: no device trains any module; nothing to price")
    mem = (scenario.need & ~x) @ mods["memory_bytes"] + x @ (mods["memory_bytes"] + mods["train_memory_bytes"])
    over = np.flatnonzero(mem > dev.memory_bytes * (1 + TOL))
    if over.size:
        u = int(over[0])
        _bad(f"devices[id={ids[u]}].memory_bytes", float(dev.memory_bytes[u]),
             f"the modules it holds (those it needs, and what training adds for those it trains) take {mem[u]:.6g} "
             "bytes")
    _first(plan.cpu_hz <= dev.cpu_hz * (1 + TOL), "cpu_hz", plan.cpu_hz, ids, "exceeds the device's max CPU frequency")
    _first(~(x.any(axis=1) & (plan.cpu_hz <= 0)), "cpu_hz", plan.cpu_hz, ids, "a device that trains needs cpu_hz > 0")
    _first(plan.power_w <= dev.pmax_w * (1 + TOL), "power_w", plan.power_w, ids, "exceeds the device's max power")
    _first(plan.d2d_power_w <= dev.pmax_w * (1 + TOL), "d2d_power_w", plan.d2d_power_w, ids,
           "exceeds the device's max power")
    t = plan.tier
    _first(((t >= 0) & (t < len(TIERS))).all(axis=1), "tier", t, eid, f"tiers index {TIERS}")
    _first(~((t == CLOUD) & mods["cluster_local"]).any(axis=1), "tier", t, eid,
           "a cluster-local module never goes to the cloud")
    if plan.mode == "star":
        _first(((t == CLOUD) | (mods["cluster_local"] & (t == EDGE))).all(axis=1), "tier", t, eid,
               "a star plan aggregates every module at the cloud (cluster-local modules at the edge)")
        _first(plan.aggregator < 0, "aggregator", plan.aggregator, eid, "a star plan has no D2D aggregation")

    d2d = plan.uses_d2d
    _first(~((t == AGG).any(axis=1) & ~d2d), "tier", t, eid,
           "the 'aggregator' tier needs a D2D aggregator in the cluster")
    uplinkers = _uplinkers(plan) if plan.mode == "hierarchical" else np.zeros(n, bool)
    _first(~uplinkers | (plan.bandwidth_hz > 0), "bandwidth_hz", plan.bandwidth_hz, ids,
           "a device that uploads needs b_u > 0")
    _first(~uplinkers | (plan.power_w > 0), "power_w", plan.power_w, ids, "a device that uploads needs p_u > 0")
    _first(~(uplinkers & _sends_bits(scenario, plan)) | (plan.bandwidth_hz >= LEAST_BANDWIDTH_HZ), "bandwidth_hz",
           plan.bandwidth_hz, ids, f"an uplink that carries bits needs b_u >= {LEAST_BANDWIDTH_HZ:g} Hz (the least "
           "bandwidth of any scenario link)")
    used = np.bincount(a, weights=np.where(plan.mode == "hierarchical", plan.bandwidth_hz, 0.0), minlength=n_e)
    _first(used <= scenario.edges.bandwidth_hz * (1 + TOL), "bandwidth_hz(sum over cluster)", used, eid,
           "the cluster's uplink shares exceed the edge bandwidth B_e")
    return _check_tree(scenario, plan)


def _uplinkers(plan: Plan) -> np.ndarray:
    """Devices that use the edge uplink: every device of a non-D2D cluster, and D2D aggregators."""
    up = ~plan.uses_d2d[plan.association]
    agg = plan.aggregator[plan.aggregator >= 0]
    up[agg] = True
    return up


def _sends_bits(scenario: Scenario, plan: Plan) -> np.ndarray:
    """(U,) devices with bits to upload: what a device outside D2D trains, or (a D2D aggregator) what its cluster
    trains at the edge tier or above."""
    bits, x = scenario.module_arrays["update_bits"], plan.train
    cluster_bits = (plan.cluster_modules() & (plan.tier >= EDGE)) @ bits
    return np.where(plan.uses_d2d[plan.association], cluster_bits[plan.association], x @ bits) > 0


def _check_tree(scenario: Scenario, plan: Plan) -> Tree:
    n, ids, eid = scenario.n_devices, scenario.devices.ids, scenario.edges.ids
    a, agg, par = plan.association, plan.aggregator, plan.parent  # indices in range: checked by check()
    roots = agg[agg >= 0]
    _first(a[roots] == np.flatnonzero(agg >= 0), "aggregator", ids[roots], eid[agg >= 0],
           "the D2D aggregator must be associated with that edge server")
    member = plan.uses_d2d[a]
    is_root = np.zeros(n, bool)
    is_root[roots] = True
    stray = np.flatnonzero(~member & (par >= 0))
    if stray.size:
        u = int(stray[0])
        _bad(f"parent[{ids[u]}]", int(par[u]), f"a device outside a D2D cluster has no relay parent (its edge server "
             f"{eid[a[u]]} has aggregator -1)")
    _first(~(is_root & (par >= 0)), "parent", par, ids, "the aggregator is the root of its tree (parent -1)")
    _first(~(member & ~is_root & (par < 0)), "parent", par, ids,
           "every non-aggregator device of a D2D cluster needs a parent")
    child = np.flatnonzero(par >= 0)
    if child.size:
        _first(a[par[child]] == a[child], "parent", ids[par[child]], ids[child], "relay links stay inside the cluster")
        up_ok = scenario.link_lookup(child, par[child]) >= 0
        down_ok = scenario.link_lookup(par[child], child) >= 0
        _first(up_ok & down_ok, "parent", ids[par[child]], ids[child],
               "a relay-tree link must be a listed D2D link in both directions (in range)")
        _first(plan.d2d_power_w[child] > 0, "d2d_power_w", plan.d2d_power_w[child], ids[child],
               "a relay link needs power > 0")
        down = plan.d2d_down_power_w[child]
        _first(down > 0, "d2d_down_power_w", down, ids[child], "a relay link needs power > 0")
        _first(down <= scenario.devices.pmax_w[par[child]] * (1 + TOL), "d2d_down_power_w", down, ids[child],
               "exceeds the max power of the parent, who transmits it")
    depth = trees.depths(par, member, roots)
    _first(~(member & (depth < 0)), "parent", par, ids, "the relay tree has a cycle or does not reach the aggregator")
    return Tree(member=member, depth=depth)

