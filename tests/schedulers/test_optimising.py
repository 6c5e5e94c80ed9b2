"""The optimal scheduler's objectives: declared options, strict values, the meta of each objective."""

import pytest
from conftest import small_clustered as small

from hffm_opt.errors import SchedulerError
from hffm_opt.evaluate import evaluate
from hffm_opt.schedulers import get_scheduler, schedule, scheduler_options
from hffm_opt.schedulers.optimising import OPTIMISERS


def test_objective_options_are_declared_and_optimisers_are_marked():
    options = scheduler_options("optimal")
    assert options["objective"] == "energy" and options["energy_budget_j"] is None
    assert options["w_latency"] is None and options["w_energy"] is None
    assert all(getattr(get_scheduler(n), "is_optimiser", False) for n in OPTIMISERS)
    assert not getattr(get_scheduler("local-search"), "is_optimiser", False)


@pytest.mark.parametrize("options, field", [
    ({"objective": "fast"}, "objective"),
    ({"objective": "latency", "target_latency_s": 3.0}, "target_latency_s"),
    ({"objective": "energy", "energy_budget_j": 3.0}, "energy_budget_j"),
    ({"objective": "weighted", "w_energy": 1.0}, "w_latency"),
    ({"objective": "weighted", "w_latency": 1.0, "w_energy": float("nan")}, "w_energy"),
    ({"objective": "latency", "energy_budget_j": 0.0}, "energy_budget_j"),
    ({"objectives": "latency"}, "objectives"),
])
def test_bad_objective_options_are_refused_by_name(options, field):
    with pytest.raises(SchedulerError, match=field):
        schedule(small(1, n_e=1, per=2), "optimal", **options)


def test_latency_objective_is_faster_than_the_default_and_reports_seconds():
    s = small(2, n_e=2, per=3)
    default = schedule(s, "optimal", e_agg=8, solver="fast")
    fastest = schedule(s, "optimal", e_agg=8, solver="fast", objective="latency")
    assert fastest.meta["objective_kind"] == "latency_s" and default.meta["objective_kind"] == "energy_j"
    m_fast, m_default = evaluate(s, fastest), evaluate(s, default)
    assert fastest.meta["objective"] == pytest.approx(m_fast.latency_s)
    assert m_fast.latency_s <= m_default.latency_s and m_fast.energy_j >= m_default.energy_j * (1 - 1e-9)
    assert fastest.meta["bound"] <= fastest.meta["objective"] and fastest.meta["status"] == "optimal"
