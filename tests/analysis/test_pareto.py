"""The epsilon-constraint front and the dominance check on a small scenario."""

import numpy as np
import pytest
from conftest import small_clustered as small

from hffm_opt.analysis import pareto
from hffm_opt.errors import ConfigError


@pytest.fixture(scope="module")
def solved():
    s = small(11, n_e=2, per=3)
    heuristics = pareto.place_heuristics(s, ["hierarchical", "greedy", "edge-only-d2d", "star"], 8, 0)
    points, model = pareto.front(s, 8, 4, 0, max(h["latency_s"] for h in heuristics))
    return s, heuristics, points, model


def test_front_runs_from_least_latency_with_falling_energy_and_valid_bounds(solved):
    s, heuristics, points, model = solved
    assert len(points) == 4 and all(p["status"] == "optimal" for p in points)
    lat = np.array([p["latency_s"] for p in points])
    energy = np.array([p["energy_j"] for p in points])
    assert (np.diff(lat) > 0).all() and (np.diff(energy) <= 1e-9 * energy[:-1]).all()
    assert all(p["bound_j"] <= p["energy_j"] * (1 + 1e-9) for p in points)
    same = [h for h in heuristics if h["scheduler"] in ("hierarchical", "greedy")]
    fastest = min(h["latency_s"] for h in same)
    assert points[0]["latency_s"] <= fastest * (1 + 1e-5)  # the least latency, plus the inner solvers' margin
    assert model is not None and points[0]["_target"] <= fastest * (1 + 1e-5)
    assert points[-1]["_target"] == pytest.approx(max(h["latency_s"] for h in heuristics))


def test_every_heuristic_is_dominated_and_the_json_has_the_documented_keys(solved):
    s, heuristics, points, model = solved
    checks = pareto.dominance(s, model, points, heuristics)
    assert all(c["dominated"] for c in checks), checks
    assert {c["scheduler"]: c["problem"] for c in checks}["edge-only-d2d"] == "own-plan"
    doc = pareto.to_json(points, heuristics)
    assert set(doc) == {"front", "heuristics"}
    assert all(set(p) == set(pareto.FRONT_FIELDS) for p in doc["front"])
    assert all(set(h) == set(pareto.HEURISTIC_FIELDS) for h in doc["heuristics"])


def test_a_front_needs_both_ends():
    with pytest.raises(ConfigError, match="points = 1"):
        pareto.front(small(1, n_e=1, per=2), 2, 1)
