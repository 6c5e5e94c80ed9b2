"""The ``solve`` entry point on every backend name, infeasibility messages, and plans of every scheduler."""

from __future__ import annotations

import importlib.util

import networkx as nx
import numpy as np
import pytest
from conftest import small_clustered as small
from conftest import tiny_scenario
from hypothesis import given, settings
from hypothesis import strategies as st

from hffm_opt.errors import SolverUnavailable
from hffm_opt.evaluate import evaluate
from hffm_opt.formulations.allocation import AllocationData, build_min_energy
from hffm_opt.formulations.joint import build_joint
from hffm_opt.formulations.relay_tree import build_relay_tree
from hffm_opt.network import generators
from hffm_opt.plan import baseline_plan
from hffm_opt.schedulers import available, schedule
from hffm_opt.schedulers.optimising import joint_model
from hffm_opt.solvers import Result, Status, solve
from hffm_opt.solvers import milp as milp_mod
from hffm_opt.solvers.fast.arborescence import min_arborescence

HAS_GUROBI = importlib.util.find_spec("gurobipy") is not None
needs_gurobi = pytest.mark.skipif(not HAS_GUROBI, reason='gurobipy is not installed (pip install "hffm-opt[gurobi]")')
N0 = 10 ** (-204 / 10) / 1e3


def f2_instance(seed, n=5):
    rng = np.random.default_rng(seed)
    lat, en = rng.uniform(0.05, 2.0, (n, n)), rng.uniform(0.01, 1.0, (n, n))
    return build_relay_tree(lat, en, lat.T.copy(), en.T.copy(), rng.uniform(0, 1, n), w_T=1.0, w_E=0.5)


def allocation():
    rng = np.random.default_rng(0)
    return build_min_energy(AllocationData.create(np.full(4, 30e6), 10 ** rng.uniform(-11, -9, 4), 0.5, N0, 12e6,
                                                  np.full(4, 2.0)))


# ---------------------------------------------------------------------- every backend name
@pytest.mark.parametrize("solver", ["highs", pytest.param("gurobi", marks=needs_gurobi)])
def test_milp_backends_return_an_optimal_tree(solver):
    res = solve(f2_instance(1), solver, time_limit=30, mip_gap=0.0)
    assert isinstance(res, Result) and res.status == Status.OPTIMAL and res.backend == solver
    parent = res.decision["parent"]
    assert (parent == -1).sum() == 1 and res.build_s >= 0 and res.runtime_s >= 0 and res.backend_version


@needs_gurobi
@pytest.mark.parametrize("seed", range(4))
def test_highs_and_gurobi_agree_on_small_f2(seed):
    a, b = solve(f2_instance(seed), "highs", mip_gap=0.0), solve(f2_instance(seed), "gurobi", mip_gap=0.0)
    assert a.status == b.status == "optimal"
    assert abs(a.objective - b.objective) <= 1e-6 * max(1.0, abs(a.objective))


@pytest.mark.parametrize("solver", ["fast", "cvxpy:CLARABEL", "cvxpy", "cvxpy:SCS"])
def test_convex_backends(solver):
    res = solve(allocation(), solver)
    ref = solve(allocation(), "fast").objective
    if res.status == "error":  # SCS may stop short of the KKT tolerance: then it must say so, never return a value
        assert solver == "cvxpy:SCS" and "KKT" in res.message and res.objective is None
        return
    assert res.status == "optimal" and abs(res.objective - ref) <= 1e-6 * ref


def test_exact_and_f4_on_a_joint_model():
    model = joint_model(small(1), e_agg=2)
    exact, f4 = solve(model, "exact"), solve(model, "fast")
    assert exact.status == "optimal" and exact.gap == 0.0
    # clusters of 3 devices are small enough for F4 to enumerate too: certified, equal to the exact optimum
    assert f4.status == "optimal" and f4.objective == pytest.approx(exact.objective, rel=1e-9)
    assert f4.gap_controllable <= 1e-6
    for res in (exact, f4):
        assert evaluate(model.scenario, res.plan).energy_j == pytest.approx(res.objective)
        assert res.metrics.latency_s <= model.target_latency_s * (1 + 1e-9)


