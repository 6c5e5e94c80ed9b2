"""MILP formulations (F1 placement, F2 relay tree, association) and the HiGHS / Gurobi backends.

Reference values are computed here from first principles (enumeration, root finding), not with the code under test.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import sys

import highspy
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq

from hffm_opt.errors import InstanceTooLarge, SolverUnavailable
from hffm_opt.formulations.association import build_association
from hffm_opt.formulations.milp_model import MilpModel, export
from hffm_opt.formulations.placement import build_placement
from hffm_opt.formulations.relay_tree import build_relay_tree
from hffm_opt.network import generators
from hffm_opt.network.channel import min_bandwidth
from hffm_opt.solvers import milp as milp_mod
from hffm_opt.solvers.milp import solve_milp
from hffm_opt.solvers.result import Result

HAS_GUROBI = importlib.util.find_spec("gurobipy") is not None
needs_gurobi = pytest.mark.skipif(not HAS_GUROBI, reason="gurobipy is not installed (pip install \"hffm-opt[gurobi]\")")
REL = 1e-6


def close(a, b, rel=REL):
    return abs(a - b) <= rel * max(abs(a), abs(b), 1.0)


# ---------------------------------------------------------------------- F2 reference: enumeration
def random_cluster(n, seed, p_allowed=0.8, p_cand=0.7):
    rng = np.random.default_rng(seed)
    ul, dl = rng.uniform(0.05, 2.0, (n, n)), rng.uniform(0.05, 2.0, (n, n))
    ue, de = rng.uniform(0.01, 1.0, (n, n)), rng.uniform(0.01, 1.0, (n, n))
    c = rng.uniform(0.0, 1.0, n)
    allowed = rng.random((n, n)) < p_allowed
    np.fill_diagonal(allowed, False)
    cand = rng.random(n) < p_cand
    return ul, ue, dl, de, c, allowed, cand


def paths_to_root(parent, root):
    """Each node's list of arcs (child, parent) up to the root, or None if ``parent`` is not a tree into ``root``."""
    n = len(parent)
    out = []
    for u in range(n):
        path, w = [], u
        while w != root and len(path) <= n:
            path.append((w, parent[w]))
            w = parent[w]
        if w != root:
            return None
        out.append(path)
    return out


def tree_objective(parent, root, ul, ue, dl, de, c, w_T, w_E):
    """First principles: with in-network aggregation the root holds everything once the slowest leaf-to-root
    chain (compute of its first node + every hop) is done; the broadcast reaches u after the hops root -> u."""
    paths = paths_to_root(parent, root)
    up = max(c[u] + sum(ul[a, b] for a, b in paths[u]) for u in range(len(c)))
    down = max(sum(dl[b, a] for a, b in paths[u]) for u in range(len(c)))
    energy = sum(ue[u, parent[u]] + de[parent[u], u] for u in range(len(c)) if u != root)
    return w_T * (up + down) + w_E * energy


def enumerate_trees(ul, ue, dl, de, c, allowed, cand, w_T, w_E):
    """Least objective over every rooted spanning arborescence (inf if none exists)."""
    n = len(c)
    best = np.inf
    for root in np.flatnonzero(cand):
        others = [u for u in range(n) if u != root]
        for choice in itertools.product(range(n), repeat=n - 1):
            parent = np.full(n, -1)
            if any(v == u or not allowed[u, v] for u, v in zip(others, choice)):
                continue
            parent[others] = choice
            if paths_to_root(parent, root) is None:
                continue
            best = min(best, tree_objective(parent, root, ul, ue, dl, de, c, w_T, w_E))
    return best


def check_tree(parent, root, n, allowed):
    assert parent.shape == (n,) and parent[root] == -1 and (parent >= 0).sum() == n - 1
    assert paths_to_root(parent, root) is not None
    child = np.flatnonzero(parent >= 0)
    assert allowed[child, parent[child]].all()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.sampled_from([3, 4]), seed=st.integers(0, 2**31 - 1), p_allowed=st.sampled_from([0.5, 0.8, 1.0]),
       w_T=st.floats(0.1, 2.0), w_E=st.floats(0.0, 2.0))
def test_f2_equals_brute_force(n, seed, p_allowed, w_T, w_E):
    ul, ue, dl, de, c, allowed, cand = random_cluster(n, seed, p_allowed)
    ref = enumerate_trees(ul, ue, dl, de, c, allowed, cand, w_T, w_E)
    model = build_relay_tree(ul, ue, dl, de, c, w_T, w_E, allowed, cand)
    res = solve_milp(model, mip_gap=0.0)
    if not np.isfinite(ref):
        assert res.status == "infeasible" and model.precheck_message
        return
    assert res.status == "optimal", res.message
    assert close(res.objective, ref), (res.objective, ref)
    root, parent = res.decision["root"], res.decision["parent"]
    assert cand[root]
    check_tree(parent, root, n, allowed)
    assert close(tree_objective(parent, root, ul, ue, dl, de, c, w_T, w_E), ref)


