"""F1 inside F4 and the association program price exactly what ``evaluate`` prices: their decisions written into a
plan give the program's own latency and energy figures; HiGHS and Gurobi agree on them."""

import numpy as np
import pytest
from conftest import small_clustered

from hffm_opt.evaluate import evaluate
from hffm_opt.formulations.association import build_association
from hffm_opt.formulations.placement import build_f4_placement, module_value
from hffm_opt.network import generators
from hffm_opt.schedulers import schedule
from hffm_opt.solvers.f4.decomposition import cluster_costs
from hffm_opt.solvers.milp import solve_milp


def _gurobi_or_skip():
    try:
        import gurobipy  # noqa: F401
    except ImportError:
        pytest.skip("gurobipy is not importable")


@pytest.mark.parametrize("start", ["hierarchical", "hierarchical-d2d"])
@pytest.mark.parametrize("e_agg", [1, 3])
@pytest.mark.parametrize("coverage, w_U, edge", [("full", 0.0, True), ("cluster", 0.0, False), ("cluster", 0.5, True)])
def test_f1_decision_priced_by_evaluate_as_by_the_program(start, e_agg, coverage, w_U, edge):
    sc = small_clustered(1, n_e=2, per=3)
    plan = schedule(sc, start, e_agg=e_agg)
    before = evaluate(sc, plan)
    edge_ok = np.ones(len(sc.modules), bool) if edge else None
    model = build_f4_placement(sc, plan, before.period_latency_s * 1.001, coverage=coverage, w_U=w_U, edge_ok=edge_ok)
    res = solve_milp(model, mip_gap=0.0)
    assert res.status == "optimal", res.message
    d = res.decision
    trial = plan.replace(train=d["train"], tier=d["tier"])
    periods, energies = cluster_costs(sc, trial)
    assert np.allclose(periods, d["period_s"], rtol=1e-9) and np.allclose(energies, d["energy_j"], rtol=1e-9)
    m = evaluate(sc, trial)
    assert m.period_latency_s == pytest.approx(d["period_s"].max(), rel=1e-9)
    assert m.period_energy_j == pytest.approx(d["energy_j"].sum(), rel=1e-9)
    assert res.objective == pytest.approx(m.energy_j - w_U * (module_value(sc) * trial.train).sum() * (coverage != "full")
                                          , rel=1e-6, abs=1e-9)
    if coverage == "full":
        assert (trial.train == plan.train).all()
    if edge:  # every module may stay at the edge: nothing is worth the backhaul
        assert m.energy_by_part["backhaul"] == 0.0 and m.energy_j < before.energy_j
    if coverage == "cluster" and w_U == 0.0:  # one trainer per module and cluster, each device at least one module
        counts = np.array([trial.train[trial.association == e].sum(axis=0) for e in range(sc.n_edges)])
        assert (counts[:, sc.module_arrays["trainable"]] >= 1).all() and trial.train.any(axis=1).all()
        assert trial.train.sum() < plan.train.sum() and m.energy_j < before.energy_j


def test_f1_respects_the_period_budget_and_cluster_local_modules():
    sc = small_clustered(2, n_e=2, per=3)
    plan = schedule(sc, "hierarchical", e_agg=2)
    budget = evaluate(sc, plan).period_latency_s
    res = solve_milp(build_f4_placement(sc, plan, budget, coverage="cluster", w_U=1e3), mip_gap=0.0)
    d = res.decision
    assert d["period_s"].max() <= budget * (1 + 1e-9)
    assert d["train"].sum() == plan.train.sum()  # w_U large: every module is worth training
    assert (d["tier"] == 2).all()  # no cluster-local module and no edge tiers: the cloud


