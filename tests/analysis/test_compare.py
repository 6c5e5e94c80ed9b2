"""``compare``: the tidy table holds the evaluator's figures of each scheduled plan; the summary's means, 95% CIs
(Student t: checked by coverage) and ratios against hand computations; the files are written atomically and the
JSON has no NaN."""

import json
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hffm_opt import evaluate, load_scenario, network, schedule
from hffm_opt.analysis import compare
from hffm_opt.network import generators
from hffm_opt.schedulers import registry

ASKED = "_e_agg_asked"


def _generator_spec(folder):
    path = folder / "gen.toml"
    path.write_text('[generator]\nname = "clustered"\nn_edges = 2\ndevices_per_edge = 3\n')
    return str(path)


def test_rows_are_the_evaluators_figures_of_each_scheduled_plan(tmp_path):
    spec = _generator_spec(tmp_path)
    rows = compare.run(["paper", spec], ["hierarchical", "random", "star"], seeds=[0, 1], e_aggs=[2, 4])
    assert len(rows) == 2 * 3 * 2 * 2
    assert set(compare.ROW_COLUMNS) <= set(rows.columns)
    assert not rows.duplicated(["scheduler", "scenario", "seed", ASKED]).any()
    for _, r in rows.iterrows():
        if r.scenario == "paper":
            s = load_scenario("paper")
        else:  # a generator spec is drawn again with each seed
            s = generators.clustered(2, 3, seed=int(r.seed))
        m = evaluate(s, schedule(s, r.scheduler, e_agg=int(r[ASKED]), seed=int(r.seed)))
        assert r.e_agg == m.e_agg  # the e_agg the plan really uses (star always 1)
        assert (r.latency_s, r.energy_j, r.access_energy_j, r.backhaul_energy_j) == pytest.approx(
            (m.latency_s, m.energy_j, m.access_energy_j, m.backhaul_energy_j), rel=1e-12)
        assert r.objective == r.energy_j and np.isnan(r.gap) and r.solve_s >= 0
    star = rows[rows.scheduler == "star"]
    assert (star.e_agg == 1).all() and set(star[ASKED]) == {2, 4}
    hier = rows[(rows.scheduler == "hierarchical") & (rows[ASKED] == 2)].set_index(["scenario", "seed"]).latency_s
    assert hier[("paper", 0)] == hier[("paper", 1)]  # a fixed network: the seed only drives the schedulers
    assert hier[(spec, 0)] != hier[(spec, 1)]  # a generator: each seed draws a new network


def test_a_reported_gap_is_carried_into_the_table(monkeypatch):
    def with_gap(scenario, *, e_agg: int = 2, seed: int = 0):
        plan = schedule(scenario, "hierarchical", e_agg=e_agg, seed=seed)
        return plan.replace(meta={"gap": 0.125 + seed})

    monkeypatch.setitem(registry._REGISTRY, "with-gap", with_gap)  # registered for this test only
    monkeypatch.setitem(registry._OPTIONS, "with-gap", registry.declared_options("with-gap", with_gap))
    rows = compare.run(["paper"], ["with-gap", "hierarchical"], seeds=[0, 2], e_aggs=[2])
    gaps = rows.set_index(["scheduler", "seed"]).gap
    assert gaps[("with-gap", 0)] == 0.125 and gaps[("with-gap", 2)] == 2.125
    assert np.isnan(gaps["hierarchical"]).all()


def _synthetic(values_by_scheduler, reference_values=None):
    """A table as run() writes it, with hand-picked latencies (energies = 10 x latency) on one scenario."""
    recs = []
    for name, values in values_by_scheduler.items():
        for seed, v in enumerate(values):
            recs.append({"scheduler": name, "scenario": "x", "seed": seed, "e_agg": 2, ASKED: 2, "latency_s": v,
                         "energy_j": 10 * v, "access_energy_j": 10 * v, "backhaul_energy_j": 0.0, "objective": 10 * v,
                         "gap": np.nan, "gap_controllable": np.nan, "solve_s": 0.0})
    return pd.DataFrame(recs)