def test_f2_without_tightening_and_with_warm_start_agree():
    ul, ue, dl, de, c, allowed, _ = random_cluster(6, 11, p_allowed=1.0)
    ref = solve_milp(build_relay_tree(ul, ue, dl, de, c, 1.0, 0.3, allowed, tighten=False), mip_gap=0.0)
    star = np.full(6, 2)
    star[2] = -1
    warm = solve_milp(build_relay_tree(ul, ue, dl, de, c, 1.0, 0.3, allowed), mip_gap=0.0,
                      warm_start={"root": 2, "parent": star})
    assert ref.status == warm.status == "optimal"
    assert close(ref.objective, warm.objective)
    check_tree(warm.decision["parent"], warm.decision["root"], 6, allowed)


def test_f2_one_node_and_unreachable_names_node():
    one = build_relay_tree(np.zeros((1, 1)), np.zeros((1, 1)), np.zeros((1, 1)), np.zeros((1, 1)), [0.5], 1.0, 0.0)
    res = solve_milp(one)
    assert res.status == "optimal" and res.decision["root"] == 0 and close(res.objective, 0.5)
    ul, ue, dl, de, c, _, _ = random_cluster(3, 0)
    allowed = np.zeros((3, 3), bool)
    allowed[0, 1] = True  # node 2 has no link and may not be the root
    model = build_relay_tree(ul, ue, dl, de, c, 1.0, 0.0, allowed, [False, True, False], node_ids=[10, 11, 12])
    res = solve_milp(model)
    assert res.status == "infeasible" and "device id 12" in res.message


# ---------------------------------------------------------------------- F1 placement
def memory_used(sc, train):
    mods = sc.module_arrays
    return sc.need @ mods["memory_bytes"] + train @ mods["train_memory_bytes"]


def test_f1_memory_forces_dropping_a_module():
    sc = generators.clustered(1, 3, seed=0)
    mods = sc.module_arrays
    cand = sc.need & mods["trainable"]
    held = sc.need @ mods["memory_bytes"]
    mem = sc.devices.memory_bytes.copy()
    mem[0] = held[0] + cand[0] @ mods["train_memory_bytes"] - 2e6  # 2 MB short of training everything
    sc = sc.replace(devices=dataclasses.replace(sc.devices, memory_bytes=mem))
    rate = np.full(3, 2e7)
    full = solve_milp(build_placement(generators.clustered(1, 3, seed=0), rate, w_U=100.0), mip_gap=0.0)
    assert full.status == "optimal" and (full.decision["train"] == cand).all()
    res = solve_milp(build_placement(sc, rate, w_U=100.0, coverage=1), mip_gap=0.0)
    assert res.status == "optimal", res.message
    train = res.decision["train"]
    assert (memory_used(sc, train) <= sc.devices.memory_bytes).all()
    assert train[0].sum() < cand[0].sum()  # device 0 dropped at least one module
    assert (train[1:] == cand[1:]).all()
    assert not (train & ~cand).any()
    assert (train.sum(axis=0)[mods["trainable"]] >= 1).all()


def test_f1_coverage_and_tiers():
    sc = generators.clustered(2, 3, seed=3, profile=generators.DeviceProfile(heterogeneity="device", seed=4))
    mods = sc.module_arrays
    cand = sc.need & mods["trainable"]
    d2d = np.array([True, False])
    model = build_placement(sc, np.full(sc.n_devices, 1e7), w_T=1.0, w_E=0.0, w_U=0.0, coverage=2, d2d_clusters=d2d)
    res = solve_milp(model, mip_gap=0.0)
    assert res.status == "optimal", res.message
    train, tier = res.decision["train"], res.decision["tier"]
    for e in range(2):
        members = sc.cluster(e)
        needed = cand[members].sum(axis=0)
        trained = train[members].sum(axis=0)
        assert (trained >= np.minimum(2, needed)).all()
    assert not (tier[1] == 0).any()  # no aggregator tier without D2D
    assert not ((tier == 2) & mods["cluster_local"]).any()
    # T equals the slowest device's compute + upload of what it trains
    assert close(res.objective, (train * model.data["time"]).sum(axis=1).max())


def test_f1_infeasible_coverage_is_named():
    sc = generators.clustered(1, 2, seed=0)
    held = sc.need @ sc.module_arrays["memory_bytes"]
    sc = sc.replace(devices=dataclasses.replace(sc.devices, memory_bytes=held + 2e6))  # no room to train an expert (3 MB)
    model = build_placement(sc, np.full(2, 1e7), coverage=1)
    res = solve_milp(model)
    assert res.status == "infeasible"
    assert "coverage" in res.message and "expert:0" in res.message


