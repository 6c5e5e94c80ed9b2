"""The scheduler registry: decorator, clashes, unknown names and the entry-point group."""

import pytest

from hffm_opt import evaluate, schedulers
from hffm_opt.schedulers import SchedulerError, available, get_scheduler, register, schedule


def test_decorator_registers_and_a_clash_is_refused(monkeypatch, paper):
    monkeypatch.setattr(schedulers, "_REGISTRY", dict(schedulers._REGISTRY))
    calls = []

    @register("my-star")
    def my_star(scenario, *, e_agg=1, seed=0, **_):
        calls.append(seed)
        return schedule(scenario, "star", seed=seed)

    assert "my-star" in available()
    plan = schedule(paper, "my-star", seed=7)
    assert calls == [7] and plan.mode == "star"
    evaluate(paper, plan)
    register("my-star")(my_star)  # registering the same callable again is harmless
    with pytest.raises(SchedulerError, match="my-star.*already registered"):
        register("my-star")(lambda scenario, **_: None)


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(SchedulerError, match="'nope'.*unknown.*hierarchical"):
        get_scheduler("nope")


class _EntryPoint:
    def __init__(self, name, target):
        self.name, self._target = name, target

    def load(self):
        return self._target


def test_entry_point_schedulers_are_listed_and_loaded_on_demand(monkeypatch, paper):
    monkeypatch.setattr(schedulers, "_REGISTRY", dict(schedulers._REGISTRY))

    def plugin(scenario, *, e_agg=2, seed=0, **_):
        return schedule(scenario, "hierarchical", e_agg=e_agg)

    seen_groups = []

    def fake_entry_points(group):
        seen_groups.append(group)
        return [_EntryPoint("plugin-hier", plugin)] if group == "hffm_opt.schedulers" else []

    monkeypatch.setattr(schedulers, "entry_points", fake_entry_points)
    assert "plugin-hier" in available()
    assert get_scheduler("plugin-hier") is plugin
    assert set(seen_groups) == {"hffm_opt.schedulers"}
    assert schedule(paper, "plugin-hier", e_agg=4).e_agg == 4
