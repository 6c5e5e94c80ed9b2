"""Tuning-only test helpers: the tiny study (synthetic benchmark, 6 devices, a few edge rounds, about a second a
trial) as a TOML file, ``hffm-opt tune`` as a real process, and exact-count checks on a stored study.

Imported as ``from tuning.tiny_study import ...`` (``tests/`` is on sys.path through ``tests/conftest.py``), so the
CLI tests in ``tests/cli`` share it with ``tests/tuning``."""

from __future__ import annotations

import string
import subprocess
import sys

import optuna

TINY = """
[setup]
benchmark = "synthetic"
scenario = "clustered"
n_edges = 2
devices_per_edge = 3
min_rows = 4
benchmark_kwargs = { n_samples = 600 }
pricing = "proxy"  # the small model's own prices: rounds of well under a second, so the budgets stay tiny
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


def check_counts(result, n):
    """The summary ``result`` counts ``n`` finished trials (complete, pruned or failed)."""
    assert sum(result[k] for k in ("n_complete", "n_pruned", "n_failed")) == n
