"""``hffm-opt tune`` refuses bad settings up front (hffm_opt.tuning): one line naming the field as the file writes
it (``[section].key``), the value and the rule, before any trial starts and before the study's name is taken in the
storage; a resumed study with other settings names the first that differs; a run whose every trial failed exits 2
saying why. Uses the tiny study of :mod:`tuning.tiny_study` (no trial trains here)."""

from __future__ import annotations

import json
import subprocess
import sys

import optuna
import pytest
from tuning.tiny_study import tiny_config

from hffm_opt.cli import main
from hffm_opt.tuning import (
    TuneConfigError,
    load_settings,
    make_objective,
    open_study,
    prepare,
    run_worker,
    settings_from_dict,
    storage_for,
)
from hffm_opt.tuning.settings import SEED_MAX

# as in the command: trials run by ask/tell with heartbeats, which optuna calls experimental
pytestmark = [pytest.mark.filterwarnings("ignore:Heartbeat of storage"),
              pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]

RESUME_HINT = "; use another --study name or the same settings"


@pytest.mark.parametrize("doc, message", [
    ({"search": {"e_agg": [1, 1_000_000_000]}}, "[search].e_agg = [1, 1000000000]: must be integers in [1, 10,000]"),
    ({"search": {"local_steps": [1, 10**12]}},
     "[search].local_steps = [1, 1000000000000]: must be integers in [1, 1,000,000]"),
    ({"setup": {"n_edges": 3}}, "[setup].n_edges = 3: applies to [setup].scenario = 'clustered' only (the scenario "
                                "'paper' has its own network)"),
    ({"train": {"availability": 0.0}}, "[train].availability = 0.0: must be in (0, 1]"),
    ({"train": {"availability_trace": "nothere.csv"}}, "[train].availability_trace = 'nothere.csv': cannot be read"),
    ({"study": {"heartbeat_s": 10**14, "grace_s": 10**14 + 1}},
     "[study].heartbeat_s = 100000000000000: must be an integer in [1, 86400]"),
    ({"study": {"grace_s": 86_401}}, "[study].grace_s = 86401: must be an integer in [1, 86400]"),
    ({"study": {"torch_threads": 100_000}}, "[study].torch_threads = 100000: more than the "),
    ({"study": {"seed": 2**63 - 1}}, "[study].seed = 9223372036854775807: must be an integer in [0, 4294967295]"),
    ({"setup": {"validation_fraction": 2.0}}, "[setup].validation_fraction = 2.0: must be in (0, 1)"),
    ({"setup": {"validation_fraction": 0.0}}, "[setup].validation_fraction = 0.0: must be in (0, 1)"),
    ({"setup": {"scenario": "nothere.json"}}, "[setup].scenario = 'nothere.json': neither"),
])
def test_a_bad_setting_is_refused_in_one_line_naming_section_field_value_and_rule(doc, message):
    with pytest.raises(TuneConfigError) as info:
        settings_from_dict(doc)
    assert str(info.value).startswith(message) and "\n" not in str(info.value), str(info.value)