def test_exact_refuses_large_instances_with_the_count():
    res = solve(joint_model(generators.clustered(2, 9, seed=0), e_agg=2), "exact")
    assert res.status == "error" and "discrete choices" in res.message and any(c.isdigit() for c in res.message)


def test_unknown_or_mismatched_solver_names_are_rejected():
    with pytest.raises(ValueError, match="solver = 'cplex'"):
        solve(f2_instance(0), "cplex")
    with pytest.raises(ValueError, match="solved by"):
        solve(f2_instance(0), "fast")
    with pytest.raises(ValueError, match="solved by"):
        solve(allocation(), "highs")


def test_a_missing_cvxpy_solver_says_how_to_install_it():
    res = solve(allocation(), "cvxpy:MOSEK")
    if res.status != "error":
        pytest.skip("MOSEK is installed here")
    assert "pip install mosek" in res.message


def test_missing_gurobipy_gives_an_error_result_with_the_install_command(monkeypatch):
    def missing():
        raise SolverUnavailable("solver 'gurobi' needs gurobipy, which is not installed: " + milp_mod.GUROBI_INSTALL)

    monkeypatch.setattr(milp_mod, "_import_gurobipy", missing)
    res = solve(f2_instance(0), "gurobi")
    assert res.status == "error" and "pip install" in res.message


# ---------------------------------------------------------------------- infeasibility pre-checks
def baseline(s, e_agg):
    return baseline_plan(s, mode="hierarchical", e_agg=e_agg, top_tier="cloud", name="start")


def test_joint_deadline_precheck_names_the_device():
    s = tiny_scenario((3,), cpu_hz=np.array([1e9, 1e3, 1e9]))  # device 1 computes at 1 kHz
    res = solve(build_joint(s, baseline(s, 1), 100.0), "fast")
    assert res.status == "infeasible" and "deadline: device 1 " in res.message


def test_joint_backhaul_precheck_names_the_edge():
    res = solve(build_joint(small(2), baseline(small(2), 1), 1.0), "fast")
    assert res.status == "infeasible" and "edge" in res.message and "backhaul" in res.message


def test_joint_memory_precheck_names_the_device():
    s = tiny_scenario((3,), memory_bytes=np.array([8e9, 1e3, 8e9]))
    res = solve(build_joint(s, baseline(s, 2), 100.0), "fast")
    assert res.status == "infeasible" and "memory: device 1" in res.message


# ---------------------------------------------------------------------- schedulers and the arborescence
@pytest.mark.parametrize("name", [n for n in available() if n != "optimal-exact"] + ["optimal-exact"])
def test_every_scheduler_plan_passes_evaluate(name):
    s = small(3, n_e=2, per=3)
    plan = schedule(s, name, e_agg=1 if name == "star" else 2, seed=0)
    m = evaluate(s, plan)
    assert np.isfinite(m.latency_s) and np.isfinite(m.energy_j) and m.energy_j > 0


def _networkx_reference(cost, root):
    g = nx.DiGraph()
    g.add_nodes_from(range(len(cost)))
    for a, b in zip(*np.nonzero(np.isfinite(cost))):
        if a != b and a != root:
            g.add_edge(int(b), int(a), weight=float(cost[a, b]))
    try:
        arb = nx.minimum_spanning_arborescence(g)
    except nx.NetworkXException:
        return None
    return sum(cost[c, p] for p, c in arb.edges())


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(2, 8), p_missing=st.sampled_from([0.0, 0.3, 0.6]))
def test_min_arborescence_matches_networkx(seed, n, p_missing):
    rng = np.random.default_rng(seed)
    cost = rng.random((n, n))
    cost[rng.random((n, n)) < p_missing] = np.inf
    root = int(rng.integers(n))
    parent, ref = min_arborescence(cost, root), _networkx_reference(cost, root)
    assert (parent is None) == (ref is None)
    if parent is None:
        return
    assert parent[root] == -1
    for v in range(n):  # every node reaches the root
        w, hops = v, 0
        while w != root and hops <= n:
            w, hops = parent[w], hops + 1
        assert w == root
    assert abs(sum(cost[v, parent[v]] for v in range(n) if v != root) - ref) <= 1e-9