# ---------------------------------------------------------------------- association
def reference_bandwidth(bits, t, g, p, n0):
    """Root of b log2(1 + g p / (n0 b)) = bits / t by bracketing (inf when the rate cap g p / (n0 ln2) is too low)."""
    rho = bits / t
    if rho >= g * p / (n0 * np.log(2.0)):
        return np.inf
    f = lambda b: b * np.log2(1.0 + g * p / (n0 * b)) - rho  # noqa: E731
    hi = rho
    while f(hi) < 0:
        hi *= 2.0
    return brentq(f, 1e-9 * rho, hi, xtol=1e-12, rtol=1e-14)


def test_min_bandwidth_matches_root_finding():
    rng = np.random.default_rng(5)
    g = 10 ** rng.uniform(-12, -9, 50)
    bits = rng.uniform(1e6, 1e8, 50)
    t = rng.uniform(0.1, 5.0, 50)
    got = min_bandwidth(bits, t, 1.0, g, 4e-24)
    ref = np.array([reference_bandwidth(b, tt, gg, 1.0, 4e-24) for b, tt, gg in zip(bits, t, g)])
    assert np.allclose(got, ref, rtol=1e-9)
    assert min_bandwidth(1e9, 1e-6, 1.0, 1e-12, 4e-24) == np.inf
    assert min_bandwidth(0.0, 1.0, 1.0, 1e-12, 4e-24) == 0.0


def test_association_respects_capacity_and_matches_brute_force():
    sc = generators.clustered(2, 2, seed=7)
    bits, t, n0 = 48e6, 3.0, sc.noise_psd_w_per_hz
    g, p = sc.devices.uplink_gain, sc.devices.pmax_w
    b_req = np.array([[reference_bandwidth(bits, t, g[u, e], p[u], n0) for e in range(2)] for u in range(4)])
    b_ref = np.array([0.5e6, 0.5e6])
    b_use = np.maximum(b_req, b_ref)
    energy = n0 * b_use * t / g * (2.0 ** (bits / (b_use * t)) - 1.0)
    greedy = energy.argmin(axis=1)
    load = np.bincount(greedy, weights=b_req[np.arange(4), greedy], minlength=2)
    busy = int(np.argmax(load))
    band = np.empty(2)
    band[busy] = 0.999 * load[busy]  # the energy-greedy association does not fit
    band[1 - busy] = b_req[:, 1 - busy].sum() * 1.001
    assert (b_req <= band).all()
    sc = sc.replace(edges=dataclasses.replace(sc.edges, bandwidth_hz=band))
    best, best_a = np.inf, None
    for a in itertools.product(range(2), repeat=4):
        a = np.array(a)
        if (np.bincount(a, weights=b_req[np.arange(4), a], minlength=2) <= band).all():
            cost = energy[np.arange(4), a].sum()
            if cost < best:
                best, best_a = cost, a
    assert (best_a != greedy).any()
    model = build_association(sc, bits, t, energy_bandwidth_hz=b_ref)
    res = solve_milp(model, mip_gap=0.0)
    assert res.status == "optimal", res.message
    assert close(res.objective, best)
    a = res.decision["association"]
    assert (np.bincount(a, weights=b_req[np.arange(4), a], minlength=2) <= band * (1 + 1e-9)).all()
    assert close(energy[np.arange(4), a].sum(), best)


@pytest.mark.parametrize("solver", ["highs", pytest.param("gurobi", marks=needs_gurobi)])
def test_infeasible_association_names_the_device(solver):
    sc = generators.clustered(2, 3, seed=1)
    t = np.full(6, 3.0)
    t[4] = 0.01  # device 4 cannot send 48 Mbit in 10 ms to any edge server
    model = build_association(sc, 48e6, t)
    assert "device id 4" in model.precheck_message
    res = solve_milp(model, solver=solver)
    assert res.status == "infeasible" and res.decision == {}
    assert "device id 4" in res.message and "assign" in res.message


def packing_infeasible_association():
    """Three devices each needing 60% of an edge's band, one small one, two edges: the totals fit (1.9 bands of
    2) but no integral association does, so no pre-check can name it."""
    sc = generators.clustered(2, 2, seed=2)
    sc = sc.replace(devices=dataclasses.replace(sc.devices, uplink_gain=np.full((4, 2), 1e-10)))
    bits = np.array([48e6, 48e6, 48e6, 1e6])
    b_req = build_association(sc, bits, 3.0).data["b_req"]
    sc = sc.replace(edges=dataclasses.replace(sc.edges, bandwidth_hz=np.full(2, b_req[0, 0] / 0.6)))
    return build_association(sc, bits, 3.0)


