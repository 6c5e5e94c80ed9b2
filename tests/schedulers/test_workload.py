"""Schedulers plan for the training workload they are given (tau and batch), so training never re-prices a plan
made for another one."""

import pytest
from conftest import small_clustered

from hffm_opt.errors import SchedulerError
from hffm_opt.evaluate import evaluate
from hffm_opt.schedulers import schedule

HEURISTICS = ["star", "hierarchical", "edge-only", "hierarchical-d2d", "edge-only-d2d", "greedy", "random"]


@pytest.mark.parametrize("name", HEURISTICS)
def test_a_plan_carries_the_workload_and_its_compute_time_grows_with_it(name):
    scenario = small_clustered(1)
    light = schedule(scenario, name, e_agg=2, local_steps=1, batch_size=8)
    heavy = schedule(scenario, name, e_agg=2, local_steps=5, batch_size=8)
    assert (heavy.local_steps, heavy.batch_size) == (5, 8)
    m_light, m_heavy = evaluate(scenario, light), evaluate(scenario, heavy)
    # the plan is priced with its own workload: 5x the cycles at the same CPU speeds, so 5x the compute energy
    e_light, e_heavy = m_light.energy_by_part["compute"], m_heavy.energy_by_part["compute"]
    assert e_light > 0 and e_heavy == pytest.approx(5 * e_light, rel=1e-9)
    assert not m_heavy.stragglers.any()


@pytest.mark.parametrize("name, target_from", [("optimal", "hierarchical-d2d"), ("local-search", "greedy")])
def test_optimisers_meet_their_target_at_the_workload_they_are_given(name, target_from):
    scenario = small_clustered(1)
    plan = schedule(scenario, name, e_agg=2, local_steps=5, batch_size=8)
    target = evaluate(scenario, schedule(scenario, target_from, e_agg=2, local_steps=5, batch_size=8)).latency_s
    m = evaluate(scenario, plan)
    assert (plan.local_steps, plan.batch_size) == (5, 8) and not m.stragglers.any()
    assert m.latency_s <= target * (1 + 1e-6)


def test_greedy_fills_its_deadline_for_the_workload_it_is_given():
    scenario = small_clustered(1)
    repriced = schedule(scenario, "greedy", e_agg=2).replace(local_steps=20)  # made for tau = 1, run with 20
    planned = schedule(scenario, "greedy", e_agg=2, local_steps=20)
    assert planned.local_steps == 20
    assert evaluate(scenario, planned).latency_s <= evaluate(scenario, repriced).latency_s * (1 + 1e-9)


@pytest.mark.parametrize("value", [0, 2.5, True, "5"])
def test_a_bad_workload_is_refused_before_the_scheduler_runs(value):
    with pytest.raises(SchedulerError, match="option local_steps"):
        schedule(small_clustered(1), "hierarchical", local_steps=value)
