"""One trial (hffm_opt.tuning.objective): the choices drawn from the space, the plan they give (deadline from the
factor, local steps), the edge rounds that fit the budget, the seeded scoring subset of the validation split.
``paper`` is the paper scenario of ``tests/conftest.py``."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from optuna.trial import FixedTrial

from hffm_opt import schedule
from hffm_opt.errors import ConfigError, PlanError
from hffm_opt.evaluate import evaluate
from hffm_opt.tuning import build_plan, rounds_within, scoring_data, settings_from_dict, suggest

CORE = {"e_agg": 3, "deadline_factor": 1.1, "lr": 1e-3, "local_steps": 2}


def test_rounds_within_follows_the_trainers_clock(paper):
    m = evaluate(paper, schedule(paper, "hierarchical", e_agg=2))
    assert rounds_within(m, None, None, 7) == 7
    assert rounds_within(m, float(m.round_end_s[0]), None, 7) == 1
    assert rounds_within(m, m.period_latency_s + float(m.round_end_s[0]), None, 7) == 3
    assert rounds_within(m, None, float(m.round_energy_j[0]) * 0.5, 7) == 0


def test_suggest_draws_an_option_only_for_a_scheduler_that_takes_it():
    settings = settings_from_dict({"search": {"schedulers": ["hierarchical", "optimal"],
                                              "options": {"target_latency_s": [0.5, 2.0]}}})
    plain = suggest(FixedTrial({"scheduler": "hierarchical", **CORE, "target_latency_s": 1.0}), settings)
    assert plain == {"scheduler": "hierarchical", **CORE}
    optimal = suggest(FixedTrial({"scheduler": "optimal", **CORE, "target_latency_s": 1.0}), settings)
    assert optimal == {"scheduler": "optimal", **CORE, "target_latency_s": 1.0}


@pytest.mark.parametrize("factor", [1.0, 1.5])
def test_a_deadline_factor_of_one_or_more_drops_nobody(paper, factor):
    choice = {"scheduler": "hierarchical", **CORE, "deadline_factor": factor}
    plan, metrics = build_plan(paper, choice)
    free = evaluate(paper, schedule(paper, "hierarchical", e_agg=3).replace(local_steps=2))  # no deadline
    assert plan.deadline_s == pytest.approx(factor * free.latency_s)
    assert plan.local_steps == 2 and plan.e_agg == 3
    assert not metrics.stragglers.any() and metrics.latency_s == pytest.approx(free.latency_s)


def test_a_tight_deadline_drops_devices_and_a_tiny_one_is_refused(paper):
    _, free = build_plan(paper, {"scheduler": "hierarchical", **CORE, "deadline_factor": 1.0})
    plan, metrics = build_plan(paper, {"scheduler": "hierarchical", **CORE, "deadline_factor": 0.3})
    assert plan.deadline_s == pytest.approx(0.3 * free.latency_s)
    assert metrics.stragglers.any() and metrics.participants.any() and metrics.latency_s < free.latency_s
    with pytest.raises(PlanError, match=r"deadline_s = .*: no training device meets it"):
        build_plan(paper, {"scheduler": "hierarchical", **CORE, "deadline_factor": 1e-9})


@dataclasses.dataclass(frozen=True)
class Rows:
    """A stand-in for a data table: its row indices and a name."""

    rows: np.ndarray
    name: str = "test"

    def __len__(self):
        return len(self.rows)

    def subset(self, index, name):
        return Rows(self.rows[index], name)


@dataclasses.dataclass(frozen=True)
class Data:
    validation: Rows | None
    global_test: Rows = Rows(np.arange(-50, 0), "test")
    train: str = "untouched"


def test_scoring_data_is_a_seeded_subset_of_the_validation_split_and_hides_the_test_set():
    data = Data(Rows(np.arange(100) * 10, "validation"))
    cut = scoring_data(data, 30, seed=4)
    rows = cut.validation.rows
    assert len(rows) == 30 and len(set(rows)) == 30 and set(rows) <= set(data.validation.rows)
    assert list(rows) == sorted(rows) and cut.validation.name == "validation/score" and cut.train == "untouched"
    assert cut.global_test is cut.validation  # nothing a trial does can read the global test set
    assert np.array_equal(scoring_data(data, 30, seed=4).validation.rows, rows)  # same seed, same rows
    assert not np.array_equal(scoring_data(data, 30, seed=5).validation.rows, rows)
    for whole in (0, 100):
        assert scoring_data(data, whole, seed=4).validation is data.validation
        assert not set(scoring_data(data, whole, seed=4).global_test.rows) & set(data.global_test.rows)


def test_tuning_without_a_validation_split_is_a_config_error():
    with pytest.raises(ConfigError, match="validation"):
        scoring_data(Data(None), 30, seed=0)
