"""F1 inside F4 keeps modules at the D2D aggregator where that is cheaper, and prices the aggregator tier (no upload
to the edge nor edge downlink for it, a last-round broadcast down the tree instead) exactly as ``evaluate`` does, on
HiGHS and on Gurobi."""

import dataclasses

import numpy as np
import pytest
from conftest import tiny_scenario

from hffm_opt.errors import InstanceTooLarge, SolverUnavailable
from hffm_opt.evaluate import evaluate
from hffm_opt.formulations.cluster import cluster_data
from hffm_opt.formulations.placement import build_f4_placement, module_value
from hffm_opt.network.channel import transmit_time
from hffm_opt.plan import AGG, CLOUD, EDGE
from hffm_opt.schedulers import schedule
from hffm_opt.solvers.milp import solve_milp

TRAINED = ("head:vqa", "expert:0")


def d2d_instance(uplink_gain: float, d2d_gain: float, downlink_w: float):
    """Two clusters of three devices, only :data:`TRAINED` trainable, edges with ``downlink_w`` W of downlink."""
    sc = tiny_scenario((3, 3), gains=uplink_gain, d2d_gain=d2d_gain)
    sc = sc.replace(modules=tuple(dataclasses.replace(m, trainable=m.name in TRAINED) for m in sc.modules))
    return sc.replace(edges=dataclasses.replace(sc.edges, downlink_power_w=np.full(2, downlink_w)))


def last_round_extra(sc, plan, e: int) -> float:
    """Cluster ``e``'s last-round broadcast of its aggregator-tier modules less its edge downlink (s): > 0 where the
    broadcast lengthens the last round."""
    data = cluster_data(sc, plan, e)
    child = data.parent >= 0
    t = transmit_time(data.last_bits[child], data.d2d_band_hz, plan.d2d_down_power_w[data.members][child],
                      data.down_gain[child], data.noise)
    return float((data.path_matrix()[:, child] @ t).max()) - data.downlink_s


# (uplink gain, D2D gain, edge downlink W, modules that may stay in the cluster, tier expected per trained module with
# full coverage, sign of the last round's extra): strong D2D links keep everything at the aggregator and the broadcast
# outlasts the (free) edge downlink; with the expert bound for the cloud, the edge downlink outlasts the broadcast of
# the head; weak D2D links send everything to the edge.
CASES = {"strong d2d": (1e-11, 1e-8, 0.0, TRAINED, {"head:vqa": AGG, "expert:0": AGG}, 1),
         "strong d2d, expert to the cloud": (1e-11, 1e-8, 1.0, ("head:vqa",), {"head:vqa": AGG, "expert:0": CLOUD},
                                             -1),
         "weak d2d": (1e-9, 1e-13, 1.0, TRAINED, {"head:vqa": EDGE, "expert:0": EDGE}, 0)}


@pytest.mark.parametrize("solver", ["highs", "gurobi"])
@pytest.mark.parametrize("coverage, w_U", [("full", 0.0), ("cluster", 0.01)])
@pytest.mark.parametrize("e_agg", [1, 3])
@pytest.mark.parametrize("case", list(CASES))
def test_aggregator_tier_priced_by_evaluate_as_by_the_program(case, e_agg, coverage, w_U, solver):
    if solver == "gurobi":
        pytest.importorskip("gurobipy", reason="gurobipy is not importable")
    uplink_gain, d2d_gain, downlink_w, stay, expected, extra_sign = CASES[case]
    sc = d2d_instance(uplink_gain, d2d_gain, downlink_w)
    plan = schedule(sc, "hierarchical-d2d", e_agg=e_agg)
    assert plan.uses_d2d.all()
    budget = evaluate(sc, plan).period_latency_s * 1.5
    edge_ok = np.isin(sc.module_names, stay)
    model = build_f4_placement(sc, plan, budget, coverage=coverage, w_U=w_U, edge_ok=edge_ok)
    try:
        res = solve_milp(model, solver, mip_gap=0.0)
    except (SolverUnavailable, InstanceTooLarge) as exc:
        pytest.skip(f"gurobi cannot solve F1 here: {exc}")
    if res.status == "error":
        pytest.skip(f"{solver}: {res.message}")
    assert res.status == "optimal", res.message
    d = res.decision
    trial = plan.replace(train=d["train"], tier=d["tier"])
    m = evaluate(sc, trial)
    assert m.cluster_period_s == pytest.approx(d["period_s"], rel=1e-7, abs=1e-12)
    assert m.cluster_energy_j == pytest.approx(d["energy_j"], rel=1e-7, abs=1e-12)
    assert d["period_s"].max() <= budget * (1 + 1e-9)
    utility = float((module_value(sc) * trial.train).sum())
    assert res.objective == pytest.approx(m.energy_j - w_U * utility * (coverage != "full"), rel=1e-6, abs=1e-12)
    if coverage == "full":
        for name, tier in expected.items():
            assert (trial.tier[:, sc.module_names.index(name)] == tier).all(), name
        if extra_sign:  # both branches of the last round's max(0, broadcast - edge downlink) are exercised
            assert all(np.sign(last_round_extra(sc, trial, e)) == extra_sign for e in range(sc.n_edges))


def test_no_aggregator_tier_on_direct_clusters():
    """A direct cluster has no aggregator: F1 keeps its modules at the edge at most (``evaluate`` refuses the
    aggregator tier there)."""
    sc = d2d_instance(1e-11, 1e-8, 0.0)
    plan = schedule(sc, "hierarchical", e_agg=2)
    budget = evaluate(sc, plan).period_latency_s * 1.5
    res = solve_milp(build_f4_placement(sc, plan, budget, edge_ok=np.ones(len(sc.modules), bool)), mip_gap=0.0)
    assert res.status == "optimal", res.message
    trial = plan.replace(tier=res.decision["tier"])
    assert not (trial.tier == AGG).any()
    assert evaluate(sc, trial).cluster_energy_j == pytest.approx(res.decision["energy_j"], rel=1e-7)
