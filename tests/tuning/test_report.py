"""What a study found (hffm_opt.tuning.report), on hand-made studies in memory: counts by state, the best trial
against the default configuration, the Pareto front, trials.csv/summary.json and the plots, written atomically."""

from __future__ import annotations

import json

import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from hffm_opt.tuning import IMPORTANCE_MIN_TRIALS, best, pareto_table, save_plots, summary, write_results

DIST = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "scheduler": CategoricalDistribution(("a", "b"))}
PNG = b"\x89PNG\r\n\x1a\n"


def study_of(*trials, directions=("maximize",)):
    """An in-memory study holding ``trials``: ``(state, values, lr, attrs)`` each, scheduler alternating a/b."""
    study = optuna.create_study(study_name="s", directions=list(directions))
    for i, (state, values, lr, attrs) in enumerate(trials):
        study.add_trial(create_trial(state=state, values=values, params={"lr": lr, "scheduler": "ab"[i % 2]},
                                     distributions=DIST, user_attrs=attrs))
    return study


def done(value, lr=1e-3, **attrs):
    return TrialState.COMPLETE, [value], lr, {"energy_j": 2.0, "time_s": 3.0, "rounds": 4, **attrs}


FAILED = (TrialState.FAIL, None, 1e-2, {"fail_reason": "PlanError: x"})
PRUNED = (TrialState.PRUNED, None, 2e-2, {})


def test_best_is_the_top_accuracy_earliest_on_ties_against_the_default():
    study = study_of(done(50, role="default"), done(70, lr=2e-3), FAILED, done(70, lr=3e-3), PRUNED)
    assert summary(study, "accuracy") == {
        "study": "s", "n_complete": 3, "n_pruned": 1, "n_failed": 1,
        "best": {"number": 1, "accuracy_pct": 70, "energy_j": 2.0, "time_s": 3.0, "rounds": 4,
                 "params": {"lr": 2e-3, "scheduler": "b"}, "default_number": 0, "default_accuracy_pct": 50,
                 "beats_default": True}}
    tie = best(study_of(done(60, role="default"), done(60, lr=2e-3)))
    assert tie["number"] == 0 and tie["beats_default"] is False  # equal is not better
    failed_default = best(study_of((*FAILED[:3], {"role": "default"}), done(40)))
    assert failed_default["number"] == 1 and failed_default["default_number"] == 0
    assert failed_default["default_accuracy_pct"] is None and failed_default["beats_default"] is None
    assert best(study_of(FAILED, PRUNED)) is None


def test_pareto_table_is_the_front_by_increasing_energy():
    points = [(50, 10), (60, 20), (55, 30), (40, 5), (60, 25)]  # (55, 30) and (60, 25) are dominated by (60, 20)
    study = study_of(*[(TrialState.COMPLETE, list(p), 1e-3 * (i + 1), {"time_s": 1.0, "rounds": 2})
                       for i, p in enumerate(points)], directions=("maximize", "minimize"))
    table = pareto_table(study)
    assert list(table["number"]) == [3, 0, 1]
    assert list(table["energy_j"]) == [5, 10, 20] and list(table["accuracy_pct"]) == [40, 50, 60]
    assert list(table.columns) == ["number", "accuracy_pct", "energy_j", "time_s", "rounds", "lr", "scheduler"]
    out = summary(study, "pareto")
    assert set(out) == {"study", "n_complete", "n_pruned", "n_failed", "pareto"}
    assert out["pareto"] == json.loads(table.to_json(orient="records"))


def test_results_replace_the_old_files_and_leave_no_temporary(tmp_path):
    study = study_of(done(50, role="default"), FAILED, done(70))
    result = summary(study, "accuracy")
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text("old")
    written = write_results(out, study, result)
    assert written == [out / "trials.csv", out / "summary.json"]
    assert json.loads((out / "summary.json").read_text()) == result
    trials = pd.read_csv(out / "trials.csv")
    assert list(trials["number"]) == [0, 1, 2] and list(trials["state"]) == ["COMPLETE", "FAIL", "COMPLETE"]
    assert sorted(p.name for p in out.iterdir()) == ["summary.json", "trials.csv"]


@pytest.mark.parametrize("n_done, kind, names", [
    (IMPORTANCE_MIN_TRIALS - 1, "accuracy", ["history.png"]),
    (IMPORTANCE_MIN_TRIALS, "accuracy", ["history.png", "importances.png"]),
    (3, "pareto", ["pareto.png"]),
])
def test_plots_are_png_files_and_importances_wait_for_enough_trials(tmp_path, n_done, kind, names):
    directions = ("maximize",) if kind == "accuracy" else ("maximize", "minimize")
    values = [[40.0 + 7 * i] if kind == "accuracy" else [40.0 + 7 * i, 10.0 + i * i] for i in range(n_done)]
    study = study_of(*[(TrialState.COMPLETE, v, 1e-3 * (i + 1), {}) for i, v in enumerate(values)], FAILED,
                     directions=directions)
    written = save_plots(study, tmp_path / "plots", kind)
    assert [p.name for p in written] == names
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == names  # no temporary file left
    assert all(p.read_bytes().startswith(PNG) for p in written)
