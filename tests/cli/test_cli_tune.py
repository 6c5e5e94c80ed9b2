"""``hffm-opt tune`` (hffm_opt.cli.tune) in this process on the tiny study of :mod:`tuning.tiny_study`: the JSON
summary and the files it matches, ``--trials`` as the number of finished trials the study holds, failed, pruned
and Pareto studies, and every bad flag, config or resume refused with exit code 2 and one line naming the field."""

from __future__ import annotations

import importlib.util
import json

import optuna
import pandas as pd
import pytest
from tuning.tiny_study import check_counts, snapshot, tiny_config

from hffm_opt.cli import main
from hffm_opt.tuning import load_settings, prepare

# as in the command: trials run by ask/tell with heartbeats, which optuna calls experimental
pytestmark = [pytest.mark.filterwarnings("ignore:Heartbeat of storage"),
              pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]


@pytest.fixture
def tune(capsys):
    """``hffm-opt tune ARGS`` in this process (torch's thread count restored afterwards): ``(code, stdout,
    stderr)``."""
    import torch

    threads = torch.get_num_threads()

    def run(*args):
        capsys.readouterr()
        code = main(["tune", *map(str, args)])
        out, err = capsys.readouterr()
        return code, out, err

    yield run
    torch.set_num_threads(threads)


@pytest.fixture
def run_cli(tune):
    """``hffm-opt tune ARGS --json`` in this process; the parsed JSON."""

    def run(*args):
        code, out, err = tune(*args, "--json")
        assert code == 0, err
        return json.loads(out)

    return run


def test_infeasible_plans_fail_with_reason_and_json_shape(tmp_path, tune):
    # F4 cannot meet a latency target of a microsecond per edge round: every plan is infeasible, every trial fails
    cfg = tiny_config(tmp_path, schedulers='["optimal"]', options="{ target_latency_s = [1e-7, 1e-6] }",
                      default_scheduler="optimal", default_options="target_latency_s = 5e-7")
    args = ("--study", "infeasible", "--trials", 3, "--config", cfg, "--out", tmp_path / "inf")
    code, out, err = tune(*args, "--json")  # exit 2 saying why no trial was scored; the summary in its file
    assert code == 2 and out == "" and err.splitlines()[-1].startswith(
        "hffm-opt tune: error: study 'infeasible': no trial was scored, every finished trial failed (3); trial 0: "
        "PlanError: plan.meta.status = 'infeasible'")
    result = json.loads((tmp_path / "inf" / "summary.json").read_text())
    assert result == {"study": "infeasible", "n_complete": 0, "n_pruned": 0, "n_failed": 3, "best": None}
    trials = optuna.load_study(study_name="infeasible", storage=f"sqlite:///{tmp_path / 'inf' / 'study.db'}").trials
    assert all(t.state.name == "FAIL" and "PlanError: plan.meta.status = 'infeasible'" in t.user_attrs["fail_reason"]
               for t in trials)
    code, text, err = tune(*args)  # the study is complete: the report again, as text, and the same error
    lines = text.splitlines()
    assert code == 2 and len(err.splitlines()) == 1 and lines[0] == "study infeasible: 0 complete, 0 pruned, 3 failed"
    assert [line.split(":")[0] for line in lines[1:4]] == [f"  trial {k} failed" for k in range(3)]
    assert lines[4] == "no complete trial"


def test_median_pruner_stops_a_clearly_worse_trial(tmp_path, run_cli):
    # the default (lr 3e-2) learns; learning rates down to 1e-7 barely move the model
    cfg = tiny_config(tmp_path, lr="[1e-7, 3e-2]", default_lr=3e-2, pruner="median", max_rounds=4)
    result = run_cli("--study", "prune", "--trials", 5, "--config", cfg, "--out", tmp_path / "prune")
    assert set(result) == {"study", "n_complete", "n_pruned", "n_failed", "best"}
    check_counts(result, 5)
    assert result["n_pruned"] >= 1
    best = result["best"]
    assert best["default_number"] == 0 and best["accuracy_pct"] >= best["default_accuracy_pct"]
    assert best["beats_default"] == (best["accuracy_pct"] > best["default_accuracy_pct"])
    assert (tmp_path / "prune" / "history.png").exists() and (tmp_path / "prune" / "trials.csv").exists()


def test_pareto_study_returns_the_front(tmp_path, run_cli):
    cfg = tiny_config(tmp_path)
    result = run_cli("--study", "front", "--trials", 4, "--objective", "pareto", "--config", cfg, "--out",
                     tmp_path / "front")
    assert set(result) == {"study", "n_complete", "n_pruned", "n_failed", "pareto", "schedulers"}
    assert result["n_complete"] + result["n_failed"] == 4 and result["n_pruned"] == 0
    assert result["pareto"] and all({"number", "accuracy_pct", "energy_j", "scheduler"} <= set(r)
                                    for r in result["pareto"])
    energies = [r["energy_j"] for r in result["pareto"]]
    assert energies == sorted(energies)
    assert (tmp_path / "front" / "pareto.png").exists()
    # every searched scheduler at the default configuration, placed against the front
    points = {p["scheduler"]: p for p in result["schedulers"]}
    assert list(points) == ["hierarchical", "greedy", "star"]
    for p in points.values():
        if "error" not in p:
            beaten = any(f["accuracy_pct"] >= p["accuracy_pct"] and f["energy_j"] <= p["energy_j"]
                         for f in result["pareto"])
            assert p["dominated"] == beaten and p["energy_j"] > 0 and p["rounds"] >= 1
    # the default configuration is the study's first trial: its scheduler's point is that trial again
    default = optuna.load_study(study_name="front", storage=f"sqlite:///{tmp_path / 'front' / 'study.db'}").trials[0]
    assert points["hierarchical"]["energy_j"] == pytest.approx(default.values[1], rel=1e-9)
    assert points["hierarchical"]["accuracy_pct"] == pytest.approx(default.values[0], abs=1e-9)
    assert points["hierarchical"]["dominated"]


