"""The optimize, compare --config and bench commands end to end (small instances)."""

from __future__ import annotations

import json
import re

import pytest

from hffm_opt.cli import main
from hffm_opt.network import generators
from hffm_opt.network.io import save_scenario


@pytest.fixture()
def small_file(tmp_path):
    path = tmp_path / "small.json"
    save_scenario(generators.clustered(2, 3, seed=4, spacing_m=800.0, cluster_radius_m=250.0), path)
    return str(path)


def test_optimize_prints_the_solve_result_and_the_plan_passes_evaluate(small_file, tmp_path, capsys):
    plan = tmp_path / "plan.json"
    assert main(["optimize", "--scenario", small_file, "--e-agg", "2", "--solver", "fast", "--out", str(plan),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    # 3-device clusters are enumerated inside F4: certified optimal, gap 0 (also on the controllable part)
    assert out["status"] == "optimal" and out["bound"] <= out["objective"] * (1 + 1e-12)
    assert out["gap"] <= 1e-9 and out["gap_controllable"] <= 1e-6
    assert main(["evaluate", "--scenario", small_file, "--plan", str(plan)]) == 0
    priced = json.loads(capsys.readouterr().out)["consistent"]
    assert priced["energy_j"] == pytest.approx(out["metrics"]["energy_j"])


def test_optimize_takes_the_objective_and_the_full_f4_options(small_file, capsys):
    """Least latency with free tiers: the JSON reports the latency as the objective and a floor proven over every
    tier choice, and the plan keeps every module in its cluster (no backhaul energy), faster than the fixed tiers'
    certified least latency."""
    assert main(["optimize", "--scenario", small_file, "--e-agg", "2", "--solver", "fast", "--objective", "latency",
                 "--edge-tiers", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "feasible" and 0 < out["bound"] <= out["objective"]
    assert out["objective"] == pytest.approx(out["metrics"]["latency_s"], rel=1e-12)
    assert out["metrics"]["backhaul_energy_j"] == 0.0
    assert main(["optimize", "--scenario", small_file, "--e-agg", "2", "--solver", "fast", "--objective", "latency",
                 "--json"]) == 0
    fixed = json.loads(capsys.readouterr().out)
    assert fixed["status"] == "optimal" and fixed["metrics"]["backhaul_energy_j"] > 0
    assert out["metrics"]["latency_s"] < fixed["bound"] <= fixed["metrics"]["latency_s"]


def test_optimize_reports_an_infeasible_target_with_exit_1(small_file, capsys):
    assert main(["optimize", "--scenario", small_file, "--target-latency", "0.001", "--solver", "fast", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "infeasible" and "deadline" in out["message"]


def test_an_exact_mode_far_too_large_says_so_in_one_short_line(capsys):
    """The paper scenario with module subsets free has ~1e132 choices: the count is shown to 3 digits (it was
    printed whole, 133 digits), exit code 2."""
    assert main(["optimize", "--scenario", "paper", "--e-agg", "8", "--coverage", "cluster", "--exact"]) == 2
    out, err = capsys.readouterr()
    line = (out + err).strip().splitlines()[-1]
    assert re.search(r"exact mode = \d\.\d\de\+\d{3} association x module-assignment choices: above the limit of "
                     r"20000", line), line
    assert len(line) < 250


def test_compare_reads_a_config_and_command_line_options_win(small_file, tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[compare]\nscenario = ["{small_file}"]\nschedulers = ["hierarchical", "greedy"]\nseeds = 2\n'
                   'e_agg = [2]\n')
    assert main(["compare", "--config", str(cfg), "--seeds", "1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert {r["scheduler"] for r in rows} == {"hierarchical", "greedy"} and {r["seed"] for r in rows} == {0}
    cfg.write_text("[compare]\nsolver = 'x'\n")
    assert main(["compare", "--config", str(cfg)]) == 2
    assert "not an option" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_json_has_the_documented_records(capsys):
    assert main(["bench", "--sizes", "40", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    keys = {"n_devices", "n_edges", "scheduler", "solver", "build_s", "solve_s", "objective", "gap", "latency_s",
            "energy_j", "gap_controllable", "peak_rss_mb"}
    assert all(keys <= set(r) for r in out["schedulers"])
    assert {"fast_s", "cvxpy_s", "speedup", "max_rel_diff"} <= set(out["allocation"][0])
    assert all(r["max_rel_diff"] is None or r["max_rel_diff"] <= 1e-6 for r in out["allocation"])
