"""Sweeps: the same table serially, on local processes and on a real local Dask cluster; resume after a kill."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from hffm_opt.analysis import compare
from hffm_opt.analysis.sweep import cell_key, run_cells
from hffm_opt.errors import ConfigError

SPECS, SCHEDULERS, SEEDS, E_AGGS = ["paper-random"], ["hierarchical", "greedy", "random"], [0, 1], [2, 8]


def _without_times(table):
    return table.drop(columns=["solve_s"]).fillna(-1.0).to_dict("records")  # NaN (no gap) compares equal as -1


@pytest.fixture(scope="module")
def serial():
    return compare.run(SPECS, SCHEDULERS, SEEDS, E_AGGS)


def test_local_processes_give_the_serial_table_in_the_same_order(serial):
    parallel = compare.run(SPECS, SCHEDULERS, SEEDS, E_AGGS, workers=2)
    assert len(serial) == len(SCHEDULERS) * len(SEEDS) * len(E_AGGS)
    assert _without_times(parallel) == _without_times(serial)


def test_a_real_local_dask_cluster_gives_the_serial_table(serial):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cl:
        on_cluster = compare.run(SPECS, SCHEDULERS, SEEDS, E_AGGS, cluster=cl.scheduler_address)
    assert _without_times(on_cluster) == _without_times(serial)


def test_an_unreachable_cluster_is_a_config_error():
    with pytest.raises(ConfigError, match="no Dask scheduler answers"):
        run_cells(compare.compare_cell, [{"scenario": "paper", "seed": 0, "e_agg": 2, "scheduler": "greedy"}] * 2,
                  cluster="tcp://127.0.0.1:9")


def _square(cell):
    return {"x": cell["x"] ** 2, "pid": os.getpid()}


def test_the_store_keeps_finished_cells_and_only_missing_ones_are_computed(tmp_path):
    cells = [{"x": x} for x in range(5)]
    first, stats = run_cells(_square, cells[:3], store=tmp_path)
    assert (stats.reused, stats.computed) == (0, 3)
    (tmp_path / f"{cell_key(_square, cells[1])}.json").write_text("{truncated")  # a cell cut off mid-write
    again, stats = run_cells(_square, cells, store=tmp_path)
    assert (stats.reused, stats.computed) == (2, 3)  # cells 0 and 2 reused; 1 (unreadable), 3 and 4 computed
    assert [r["x"] for r in again] == [0, 1, 4, 9, 16]
    assert again[0] == first[0] and again[2] == first[2]  # read back, not recomputed


@pytest.mark.parametrize("edit", [lambda d: d["result"].update(x=-5), lambda d: d["result"].update(x="lots"),
                                  lambda d: d.update(cell={"x": 7})])
def test_a_stored_cell_edited_since_it_was_written_is_computed_again(tmp_path, edit):
    """An edited result used to be trusted: a latency of -5 s went into the table, a string made a traceback."""
    cells = [{"x": x} for x in range(3)]
    run_cells(_square, cells, store=tmp_path)
    path = tmp_path / f"{cell_key(_square, cells[1])}.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    again, stats = run_cells(_square, cells, store=tmp_path)
    assert (stats.reused, stats.computed) == (2, 1) and [r["x"] for r in again] == [0, 1, 4]


def test_a_killed_compare_resumes_with_only_the_missing_cells(tmp_path):
    spec = tmp_path / "tiny.toml"  # 2 x 3 devices, re-drawn per seed: `optimal` takes about a second per cell
    spec.write_text('[generator]\nname = "clustered"\nn_edges = 2\ndevices_per_edge = 3\nspacing_m = 800.0\n'
                    'cluster_radius_m = 250.0\n')
    out, seeds = tmp_path / "out", 6
    argv = [sys.executable, "-m", "hffm_opt.cli", "compare", "--scenario", str(spec), "--schedulers", "greedy,optimal",
            "--seeds", str(seeds), "--e-agg", "2", "--json", "--out", str(out)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and len(list((out / "cells").glob("*.json"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")}
    assert 2 <= len(before) < 2 * seeds, "the sweep must be killed midway"
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    after = {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")}
    assert len(after) == 2 * seeds and all(after[name] == t for name, t in before.items())  # kept, not recomputed
    resumed = pd.DataFrame(json.loads(done.stdout)["rows"])
    fresh = compare.run([str(spec)], ["greedy", "optimal"], list(range(seeds)), [2])
    columns = ["scheduler", "seed", "e_agg", "latency_s", "energy_j", "gap"]
    pd.testing.assert_frame_equal(resumed[columns].fillna(-1.0), fresh[columns].fillna(-1.0))


def test_optimal_runs_inside_a_worker_process(tmp_path):
    # F4 forks its own pool for 4+ edge servers; inside a sweep's (daemon) worker it runs serially instead
    spec = tmp_path / "four.toml"
    spec.write_text('[generator]\nname = "clustered"\nn_edges = 4\ndevices_per_edge = 2\nspacing_m = 800.0\n'
                    'cluster_radius_m = 250.0\n')
    cells = [{"scenario": str(spec), "seed": s, "e_agg": 2, "scheduler": "optimal"} for s in (0, 1)]
    parallel, _ = run_cells(compare.compare_cell, cells, workers=2)
    serial, _ = run_cells(compare.compare_cell, cells)
    assert [r["energy_j"] for r in parallel] == [r["energy_j"] for r in serial]


@pytest.mark.parametrize("failing", [None, 3])
def test_a_sweep_lets_its_worker_processes_clean_up_when_it_ends_or_stops(tmp_path, failing):
    """Workers that made a named semaphore (pyomo's import makes one) exit through Python, whether the sweep finishes
    or an error in a cell stops it while another cell still runs: none is killed before its clean-up, which the
    resource tracker would report at exit as a leaked semaphore."""
    (tmp_path / "cellmod.py").write_text(
        "import multiprocessing, time\n"
        "LOCKS = []\n"
        "def square_with_a_lock(cell):\n"
        "    LOCKS.append(multiprocessing.Lock())\n"
        "    if cell['x'] == cell['failing']:\n"
        "        time.sleep(0.5)\n"
        "        raise ValueError('cell failed')\n"
        "    time.sleep(0.2 if cell['failing'] is None else 5)\n"
        "    return cell['x'] ** 2\n")
    script = ("import sys\n"
              f"sys.path.insert(0, {str(tmp_path)!r})\n"
              "from cellmod import square_with_a_lock\n"
              "from hffm_opt.analysis.sweep import run_cells\n"
              "try:\n"
              f"    print(run_cells(square_with_a_lock, [{{'x': x, 'failing': {failing}}} for x in range(6)],"
              " workers=2)[0])\n"
              "except ValueError as exc:\n"
              "    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (str([x * x for x in range(6)]) if failing is None else "cell failed")
    assert "leaked" not in done.stderr and "resource_tracker" not in done.stderr, done.stderr


def test_a_worker_that_cannot_exit_cleanly_is_killed_when_a_sweep_stops(tmp_path):
    """A worker that does not act on the terminate signal (as inside a long native call, e.g. a solver's) is killed
    STOP_S seconds after the sweep stops, so Ctrl-C or an error never waits for its cell to end."""
    (tmp_path / "stuckmod.py").write_text(
        "import signal, time\n"
        "def stuck_or_failing(cell):\n"
        "    if cell['x'] == 0:\n"
        "        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})\n"
        "        time.sleep(120)\n"
        "    time.sleep(1)\n"
        "    raise ValueError('cell failed')\n")
    script = ("import sys, time\n"
              f"sys.path.insert(0, {str(tmp_path)!r})\n"
              "from stuckmod import stuck_or_failing\n"
              "from hffm_opt.analysis.sweep import run_cells\n"
              "start = time.perf_counter()\n"
              "try:\n"
              "    run_cells(stuck_or_failing, [{'x': 0}, {'x': 1}], workers=2)\n"
              "except ValueError as exc:\n"
              "    print(exc, round(time.perf_counter() - start))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=100)
    message, seconds = done.stdout.strip().rsplit(" ", 1)
    assert done.returncode == 0 and message == "cell failed", done.stderr
    assert int(seconds) < 60  # the stuck cell sleeps 120 s


def test_a_worker_terminated_while_it_exits_finishes_its_exit_callbacks_without_a_traceback(tmp_path):
    """Ctrl-C on `run` printed a traceback: the stopped sweep terminated workers that were already exiting, and the
    SIGTERM handler raised SystemExit inside an exit callback (torch's). An exiting worker now ignores SIGTERM."""
    (tmp_path / "exitmod.py").write_text(
        "import atexit, os, time\n"
        "def slow_exit(cell):\n"
        "    def callback():\n"
        "        open(os.path.join(cell['dir'], f'exiting{os.getpid()}'), 'w').close()\n"
        "        time.sleep(1.5)\n"
        "        open(os.path.join(cell['dir'], f'done{os.getpid()}'), 'w').close()\n"
        "    atexit.register(callback)\n"
        "    return os.getpid()\n")
    script = ("import os, signal, sys, threading, time\n"
              f"sys.path.insert(0, {str(tmp_path)!r})\n"
              "from exitmod import slow_exit\n"
              "from hffm_opt.analysis.sweep import run_cells\n"
              f"d = {str(tmp_path)!r}\n"
              "def terminate_exiting_workers():\n"
              "    sent = set()\n"
              "    while len(sent) < 2:\n"
              "        for name in os.listdir(d):\n"
              "            if name.startswith('exiting') and name not in sent:\n"
              "                sent.add(name)\n"
              "                os.kill(int(name[len('exiting'):]), signal.SIGTERM)\n"
              "        time.sleep(0.01)\n"
              "threading.Thread(target=terminate_exiting_workers, daemon=True).start()\n"
              "pids, _ = run_cells(slow_exit, [{'x': x, 'dir': d} for x in range(2)], workers=2)\n"
              "print(sorted(set(pids)))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    pids = json.loads(done.stdout)
    assert "Traceback" not in done.stderr and "SystemExit" not in done.stderr, done.stderr
    assert all((tmp_path / f"exiting{p}").exists() and (tmp_path / f"done{p}").exists() for p in pids)
