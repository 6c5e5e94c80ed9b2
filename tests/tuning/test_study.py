"""The closed loop (hffm_opt.tuning, ``hffm-opt tune``): exact trial counts with several worker processes on SQLite and
PostgreSQL, a worker killed with SIGKILL, failed and pruned trials, the JSON summary. Every study runs a tiny
learning setup (synthetic benchmark, 6 devices, a few edge rounds) so each trial takes about a second."""

from __future__ import annotations

import json
import os
import signal
import string
import subprocess
import sys
import time
import uuid

import optuna
import pytest

from hffm_opt import load_scenario, schedule
from hffm_opt.evaluate import evaluate
from hffm_opt.tuning import TuneConfigError, rounds_within, settings_from_dict

TINY = """
[setup]
benchmark = "synthetic"
scenario = "clustered"
n_edges = 2
devices_per_edge = 3
min_rows = 4
benchmark_kwargs = { n_samples = 600 }
model_config = { d_model = 16, n_heads = 2, d_ff = 32, d_expert = 32, n_experts = 2, top_k = 1, adapter_dim = 4 }
pretrain_kwargs = { encoder_epochs = 1, epochs = 1 }

[budget]
time_s = $time_s
max_rounds = $max_rounds

[search]
schedulers = $schedulers
e_agg = [1, 4]
deadline_factor = [0.5, 1.2]
lr = $lr
local_steps = [1, 3]
options = $options

[defaults]
scheduler = "$default_scheduler"
e_agg = 2
deadline_factor = 1.2
lr = $default_lr
local_steps = 1
$default_options

[study]
heartbeat_s = 1
grace_s = 5
pruner = "$pruner"
pruner_startup = 1
"""


def tiny_config(tmp_path, time_s=0.3, max_rounds=3, lr="[1e-4, 3e-2]", default_lr=3e-3, pruner="none",
                schedulers='["hierarchical", "greedy", "star"]', options="{}", default_scheduler="hierarchical",
                default_options=""):
    """The tiny study's TOML file in ``tmp_path``, with the given budget, search space, defaults and pruner."""
    path = tmp_path / "tiny.toml"
    path.write_text(string.Template(TINY).substitute(
        time_s=time_s, max_rounds=max_rounds, lr=lr, default_lr=default_lr, pruner=pruner, schedulers=schedulers,
        options=options, default_scheduler=default_scheduler, default_options=default_options))
    return path


def tune(*args, wait=True):
    """``hffm-opt tune ARGS`` as a real process (the same interpreter as the tests)."""
    cmd = [sys.executable, "-m", "hffm_opt.cli", "tune", *map(str, args)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return out, err


def snapshot(url, study):
    """Every trial as number -> (state, values, params)."""
    trials = optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False)
    return {t.number: (t.state.name, t.values, t.params) for t in trials}


def assert_exact(url, study, n):
    """The study holds exactly n finished trials, numbered 0..n-1, none left running or waiting, no twin draws."""
    snap = snapshot(url, study)
    assert sorted(snap) == list(range(n))
    assert all(state in ("COMPLETE", "PRUNED", "FAIL") for state, _, _ in snap.values()), snap
    params = [tuple(sorted(p.items())) for _, _, p in snap.values()]
    assert len(set(params)) == n, "two trials drew the same parameters"
    return snap


# ----------------------------------------------------------------------------------------------- in-process units
def test_settings_errors_name_field_value_and_rule():
    with pytest.raises(TuneConfigError, match=r"search.lr = \[0.0, 0.1\]: a log-scaled range needs low > 0"):
        settings_from_dict({"search": {"lr": [0.0, 0.1]}})
    with pytest.raises(TuneConfigError, match=r"config section = 'serach'"):
        settings_from_dict({"serach": {}})
    with pytest.raises(TuneConfigError, match=r"defaults.e_agg = 99: must lie in the search space"):
        settings_from_dict({"defaults": {"scheduler": "hierarchical", "e_agg": 99, "deadline_factor": 1.2,
                                         "lr": 3e-3, "local_steps": 1}})
    with pytest.raises(TuneConfigError, match=r"search.options.w_X = \[0.1, 1.0\]: no scheduler"):
        settings_from_dict({"search": {"options": {"w_X": [0.1, 1.0]}}})
    with pytest.raises(TuneConfigError, match=r"budget.time_s = -1"):
        settings_from_dict({"budget": {"time_s": -1}})


def test_rounds_within_follows_the_trainers_clock():
    scenario = load_scenario("paper")
    m = evaluate(scenario, schedule(scenario, "hierarchical", e_agg=2))
    assert rounds_within(m, None, None, 7) == 7
    assert rounds_within(m, float(m.round_end_s[0]), None, 7) == 1
    assert rounds_within(m, m.period_latency_s + float(m.round_end_s[0]), None, 7) == 3
    assert rounds_within(m, None, float(m.round_energy_j[0]) * 0.5, 7) == 0