@pytest.mark.parametrize("solver", ["highs", pytest.param("gurobi", marks=needs_gurobi)])
def test_packing_infeasibility(solver):
    model = packing_infeasible_association()
    assert model.precheck_message is None
    res = solve_milp(model, solver=solver)
    assert res.status == "infeasible"
    if solver == "gurobi":  # Gurobi's IIS names the constraint family and the edges
        assert "capacity" in res.message and "edge id 0" in res.message and "edge id 1" in res.message
    else:
        assert "solver='gurobi'" in res.message


# ---------------------------------------------------------------------- backends
def small_models() -> dict[str, MilpModel]:
    ul, ue, dl, de, c, allowed, _ = random_cluster(5, 3, p_allowed=0.9)
    sc = generators.clustered(2, 3, seed=3, profile=generators.DeviceProfile(heterogeneity="device", seed=1))
    return {"f2": build_relay_tree(ul, ue, dl, de, c, 1.0, 0.5, allowed),
            "f1": build_placement(sc, np.full(6, 1.5e7), w_T=1.0, w_E=0.2, w_U=5.0, coverage=2,
                                  d2d_clusters=np.array([True, False])),
            "association": build_association(sc, 48e6, 2.0)}


@needs_gurobi
def test_highs_and_gurobi_agree():
    for name, model in small_models().items():
        h = solve_milp(model, solver="highs", mip_gap=0.0)
        g = solve_milp(model, solver="gurobi", mip_gap=0.0)
        assert h.status == g.status == "optimal", (name, h.message, g.message)
        assert close(h.objective, g.objective), (name, h.objective, g.objective)
        assert h.backend == "highs" and g.backend == "gurobi" and g.backend_version.count(".") == 2


@needs_gurobi
def test_oversized_model_on_gurobi_raises_instance_too_large():
    if not milp_mod.gurobi_size_limited():
        pytest.skip("this Gurobi licence is not size-limited")
    ul, ue, dl, de, c, _, _ = random_cluster(35, 0, p_allowed=1.0)
    model = build_relay_tree(ul, ue, dl, de, c, 1.0, 0.0)
    n_var, n_con = model.size()
    assert n_var > 2000
    with pytest.raises(InstanceTooLarge) as info:
        solve_milp(model, solver="gurobi")
    text = str(info.value)
    assert "2000" in text and str(n_var) in text and str(n_con) in text


def test_missing_gurobipy_raises_solver_unavailable(monkeypatch):
    monkeypatch.setitem(sys.modules, "gurobipy", None)  # makes ``import gurobipy`` fail
    with pytest.raises(SolverUnavailable, match=r'pip install "hffm-opt\[gurobi\]"'):
        solve_milp(small_models()["association"], solver="gurobi")


@pytest.mark.parametrize("suffix", [".lp", ".mps"])
def test_export_reread_by_highspy_gives_same_optimum(tmp_path, suffix):
    for name, model in small_models().items():
        res = solve_milp(model, mip_gap=0.0)
        path = export(model, tmp_path / f"{name}{suffix}")
        h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        assert h.readModel(str(path)) == highspy.HighsStatus.kOk
        h.setOptionValue("mip_rel_gap", 0.0)
        h.setOptionValue("mip_abs_gap", 1e-10)
        h.run()
        assert h.getModelStatus() == highspy.HighsModelStatus.kOptimal
        assert close(h.getInfo().objective_function_value, res.objective), name


def test_solver_output_stays_off_stdout(capfd):
    model = small_models()["f2"]
    solve_milp(model, solver="highs")
    if HAS_GUROBI:
        solve_milp(model, solver="gurobi")
    out = capfd.readouterr().out
    assert out == ""


def test_result_fields_and_time_limit():
    ul, ue, dl, de, c, _, _ = random_cluster(12, 4, p_allowed=1.0)
    res = solve_milp(build_relay_tree(ul, ue, dl, de, c, 1.0, 0.1), time_limit=0.05, mip_gap=0.0)
    assert isinstance(res, Result)
    assert res.status in ("time_limit", "optimal")
    assert res.decision  # the heuristic start is always an incumbent
    if res.bound is None:  # stopped before HiGHS proved any bound (a loaded machine): the gap is unknown
        assert res.gap is None and res.status == "time_limit"
    else:
        assert res.objective >= res.bound - 1e-9 and res.gap is not None and res.gap >= 0
    assert res.build_s >= 0 and res.runtime_s >= 0 and res.backend == "highs" and res.backend_version
    assert "HiGHS" in res.log
    with pytest.raises(ValueError):
        Result(status="done", backend="highs")
    with pytest.raises(ValueError):
        solve_milp(build_relay_tree(ul, ue, dl, de, c), solver="cplex")
