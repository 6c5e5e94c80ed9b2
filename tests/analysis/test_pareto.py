"""The epsilon-constraint front and the dominance check on a small scenario, as sweep cells: one process, two
processes and a re-run from the kept cells give the same front."""

import numpy as np
import pytest

from hffm_opt.analysis import pareto
from hffm_opt.errors import ConfigError

SCHEDULERS = ["hierarchical", "greedy", "edge-only-d2d", "star"]


def _spec(folder):
    path = folder / "small.toml"
    path.write_text('[generator]\nname = "clustered"\nn_edges = 2\ndevices_per_edge = 3\nspacing_m = 800.0\n'
                    'cluster_radius_m = 250.0\n')
    return str(path)


@pytest.fixture(scope="module")
def solved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pareto")
    spec, store = _spec(folder), folder / "cells"
    return spec, store, pareto.run(spec, 11, 8, 4, SCHEDULERS, store=store)


def test_front_runs_from_least_latency_with_falling_energy_and_valid_bounds(solved):
    points, heuristics, _ = solved[2]
    assert len(points) == 4 and all(p["status"] == "optimal" for p in points)
    lat = np.array([p["latency_s"] for p in points])
    energy = np.array([p["energy_j"] for p in points])
    assert (np.diff(lat) > 0).all() and (np.diff(energy) <= 1e-9 * energy[:-1]).all()
    assert all(p["bound_j"] <= p["energy_j"] * (1 + 1e-9) for p in points)
    same = [h for h in heuristics if h["scheduler"] in ("hierarchical", "greedy")]
    fastest = min(h["latency_s"] for h in same)
    assert points[0]["latency_s"] <= fastest * (1 + 1e-5)  # the least latency, plus the inner solvers' margin
    assert points[0]["_target"] <= fastest * (1 + 1e-5)
    assert points[-1]["_target"] == pytest.approx(max(h["latency_s"] for h in heuristics))


def test_every_heuristic_is_dominated_and_the_json_has_the_documented_keys(solved):
    points, heuristics, checks = solved[2]
    assert [c["scheduler"] for c in checks] == SCHEDULERS
    assert all(c["dominated"] for c in checks), checks
    assert {c["scheduler"]: c["problem"] for c in checks}["edge-only-d2d"] == "own-plan"
    doc = pareto.to_json(points, heuristics)
    assert set(doc) == {"front", "heuristics"}
    assert all(set(p) == set(pareto.FRONT_FIELDS) for p in doc["front"])
    assert all(set(h) == set(pareto.HEURISTIC_FIELDS) for h in doc["heuristics"])


def test_two_processes_and_a_rerun_from_the_kept_cells_give_the_same_front(solved):
    spec, store, serial = solved
    assert pareto.run(spec, 11, 8, 4, SCHEDULERS, workers=2) == serial
    computed = []
    again = pareto.run(spec, 11, 8, 4, SCHEDULERS, store=store, progress=lambda n: computed.append(n) or (lambda: None))
    assert again == serial and computed == []  # every cell read back, none computed


def test_a_front_needs_both_ends(tmp_path):
    with pytest.raises(ConfigError, match="points = 1"):
        pareto.run(_spec(tmp_path), 1, 2, 1, ["greedy"])


def test_the_far_end_is_the_one_asked_for_or_a_clear_error():
    """max_latency_s is used as given when above the least latency (it was raised to twice the least latency without
    a word), and refused at or below it; without it the far end is the slowest heuristic, at least twice the least."""
    first = {"_target": 2.0}
    assert pareto.front_targets(first, 3, 3.0) == [3.0, 2.5]
    assert pareto.front_targets(first, 3, None, heuristics_s=3.0) == [4.0, 3.0]
    assert pareto.front_targets(first, 3, None, heuristics_s=12.0) == [12.0, 7.0]
    with pytest.raises(ConfigError, match=r"max_latency_s\) = 0.1 s: must exceed the least latency any plan reaches"):
        pareto.front_targets(first, 3, 0.1)