def association_plan(sc, res, data, t_u, compute_s):
    """A direct-upload plan with the association decision, the bandwidth and power the program priced at, and CPU
    speeds that take ``compute_s``."""
    plan = schedule(sc, "hierarchical", e_agg=2)
    a = res.decision["association"]
    u = np.arange(sc.n_devices)
    batch = np.minimum(plan.batch_size, sc.devices.samples.sum(axis=1))
    cycles = plan.local_steps * batch * (plan.train @ sc.module_arrays["flops_per_sample"]) / sc.devices.flops_per_cycle
    return plan.replace(association=a, bandwidth_hz=data["b_use"][u, a], power_w=data["power_use"][u, a],
                        cpu_hz=cycles / compute_s)


def test_association_decision_priced_by_evaluate_as_by_the_program():
    sc = generators.clustered(3, 3, seed=4)
    plan = schedule(sc, "hierarchical", e_agg=2)
    bits = plan.train @ sc.module_arrays["update_bits"]
    batch = np.minimum(plan.batch_size, sc.devices.samples.sum(axis=1))
    cycles = plan.local_steps * batch * (plan.train @ sc.module_arrays["flops_per_sample"]) / sc.devices.flops_per_cycle
    compute = cycles / sc.devices.cpu_hz * 1.5
    t_u = 9.0 - compute  # every device ready at 9 s
    model = build_association(sc, bits, t_u, reserve="priced")
    res = solve_milp(model, mip_gap=0.0)
    assert res.status == "optimal", res.message
    trial = association_plan(sc, res, model.data, t_u, compute)
    m = evaluate(sc, trial)  # the capacities hold: the program reserved what it priced
    a = res.decision["association"]
    assert m.energy_by_part["uplink"] / 2 == pytest.approx(res.objective, rel=1e-9)
    backhaul = np.array([evaluate(sc, trial.replace(train=trial.train & (a == e)[:, None])).latency_by_part["backhaul"]
                         for e in range(sc.n_edges)])
    assert m.period_latency_s == pytest.approx((2 * 9.0 + backhaul).max(), rel=1e-9)
    assert np.bincount(a, weights=trial.bandwidth_hz, minlength=sc.n_edges) == pytest.approx(
        np.bincount(a, weights=model.data["b_use"][np.arange(sc.n_devices), a], minlength=sc.n_edges))


def test_association_candidates_restrict_the_pairs():
    sc = generators.clustered(3, 3, seed=4)
    cand = np.zeros((9, 3), bool)
    cand[np.arange(9), sc.devices.edge] = True
    res = solve_milp(build_association(sc, 1e6, 5.0, candidates=cand, reserve="priced"), mip_gap=0.0)
    assert (res.decision["association"] == sc.devices.edge).all()
    with pytest.raises(ValueError, match="candidates.shape"):
        build_association(sc, 1e6, 5.0, candidates=cand[:3])
    with pytest.raises(ValueError, match="reserve"):
        build_association(sc, 1e6, 5.0, reserve="some")


def test_highs_and_gurobi_agree_on_f1_and_association():
    _gurobi_or_skip()
    from hffm_opt.errors import InstanceTooLarge, SolverUnavailable

    sc = small_clustered(1, n_e=2, per=3)
    plan = schedule(sc, "hierarchical-d2d", e_agg=2)
    budget = evaluate(sc, plan).period_latency_s * 1.001
    models = {"f1": build_f4_placement(sc, plan, budget, coverage="cluster", w_U=0.3,
                                       edge_ok=np.ones(len(sc.modules), bool)),
              "association": build_association(sc, plan.train @ sc.module_arrays["update_bits"], 6.0,
                                               reserve="priced")}
    for name, model in models.items():
        h = solve_milp(model, "highs", mip_gap=0.0)
        try:
            g = solve_milp(model, "gurobi", mip_gap=0.0)
        except (SolverUnavailable, InstanceTooLarge) as exc:
            pytest.skip(f"gurobi cannot solve {name}: {exc}")
        if g.status == "error":
            pytest.skip(f"gurobi: {g.message}")
        assert h.status == g.status == "optimal", (name, h.message, g.message)
        assert h.objective == pytest.approx(g.objective, rel=1e-6, abs=1e-9), name
