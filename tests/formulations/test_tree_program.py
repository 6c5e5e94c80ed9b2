"""The convex program of a D2D cluster: its optimum, turned into a plan by hand (f = C/tau, the least power for each
link time), is priced identically by the evaluator, meets the budget, and beats every other feasible point tried."""

import dataclasses
from itertools import pairwise

import numpy as np
import pytest
from conftest import small_clustered
from hypothesis import given, settings
from hypothesis import strategies as st

from hffm_opt import evaluate, schedule
from hffm_opt.formulations.cluster import cluster_data
from hffm_opt.formulations.tree_program import tree_problem
from hffm_opt.schedulers.heuristics import fill_deadline, full_power_times


def _d2d_cluster(seed, e_agg, per=4, name="greedy"):
    """One cluster that aggregates over a D2D tree: (scenario, plan, its cluster data, full-power period (s))."""
    s = small_clustered(seed, n_e=1, per=per)
    plan = schedule(s, name, e_agg=e_agg, seed=seed)
    if plan.aggregator[0] < 0:
        plan = schedule(s, "hierarchical-d2d", e_agg=e_agg, seed=seed)
    data = cluster_data(s, plan, 0)
    assert data.uses_d2d
    return s, plan, data, full_power_times(data)["period"]


def _solve(data, budget):
    prob = tree_problem(data, budget)
    prob.problem.solve(solver="CLARABEL")
    return prob


def _least_power(bits, t, band, gain, n0):
    """(N0 B / g) (2^(S / (B t)) - 1): the power that sends S bits in exactly t seconds."""
    return np.where(bits > 0, n0 * band / gain * (2.0 ** (bits / (band * t)) - 1.0), 0.0)


def _plan_from_times(s, plan, data, prob):
    """The plan the program's times describe: CPU C/tau, each link at the least power that meets its time."""
    m, child = data.members, np.flatnonzero(data.parent >= 0)
    tau = np.asarray(prob.compute_s.value).ravel()
    cpu = plan.cpu_hz.copy()
    busy = data.cycles > 0
    cpu[m[busy]] = np.minimum(data.cycles[busy] / tau[busy], data.fmax[busy])
    up = np.asarray(prob.up_s.value).ravel()
    d2d_p = plan.d2d_power_w.copy()
    d2d_p[m[child]] = np.minimum(_least_power(data.up_bits[child], up, data.d2d_band_hz, data.up_gain[child], data.noise),
                                 data.pmax[child])
    down_p = plan.d2d_down_power_w.copy()
    if prob.down_s is not None:
        down = np.asarray(prob.down_s.value).ravel()
        down_p[m[child]] = np.minimum(_least_power(data.down_bits[child], down, data.d2d_band_hz, data.down_gain[child],
                                                   data.noise), data.down_pmax[child])
    band, power = plan.bandwidth_hz.copy(), plan.power_w.copy()
    band[m], power[m] = 0.0, 0.0
    root = m[data.root]
    band[root] = data.band_hz
    agg = float(np.asarray(prob.agg_s.value).ravel()[0])
    power[root] = min(float(_least_power(np.array(data.agg_bits), agg, data.band_hz, data.agg_gain, data.noise)),
                      data.pmax[data.root])
    return plan.replace(cpu_hz=cpu, bandwidth_hz=band, power_w=power, d2d_power_w=d2d_p, d2d_down_power_w=down_p)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), e_agg=st.sampled_from([1, 2, 4]), slack=st.sampled_from([1.05, 1.5, 3.0]))
def test_optimum_is_the_evaluators_energy_of_its_allocation_and_meets_the_budget(seed, e_agg, slack):
    s, plan, data, full = _d2d_cluster(seed, e_agg)
    budget = slack * full
    prob = _solve(data, budget)
    assert prob.problem.status == "optimal"
    assert (prob.down_s is None) == (e_agg == 1)  # one edge round per period: nothing is broadcast down the tree
    solved = _plan_from_times(s, plan, data, prob)
    m = evaluate(s, solved)  # raises PlanError on any violation
    assert m.period_energy_j == pytest.approx(prob.problem.value + data.fixed_j, rel=1e-5)
    assert m.period_latency_s <= budget * (1 + 1e-6)
    assert m.period_latency_s == pytest.approx(budget, rel=1e-4)  # energy falls with time: the budget is used up
    filled = evaluate(s, fill_deadline(s, plan, budget))  # another feasible point of the same program
    assert prob.problem.value + data.fixed_j <= filled.period_energy_j * (1 + 1e-6)


def test_objective_is_the_link_and_compute_energy_of_its_times():
    _, _, data, full = _d2d_cluster(21, e_agg=3)
    prob = _solve(data, 1.4 * full)
    child = data.parent >= 0
    g, n0 = data.e_agg, data.noise
    tau = np.asarray(prob.compute_s.value).ravel()

    def energy(bits, t, band, gain):  # (N0 B t / g)(2^(S/(B t)) - 1), written out
        return float(np.sum(n0 * band * t / gain * (2.0 ** (bits / (band * t)) - 1.0)))

    busy = data.cycles > 0
    compute = float(np.sum(data.kappa[busy] * data.cycles[busy] ** 3 / tau[busy] ** 2))
    up = energy(data.up_bits[child], np.asarray(prob.up_s.value).ravel(), data.d2d_band_hz, data.up_gain[child])
    down = energy(data.down_bits[child], np.asarray(prob.down_s.value).ravel(), data.d2d_band_hz, data.down_gain[child])
    agg = energy(data.agg_bits, float(prob.agg_s.value[0]), data.band_hz, data.agg_gain)
    assert prob.problem.value == pytest.approx(g * (compute + up) + (g - 1) * down + agg, rel=1e-6)


def test_optimal_energy_falls_as_the_budget_grows_and_a_budget_below_full_power_is_infeasible():
    s, plan, data, full = _d2d_cluster(5, e_agg=2)
    values = []
    for slack in (1.01, 1.2, 2.0, 5.0):
        prob = _solve(data, slack * full)
        assert prob.problem.status == "optimal"
        values.append(prob.problem.value)
    assert all(b < a for a, b in pairwise(values))
    full_power = evaluate(s, fill_deadline(s, plan, full)).period_energy_j
    assert values[0] + data.fixed_j <= full_power * (1 + 1e-6)
    assert _solve(data, 0.9 * full).problem.status == "infeasible"  # faster than full power everywhere: impossible


def test_free_computation_only_lowers_the_optimum():
    _, _, data, full = _d2d_cluster(9, e_agg=2, per=3)
    free = dataclasses.replace(data, cycles=np.zeros_like(data.cycles))
    prob = _solve(free, 1.3 * full)
    assert prob.problem.status == "optimal"
    assert prob.problem.value < _solve(data, 1.3 * full).problem.value  # no compute energy, and more time to send
