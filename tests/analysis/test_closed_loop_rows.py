"""The rows of ``hffm-opt run``: a method that chooses its own E_agg reports the plans' choice; each seed's own
figures beside the means."""

from hffm_opt.analysis.closed_loop import Method, MethodRun, plans_e_agg, summarise, write
from hffm_opt.learners.history import History


def _run(method, seed, e_agg, served):
    records = [{"round": 1, "time_s": 1.0, "energy_j": 2.0, "accuracy": served, "served_accuracy": served}]
    return MethodRun(method, seed, History(records, {"e_agg": e_agg, "latency_s": 1.0, "energy_j": 2.0}))


def test_a_method_choosing_its_own_e_agg_reports_the_plans_choice():
    fixed = Method("optimal", "Optimal (F4)", "optimal", 8)
    own = Method("optimal-own-e-agg", "Optimal (F4, own E_agg)", "optimal", 8, {"e_aggs": (2, 16)})
    rows = summarise([_run(fixed, 0, 8, 70.0), _run(own, 0, 16, 71.0), _run(own, 1, 16, 73.0)], 60.0)
    assert [(r["method"], r["e_agg"], r["n_seeds"]) for r in rows] == [("optimal", 8, 1), ("optimal-own-e-agg", 16, 2)]
    assert rows[1]["served_accuracy"] == 72.0 and rows[1]["n_reached"] == 2
    split = summarise([_run(own, 0, 16, 71.0), _run(own, 1, 2, 73.0)], 60.0)
    assert split[0]["e_agg"] == "2/16"  # the seeds chose differently: both choices, not the starting E_agg (8)


def test_files_and_legends_name_the_e_agg_each_plan_ran_with(tmp_path):
    """A method that chooses its own E_agg (starting from 8) writes each seed's history under the plan's choice."""
    own = Method("optimal-own-e-agg", "Optimal (F4, own E_agg)", "optimal", 8, {"e_aggs": (2, 16)})
    runs = [_run(own, 0, 16, 71.0), _run(own, 1, 2, 73.0)]
    assert plans_e_agg(runs[:1]) == 16 and plans_e_agg(runs) == "2/16"
    write(runs, {"results": summarise(runs, 60.0), "target_accuracy": 60.0}, tmp_path)
    names = sorted(p.name for p in tmp_path.glob("history_*.json"))
    assert names == ["history_optimal-own-e-agg_E16_seed0.json", "history_optimal-own-e-agg_E2_seed1.json"]


def test_a_row_keeps_each_seeds_figures_for_seed_by_seed_comparisons():
    """The README compares methods seed by seed (e.g. energy to the target on every seed): each seed's figures are in
    the row, in seed order, None where a seed never reached the target."""
    method = Method("greedy", "Greedy", "greedy", 8)

    def run(seed, served, energy):
        records = [{"round": 1, "time_s": 3.0, "energy_j": energy / 2, "accuracy": 50.0, "served_accuracy": 50.0},
                   {"round": 2, "time_s": 6.0, "energy_j": energy, "accuracy": served, "served_accuracy": served}]
        return MethodRun(method, seed, History(records, {"e_agg": 8, "latency_s": 3.0, "energy_j": energy / 2}))

    (row,) = summarise([run(4, 70.0, 10.0), run(5, 55.0, 12.0)], 60.0)
    assert row["per_seed"] == {"seed": [4, 5], "served_accuracy": [70.0, 55.0], "time_to_target_s": [6.0, None],
                               "energy_to_target_j": [10.0, None], "time_s": [6.0, 6.0], "total_energy_j": [10.0, 12.0]}
    assert row["energy_to_target_j"] == 10.0 and row["n_reached"] == 1