# ----------------------------------------------------------------------------------------------- worker processes
def check_counts(result, n):
    assert sum(result[k] for k in ("n_complete", "n_pruned", "n_failed")) == n


def test_two_local_workers_share_a_sqlite_study(tmp_path):
    cfg, url, n = tiny_config(tmp_path), f"sqlite:///{tmp_path / 'out' / 'study.db'}", 5
    out, _ = tune("--study", "two", "--trials", n, "--workers", 2, "--config", cfg, "--out", tmp_path / "out", "--json")
    check_counts(json.loads(out), n)
    assert_exact(url, "two", n)
    study = optuna.load_study(study_name="two", storage=url)
    assert [t.user_attrs.get("role") for t in study.trials].count("default") == 1
    assert study.user_attrs["workers_joined"] == 2


def test_two_worker_commands_share_a_postgresql_study(tmp_path):
    url = os.environ.get("HFFM_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CI is set but HFFM_TEST_POSTGRES_URL is not: .ci/run must start PostgreSQL")
        pytest.skip("no PostgreSQL server: set HFFM_TEST_POSTGRES_URL (.ci/run starts one from the Debian packages)")
    cfg, study, n = tiny_config(tmp_path), f"pg-{uuid.uuid4().hex[:8]}", 6
    procs = [tune("--study", study, "--storage", url, "--trials", n, "--config", cfg, "--out", tmp_path / f"w{i}",
                  "--json", wait=False) for i in range(2)]  # as if started on two machines
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        check_counts(json.loads(out), n)
    assert_exact(url, study, n)


def test_killed_worker_restart_keeps_finished_trials_and_exact_count(tmp_path):
    cfg = tiny_config(tmp_path, time_s=2.0, max_rounds=16)
    url, n = f"sqlite:///{tmp_path / 'kill.db'}", 6
    args = ("--study", "kill", "--storage", url, "--trials", n, "--config", cfg, "--out", tmp_path / "out")
    proc = tune(*args, wait=False)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:  # kill while a trial runs, after two finished
        time.sleep(0.3)
        try:
            snap = snapshot(url, "kill")
        except Exception:  # the worker has not created the study yet
            continue
        states = [s for s, _, _ in snap.values()]
        if states.count("RUNNING") == 1 and sum(s in ("COMPLETE", "PRUNED", "FAIL") for s in states) >= 2:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the worker finished before it could be killed"
    before = snapshot(url, "kill")
    finished = {k: v for k, v in before.items() if v[0] != "RUNNING"}
    running = [k for k, v in before.items() if v[0] == "RUNNING"]
    out, _ = tune(*args, "--json")  # the same command again: waits out the dead worker's heartbeat, then resumes
    after = assert_exact(url, "kill", n)
    assert {k: after[k] for k in finished} == finished  # nothing finished was lost or re-run
    for k in running:  # the killed trial was run again, keeping the parameters it had drawn
        assert before[k][2].items() <= after[k][2].items() and after[k][0] != "RUNNING"
    check_counts(json.loads(out), n)


# ----------------------------------------------------------------------------------------------- in-process CLI
@pytest.fixture
def run_cli(capsys):
    """``hffm-opt tune ARGS --json`` in this process (torch's thread count restored afterwards); the parsed JSON."""
    import torch

    threads = torch.get_num_threads()

    def run(*args):
        from hffm_opt.cli import main

        capsys.readouterr()
        assert main(["tune", *map(str, args), "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    yield run
    torch.set_num_threads(threads)


def test_infeasible_plans_fail_with_reason_and_json_shape(tmp_path, run_cli):
    # F4 cannot meet a latency target of a microsecond per edge round: every plan is infeasible, every trial fails
    cfg = tiny_config(tmp_path, schedulers='["optimal"]', options="{ target_latency_s = [1e-7, 1e-6] }",
                      default_scheduler="optimal", default_options="target_latency_s = 5e-7")
    result = run_cli("--study", "infeasible", "--trials", 3, "--config", cfg, "--out", tmp_path / "inf")
    assert result == {"study": "infeasible", "n_complete": 0, "n_pruned": 0, "n_failed": 3, "best": None}
    trials = optuna.load_study(study_name="infeasible", storage=f"sqlite:///{tmp_path / 'inf' / 'study.db'}").trials
    assert all(t.state.name == "FAIL" and "PlanError: plan.meta.status = 'infeasible'" in t.user_attrs["fail_reason"]
               for t in trials)


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
    assert set(result) == {"study", "n_complete", "n_pruned", "n_failed", "pareto"}
    assert result["n_complete"] + result["n_failed"] == 4 and result["n_pruned"] == 0
    assert result["pareto"] and all({"number", "accuracy_pct", "energy_j", "scheduler"} <= set(r)
                                    for r in result["pareto"])
    energies = [r["energy_j"] for r in result["pareto"]]
    assert energies == sorted(energies)
    assert (tmp_path / "front" / "pareto.png").exists()