def test_an_availability_trace_is_read_before_the_study_and_its_devices_checked_against_the_network(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("dev,start,end\n0,1,2\n")
    with pytest.raises(TuneConfigError, match=r"^\[train\]\.availability_trace = '.*bad\.csv': header = "):
        settings_from_dict({"train": {"availability_trace": str(bad)}})
    far = tmp_path / "far.csv"
    far.write_text("device,start_round,end_round\n99,1,2\n")
    cfg = tiny_config(tmp_path)
    cfg.write_text(cfg.read_text() + f'\n[train]\navailability_trace = "{far}"\n')
    with pytest.raises(TuneConfigError, match=r"^\[train\]\.availability_trace = '.*far\.csv': line 2: device = 99: "
                                              r"must be a device index in \[0, 6\)"):
        make_objective(load_settings(cfg))  # the tiny network has 6 devices


@pytest.mark.parametrize("start", ["run_worker", "prepare"])
def test_a_setup_that_cannot_be_built_is_refused_before_the_study_takes_its_name(tmp_path, start):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    settings = settings_from_dict({"setup": {"benchmark": "mnist"}})
    with pytest.raises(TuneConfigError, match=r"^\[setup\]\.benchmark = 'mnist': known benchmarks are"):
        if start == "run_worker":
            run_worker("bench", url, settings, "accuracy", 1)
        else:
            prepare("bench", url, settings, "accuracy")
    assert optuna.get_all_study_names(url) == []  # the name is free for the corrected settings


def test_the_command_refuses_an_unbuildable_setup_in_one_line_and_stores_no_study(tmp_path, capsys):
    cfg = tmp_path / "bench.toml"
    cfg.write_text('[setup]\nbenchmark = "mnist"\n')
    out = tmp_path / "out"
    assert main(["tune", "--study", "bench", "--trials", "1", "--config", str(cfg), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.splitlines()) == 1
    assert captured.err.startswith("hffm-opt tune: error: [setup].benchmark = 'mnist': known benchmarks are")
    assert optuna.get_all_study_names(f"sqlite:///{out / 'study.db'}") == []


def test_a_study_resumed_with_other_settings_names_the_first_that_differs(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    kept = settings_from_dict({"budget": {"max_rounds": 3}})
    open_study("kept", storage_for(url, kept), kept, "accuracy")
    where = f"study 'kept' in {url} was created with"
    other = settings_from_dict({"budget": {"max_rounds": 4}})
    with pytest.raises(TuneConfigError) as info:
        open_study("kept", storage_for(url, other), other, "accuracy")
    assert str(info.value) == f"[budget].max_rounds = 4: {where} [budget].max_rounds = 3{RESUME_HINT}"
    two = settings_from_dict({"budget": {"max_rounds": 4}, "study": {"seed": 1}})
    with pytest.raises(TuneConfigError) as info:
        open_study("kept", storage_for(url, two), two, "accuracy")
    assert str(info.value) == f"[budget].max_rounds = 4: {where} [budget].max_rounds = 3 (and 1 more setting)" \
                              f"{RESUME_HINT}"
    optuna.load_study(study_name="kept", storage=url).set_user_attr("settings", "not JSON")
    with pytest.raises(TuneConfigError) as info:
        open_study("kept", storage_for(url, other), other, "accuracy")
    assert str(info.value) == f"{where} other settings (digest {kept.digest}, these settings {other.digest})" \
                              f"{RESUME_HINT}"


def test_the_largest_seed_seeds_every_joining_workers_sampler(tmp_path):
    settings = settings_from_dict({"study": {"seed": SEED_MAX, "tpe_startup": 0}})
    storage = storage_for(f"sqlite:///{tmp_path / 'study.db'}", settings)
    open_study("s", storage, settings, "accuracy")
    study = open_study("s", storage, settings, "accuracy", seed_offset=1)  # seed SEED_MAX + 1 wraps to 0
    study.ask()  # the enqueued default configuration
    assert 0 < study.ask().suggest_float("x", 0.0, 1.0) < 1  # a drawn one: the sampler's generator is seeded


def test_a_run_whose_every_trial_failed_exits_2_saying_why(tmp_path):
    """Not even one edge round fits 1e-300 s: each trial fails at its plan (nothing trains); the command said
    nothing of it on exit (0) and optuna warned of no complete trials while plotting."""
    cfg = tiny_config(tmp_path, time_s=1e-300)
    proc = subprocess.run([sys.executable, "-m", "hffm_opt.cli", "tune", "--study", "tiny", "--trials", "2",
                           "--config", str(cfg), "--out", str(tmp_path / "out"), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary == {"study": "tiny", "n_complete": 0, "n_pruned": 0, "n_failed": 2, "best": None}
    assert proc.stderr.splitlines()[-1].startswith(
        "hffm-opt tune: error: study 'tiny': no trial was scored, every finished trial failed (2); trial 0: "
        "TrialFailed: [budget].time_s = 1e-300: not even one edge round fits (the first ends at ")
    assert "There are no complete trials" not in proc.stderr