def test_summary_means_cis_and_ratios_by_hand():
    ref, other = [2.0, 4.0, 6.0, 8.0], [1.0, 1.0, 3.0, 2.0]
    summary = compare.summarise(_synthetic({"ref": ref, "other": other}), reference="ref").set_index("scheduler")
    for name, values in (("ref", ref), ("other", other)):
        lo, hi = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
        row = summary.loc[name]
        assert row.n == len(values) and row.latency_s_mean == pytest.approx(np.mean(values))
        assert row.latency_s_ci95 == pytest.approx((hi - lo) / 2, rel=1e-12)
        assert row.energy_j_ci95 == pytest.approx(10 * (hi - lo) / 2, rel=1e-12)
        assert lo <= row.latency_s_mean <= hi
    assert summary.loc["ref"].latency_ratio == 1.0
    assert summary.loc["other"].latency_ratio == pytest.approx(np.mean(np.array(other) / np.array(ref)))
    assert summary.loc["other"].access_energy_ratio == pytest.approx(np.mean(np.array(other) / np.array(ref)))


def test_ratios_are_nan_without_the_reference_and_one_seed_has_no_ci():
    summary = compare.summarise(_synthetic({"a": [3.0], "b": [1.0, 2.0]}), reference="missing").set_index("scheduler")
    assert np.isnan(summary.loc["a"].latency_s_ci95) and summary.loc["a"].latency_s_mean == 3.0
    assert np.isnan(summary.latency_ratio).all() and np.isnan(summary.access_energy_ratio).all()


def test_cis_shrink_with_more_seeds_and_cover_the_true_mean_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    spread = [1.0, 2.0, 4.0, 7.0]
    widths = [compare.summarise(_synthetic({"s": spread * k}), "s").latency_s_ci95.iloc[0] for k in (1, 2, 4, 16)]
    assert all(b < a for a, b in pairwise(widths))
    # 250 experiments of 3 seeds each, true mean 3: a t interval covers it ~95% of the time (a normal one ~83%)
    draws = {f"run{i}": list(rng.normal(3.0, 1.5, 3)) for i in range(250)}
    summary = compare.summarise(_synthetic(draws), reference="run0")
    mean, half = summary.latency_s_mean, summary.latency_s_ci95
    covered = (mean - half <= 3.0) & (3.0 <= mean + half)
    assert 0.92 <= covered.mean() <= 0.98  # t with n - 1 = 2 degrees of freedom; with 3 it would be ~0.91


def test_write_produces_the_tables_a_strict_json_and_a_png_and_no_temporary(tmp_path):
    rows = _synthetic({"ref": [1.0, 2.0, 3.0], "solo": [4.0]})
    rows.loc[rows.scheduler == "solo", "gap"] = 0.25
    summary = compare.summarise(rows, "ref")
    out = tmp_path / "results"
    written = compare.write(rows, summary, out)
    assert sorted(p.name for p in written) == sorted(p.name for p in out.iterdir()) == \
        ["compare.json", "pareto.png", "rows.csv", "summary.csv"]
    back = pd.read_csv(out / "rows.csv")
    assert list(back.columns) == compare.ROW_COLUMNS
    assert np.allclose(back.latency_s, rows.latency_s) and back.gap.isna().sum() == 3
    assert np.allclose(pd.read_csv(out / "summary.csv").latency_s_mean, summary.latency_s_mean)

    def refuse(token):
        raise ValueError(f"{token} is not JSON")

    doc = json.loads((out / "compare.json").read_text(), parse_constant=refuse)  # NaN must be written as null
    assert len(doc["rows"]) == 4 and len(doc["summary"]) == 2
    assert [r["gap"] for r in doc["rows"]] == [None, None, None, 0.25]
    solo = next(r for r in doc["summary"] if r["scheduler"] == "solo")
    assert solo["latency_s_ci95"] is None and solo["latency_s_mean"] == 4.0
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    compare.write(rows, summary, out)  # writing again replaces the files and leaves nothing else
    assert len(list(out.iterdir())) == 4


def test_stored_cells_are_keyed_by_the_scenario_files_content(tmp_path):
    source = tmp_path / "net.json"
    doc = json.loads((Path(network.__file__).parent / "data" / "paper_scenario.json").read_text())
    source.write_text(json.dumps(doc))
    store = tmp_path / "cells"
    first = compare.run([str(source)], ["hierarchical"], [0], [2], store=store)
    doc["constants"]["backhaul"]["rate_bps"] /= 100  # a slower backhaul: a longer round
    source.write_text(json.dumps(doc))
    again = compare.run([str(source)], ["hierarchical"], [0], [2], store=store)
    fresh = compare.run([str(source)], ["hierarchical"], [0], [2])
    assert again["latency_s"].iloc[0] == fresh["latency_s"].iloc[0] > first["latency_s"].iloc[0]