def test_trials_is_the_number_of_finished_trials_and_a_rerun_resumes(tmp_path, tune, run_cli):
    cfg, out = tiny_config(tmp_path), tmp_path / "resume"
    args = ("--study", "resume", "--config", cfg, "--out", out)
    check_counts(run_cli(*args, "--trials", 2), 2)
    first = snapshot(f"sqlite:///{out / 'study.db'}", "resume")
    result = run_cli(*args, "--trials", 3)
    check_counts(result, 3)
    again = snapshot(f"sqlite:///{out / 'study.db'}", "resume")
    assert sorted(again) == [0, 1, 2] and {k: again[k] for k in first} == first  # trials 0, 1 kept, one added
    assert json.loads((out / "summary.json").read_text()) == result
    assert list(pd.read_csv(out / "trials.csv")["number"]) == [0, 1, 2]
    code, text, err = tune(*args, "--trials", 1)  # fewer than the study holds: nothing runs, the report is printed
    assert code == 0 and snapshot(f"sqlite:///{out / 'study.db'}", "resume") == again
    lines = text.splitlines()
    counted = f"{result['n_complete']} complete, {result['n_pruned']} pruned, {result['n_failed']} failed"
    assert lines[0] == f"study resume: {counted}"
    assert lines[-1].startswith(f"written to {out}/ (trials.csv, summary.json, history.png")


def _no_driver_url():
    if importlib.util.find_spec("pg8000") is not None:  # pragma: no cover
        pytest.skip("pg8000 is installed: no missing database driver to show")
    return "postgresql+pg8000://user@127.0.0.1:1/db"


@pytest.mark.parametrize("field, extra", [
    ("--trials", ["--trials", "0"]),
    ("--workers", ["--workers", "0"]),
    ("--config", ["--config", "{tmp}/missing.toml"]),
    ("[budget].tme_s", ["--config", "{tmp}/bad.toml"]),
    ("--storage", ["--storage", "NO_DRIVER"]),
])
def test_a_bad_flag_or_config_exits_2_with_one_line_naming_the_field(tmp_path, tune, field, extra):
    (tmp_path / "bad.toml").write_text("[budget]\ntme_s = 1\n")
    extra = [_no_driver_url() if e == "NO_DRIVER" else e.format(tmp=tmp_path) for e in extra]
    code, out, err = tune("--study", "bad", "--out", tmp_path / "out", *extra)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith(f"hffm-opt tune: error: {field} = "), err
    assert not (tmp_path / "out" / "study.db").exists()


@pytest.mark.parametrize("url, hint", [
    ("NO_DRIVER", "for PostgreSQL: pip install 'hffm-opt[postgres]' (psycopg2), and the URL postgresql+psycopg2://"),
    ("mysql://user@127.0.0.1:1/db", "install this database's SQLAlchemy driver"),
])
def test_a_missing_database_driver_gets_the_hint_of_its_database(tmp_path, tune, url, hint):
    """A bare postgresql:// URL wants psycopg 3 under SQLAlchemy 2.1, not the psycopg2 of the extra, and a MySQL URL
    was told to install the PostgreSQL extra."""
    if url.startswith("mysql") and importlib.util.find_spec("MySQLdb") is not None:  # pragma: no cover
        pytest.skip("MySQLdb is installed: no missing database driver to show")
    code, out, err = tune("--study", "s", "--out", tmp_path / "out",
                          "--storage", _no_driver_url() if url == "NO_DRIVER" else url)
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert "no driver for this database" in err and hint in err


def test_a_study_resumes_only_with_its_objective_and_settings(tmp_path, tune):
    cfg, url = tiny_config(tmp_path), f"sqlite:///{tmp_path / 'study.db'}"
    prepare("kept", url, load_settings(cfg), "accuracy")
    before = snapshot(url, "kept")
    code, _, err = tune("--study", "kept", "--storage", url, "--config", cfg, "--objective", "pareto")
    assert code == 2 and err == "hffm-opt tune: error: --objective = 'pareto': study 'kept' was created with " \
                                "objective 'accuracy'\n"
    (tmp_path / "other").mkdir()
    other = tiny_config(tmp_path / "other", max_rounds=4)
    code, _, err = tune("--study", "kept", "--storage", url, "--config", other)
    assert code == 2 and len(err.splitlines()) == 1
    assert err == f"hffm-opt tune: error: [budget].max_rounds = 4: study 'kept' in {url} was created with " \
                  "[budget].max_rounds = 3; use another --study name or the same settings\n"
    assert snapshot(url, "kept") == before  # nothing ran
