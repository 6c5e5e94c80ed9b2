"""Hunting for bad input: hypothesis mutates valid scenario (JSON, TOML, paper format), generator-config, plan and
experiment-config documents and runs each through ``hffm-opt`` in this process (cheap commands on tiny scenarios).
Every run must end with exit 0 and strict JSON on stdout, or exit 2 with one line on stderr and nothing on stdout;
never a traceback. The default run checks 1,100 documents (about 25 s on 2 cores); ``-m slow`` 10,700 random ones
(about 6 minutes)."""

from __future__ import annotations

import json
import os

import pytest
import tomli_w
from fuzzing import documents, mutated, run_cli
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hffm_opt.network.io import save_scenario

DOCS = documents()
QUICK = {"scenario": 350, "scenario-toml": 150, "generator": 150, "paper-format": 100, "plan": 300, "config": 50}
SLOW = {"config": 200}  # the slow run: ten times as many, but 200 compare configs (each runs pandas and scipy)


def _settings(kind: str, slow: bool):
    n = SLOW.get(kind, 10 * QUICK[kind]) if slow else QUICK[kind]
    return settings(max_examples=n, deadline=None, derandomize=not slow, database=None,
                    suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A scratch folder that is also the working directory (a mutated relative path lands inside it)."""
    path = tmp_path_factory.mktemp("fuzz")
    before = os.getcwd()
    os.chdir(path)
    from fuzzing import tiny_scenario

    save_scenario(tiny_scenario(), path / "base.json")
    yield path
    os.chdir(before)


def _write(path, doc, toml: bool = False):
    if toml:
        try:
            text = tomli_w.dumps(doc)
        except (TypeError, ValueError, OverflowError):  # not representable in TOML (null, huge integer)
            assume(False)
    else:
        text = json.dumps(doc)
    path.write_text(text)
    return str(path)


def _scenario(folder, data, toml=False):
    doc = data.draw(mutated(DOCS["scenario"]))
    if toml:
        doc = json.loads(json.dumps(doc), object_hook=lambda d: {k: v for k, v in d.items() if v is not None})
    path = _write(folder / ("s.toml" if toml else "s.json"), doc, toml)
    name = data.draw(st.sampled_from(["hierarchical", "hierarchical-d2d", "edge-only-d2d"]))
    run_cli(["schedule", "--scenario", path, "--scheduler", name, "--e-agg", "2"])


def _generator(folder, data, kind):
    path = _write(folder / ("g.toml" if kind == "generator" else "p.json"), data.draw(mutated(DOCS[kind])),
                  toml=kind == "generator")
    run_cli(["schedule", "--scenario", path, "--scheduler", "hierarchical-d2d"])


def _plan(folder, data):
    path = _write(folder / "plan.json", data.draw(mutated(DOCS["plan"])))
    run_cli(["evaluate", "--scenario", str(folder / "base.json"), "--plan", path])


def _config(folder, data):
    base = {"compare": {"scenario": [str(folder / "base.json")], "schedulers": ["hierarchical"], "seeds": 1,
                        "e_agg": [2], "reference": "hierarchical"}}
    path = _write(folder / "c.toml", data.draw(mutated(base)), toml=True)
    run_cli(["compare", "--config", path, "--json"])


def _hunt(kind: str, slow: bool):
    @_settings(kind, slow)
    @given(data=st.data())
    def hunt(folder, data):
        if kind in ("scenario", "scenario-toml"):
            _scenario(folder, data, toml=kind == "scenario-toml")
        elif kind in ("generator", "paper-format"):
            _generator(folder, data, kind)
        elif kind == "plan":
            _plan(folder, data)
        else:
            _config(folder, data)

    return hunt


@pytest.mark.parametrize("kind", list(QUICK))
def test_mutated_documents_give_a_result_or_one_line_and_exit_2(folder, kind):
    _hunt(kind, slow=False)(folder)


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(QUICK))
def test_ten_times_as_many_random_mutations(folder, kind):
    _hunt(kind, slow=True)(folder)


def test_the_starting_documents_are_valid(folder):
    """The mutations start from documents every command accepts (so the hunt tests refusals, not one)."""
    for kind in ("scenario", "paper-format"):
        run_cli(["schedule", "--scenario", _write(folder / f"{kind}.json", DOCS[kind])])
    code, _, _ = run_cli(["schedule", "--scenario", _write(folder / "g0.toml", DOCS["generator"], toml=True)])
    assert code == 0
    assert run_cli(["evaluate", "--scenario", str(folder / "base.json"), "--plan",
                    _write(folder / "p0.json", DOCS["plan"])])[0] == 0
