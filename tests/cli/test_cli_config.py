"""A ``--config`` file fills only the options not given on the command line, each key once, each value checked
as its flag would be."""

import pytest

from hffm_opt.cli import main
from hffm_opt.errors import ConfigError


@pytest.fixture
def recorded(monkeypatch):
    """The arguments compare.run gets (the command stops there)."""
    from hffm_opt.analysis import compare

    calls = []

    def record(specs, schedulers, seeds, e_aggs, *args, **kwargs):
        calls.append({"schedulers": schedulers, "seeds": seeds, "e_aggs": e_aggs})
        raise ConfigError("stopped before any work")

    monkeypatch.setattr(compare, "run", record)
    return calls


def _config(tmp_path, body: str) -> str:
    path = tmp_path / "c.toml"
    path.write_text("[compare]\n" + body)
    return str(path)


def test_a_flag_given_at_its_default_value_still_wins_over_the_config(tmp_path, recorded):
    """--seeds 3 (the default) used to lose to the file's seeds = 1."""
    config = _config(tmp_path, 'seeds = 1\ne_agg = [2]\nschedulers = ["hierarchical", "greedy"]\nreference = "greedy"\n')
    assert main(["compare", "--config", config, "--seeds", "3"]) == 2
    assert main(["compare", "--config", config]) == 2
    assert [c["seeds"] for c in recorded] == [[0, 1, 2], [0]]
    assert recorded[0]["e_aggs"] == [2] and recorded[0]["schedulers"] == ["hierarchical", "greedy"]


@pytest.mark.parametrize("body, says", [
    ("e-agg = [2]\ne_agg = [8]\n", "[compare].e_agg = [8]: the same option as [compare].e-agg (give it once)"),
    ("seeds = true\n", "[compare].seeds = True: must be an integer, as the flag --seeds takes"),
    ('seeds = "1"\n', "[compare].seeds = '1': must be an integer"),
    ("e_agg = []\n", "[compare].e_agg = []: must be a non-empty list"),
    ("e_agg = 2\n", "[compare].e_agg = 2: must be a non-empty list"),
    ("reference = [\"greedy\"]\n", "[compare].reference = ['greedy']: must be a string"),
])
def test_a_bad_config_value_is_refused_by_its_flags_rule(tmp_path, recorded, capsys, body, says):
    assert main(["compare", "--config", _config(tmp_path, body)]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1 and recorded == []
