"""The scheduler registry: decorator, clashes, unknown names, strict options and the entry-point group."""

import pytest

from hffm_opt import evaluate
from hffm_opt.cli import main
from hffm_opt.errors import SchedulerError
from hffm_opt.schedulers import available, get_scheduler, register, registry, schedule, scheduler_options


@pytest.fixture
def own_registry(monkeypatch):
    """A copy of the registry, so that test schedulers do not leak into other tests."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_OPTIONS", dict(registry._OPTIONS))


def test_decorator_registers_and_a_clash_is_refused(own_registry, paper):
    calls = []

    @register("my-star")
    def my_star(scenario, *, e_agg=1, seed=0):
        calls.append(seed)
        return schedule(scenario, "star", seed=seed)

    assert "my-star" in available()
    assert scheduler_options("my-star") == {"e_agg": 1, "seed": 0}
    plan = schedule(paper, "my-star", seed=7)
    assert calls == [7] and plan.mode == "star"
    evaluate(paper, plan)
    register("my-star")(my_star)  # registering the same callable again is harmless
    with pytest.raises(SchedulerError, match="my-star.*already registered"):
        register("my-star")(lambda scenario, e_agg=2, seed=0: None)


def test_a_scheduler_taking_kwargs_is_refused(own_registry):
    with pytest.raises(SchedulerError, match=r"'loose' takes \*\*_.*declare every keyword option"):
        register("loose")(lambda scenario, *, e_agg=2, seed=0, **_: None)
    assert "loose" not in available()


@pytest.mark.parametrize("name", ["greedy", "hierarchical", "optimal", "local-search", "star"])
def test_an_unknown_option_is_refused_with_the_accepted_ones(paper, name):
    with pytest.raises(SchedulerError) as err:
        schedule(paper, name, e_aggg=8)
    msg = str(err.value)
    assert f"scheduler {name!r} option e_aggg = 8: unknown option (did you mean 'e_agg'?)" in msg
    for option in scheduler_options(name):
        assert repr(option) in msg


def test_every_built_in_scheduler_declares_e_agg_and_seed():
    for name in available():
        assert {"e_agg", "seed"} <= set(scheduler_options(name)), name


def test_the_cli_refuses_an_unknown_option_with_exit_2(capsys):
    # `optimize --target-from` offers the optimal scheduler's own choices (joint_model's TARGET_FROM)
    assert main(["optimize", "--target-from", "fastestt", "--solver", "fast"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--target-from: invalid choice: 'fastestt'" in err and "'fastest'" in err


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(SchedulerError, match="'greedyy'.*unknown.*did you mean 'greedy'.*hierarchical"):
        get_scheduler("greedyy")


class _EntryPoint:
    def __init__(self, name, target):
        self.name, self._target = name, target

    def load(self):
        return self._target


def test_entry_point_schedulers_are_listed_and_loaded_on_demand(own_registry, monkeypatch, paper):
    def plugin(scenario, *, e_agg=2, seed=0):
        return schedule(scenario, "hierarchical", e_agg=e_agg)

    seen_groups = []

    def fake_entry_points(group):
        seen_groups.append(group)
        return [_EntryPoint("plugin-hier", plugin)] if group == "hffm_opt.schedulers" else []

    monkeypatch.setattr(registry, "entry_points", fake_entry_points)
    assert "plugin-hier" in available()
    assert get_scheduler("plugin-hier") is plugin
    assert set(seen_groups) == {"hffm_opt.schedulers"}
    assert schedule(paper, "plugin-hier", e_agg=4).e_agg == 4
    with pytest.raises(SchedulerError, match="accepted: \\['e_agg', 'seed'\\]"):
        schedule(paper, "plugin-hier", deadline=1.0)
