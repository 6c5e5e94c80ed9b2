"""The worker protocol (hffm_opt.tuning.workers): exact trial counts with several worker processes on SQLite and
PostgreSQL, a worker killed with SIGKILL, an interrupted trial, a dead worker's trial re-queued after its grace
period, the study lock's lease. The in-process tests run a stand-in objective (no training, a few ms a trial); the
process tests the tiny study of :mod:`tuning.tiny_study` (about a second a trial)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import optuna
import pytest
from tuning.tiny_study import assert_exact, check_counts, snapshot, tiny_config, tune

from hffm_opt.tuning import (
    StudyLock,
    TrialFailed,
    counts,
    prepare,
    run_worker,
    settings_from_dict,
    storage_for,
    suggest,
)

# as in the command: trials run by ask/tell with heartbeats, which optuna calls experimental
pytestmark = [pytest.mark.filterwarnings("ignore:Heartbeat of storage"),
              pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]


class StandIn:
    """An objective that draws the trial's choice and returns 100 x its learning rate, failing, pruning or
    interrupting the trials numbered in ``fail``, ``prune``, ``interrupt``; ``calls`` lists the trials it ran."""

    def __init__(self, settings, fail=(), prune=(), interrupt=()):
        self.settings, self.fail, self.prune, self.interrupt, self.calls = settings, fail, prune, interrupt, []

    def __call__(self, trial):
        choice = suggest(trial, self.settings)
        self.calls.append(trial.number)
        if trial.number in self.fail:
            raise TrialFailed("no score")
        if trial.number in self.prune:
            raise optuna.TrialPruned("worse")
        if trial.number in self.interrupt:
            raise KeyboardInterrupt
        return 100 * choice["lr"]


@pytest.fixture
def fast():
    """The default settings but a 1 s heartbeat, a 2 s grace period and no pruner."""
    return settings_from_dict({"study": {"heartbeat_s": 1, "grace_s": 2, "pruner": "none"}})


def sqlite(tmp_path):
    return f"sqlite:///{tmp_path / 'study.db'}"


# ----------------------------------------------------------------------------------------------- in-process units
def test_run_worker_holds_exactly_n_finished_trials_and_resumes(tmp_path, fast):
    url, first = sqlite(tmp_path), StandIn(fast, fail={1}, prune={2})
    study = run_worker("w", url, fast, "accuracy", 4, objective=first)
    assert first.calls == [0, 1, 2, 3]
    snap = assert_exact(url, "w", 4)
    assert [snap[k][0] for k in range(4)] == ["COMPLETE", "FAIL", "PRUNED", "COMPLETE"]
    assert counts(study) == {"n_complete": 2, "n_pruned": 1, "n_failed": 1}
    trials = study.get_trials(deepcopy=False)
    assert trials[0].params == fast.defaults and trials[0].user_attrs["role"] == "default"
    assert trials[1].user_attrs["fail_reason"] == "TrialFailed: no score"
    for n in (4, 2):  # as many or fewer finished trials than the study holds: nothing runs
        idle = StandIn(fast)
        run_worker("w", url, fast, "accuracy", n, objective=idle)
        assert idle.calls == []
    more = StandIn(fast)
    run_worker("w", url, fast, "accuracy", 6, objective=more)
    assert more.calls == [4, 5]
    after = assert_exact(url, "w", 6)
    assert {k: after[k] for k in snap} == snap
    assert optuna.load_study(study_name="w", storage=url).user_attrs["workers_joined"] == 4


def test_an_interrupted_trial_is_rerun_with_its_number_and_parameters(tmp_path, fast):
    url = sqlite(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run_worker("i", url, fast, "accuracy", 3, objective=StandIn(fast, interrupt={1}))
    before = snapshot(url, "i")
    assert [before[k][0] for k in sorted(before)] == ["COMPLETE", "WAITING"] and before[1][2]
    resumed = StandIn(fast)
    run_worker("i", url, fast, "accuracy", 3, objective=resumed)
    assert resumed.calls == [1, 2]
    after = assert_exact(url, "i", 3)
    assert after[1][0] == "COMPLETE" and after[1][2] == before[1][2] and after[0] == before[0]


def test_a_dead_workers_trial_is_requeued_after_the_grace_period_not_before(tmp_path, fast):
    url = sqlite(tmp_path)
    prepare("dead", url, fast, "accuracy", objective=StandIn(fast))
    storage = storage_for(url, fast)
    study = optuna.load_study(study_name="dead", storage=storage)
    trial = study.ask()  # a worker claims the default trial, draws it, beats once, and dies
    drawn = suggest(trial, fast)
    storage.record_heartbeat(storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name("dead"), trial.number))
    early = StandIn(fast)
    run_worker("dead", url, fast, "accuracy", 1, objective=early, timeout_s=0.5)  # within the grace period
    assert early.calls == [] and snapshot(url, "dead")[0][0] == "RUNNING"
    time.sleep(fast.study["grace_s"] + 1.5)
    late = StandIn(fast)
    run_worker("dead", url, fast, "accuracy", 2, objective=late, timeout_s=30)  # without the re-queue: waits
    assert late.calls == [0, 1]
    after = assert_exact(url, "dead", 2)
    assert after[0][0] == "COMPLETE" and after[0][2] == drawn == fast.defaults


def test_study_lock_excludes_by_name_and_a_dead_holder_loses_it_after_its_lease(tmp_path):
    url, lease = sqlite(tmp_path), 2.0
    StudyLock(url, "x", lease_s=lease).__enter__()  # a holder that dies without releasing
    t0 = time.monotonic()
    with StudyLock(url, "x", lease_s=lease):
        assert time.monotonic() - t0 >= lease - 0.2
        t1 = time.monotonic()
        with StudyLock(url, "y", lease_s=lease):  # another name is not held
            assert time.monotonic() - t1 < lease / 2
    t2 = time.monotonic()
    with StudyLock(url, "x", lease_s=lease):  # released on exit: no wait for the lease
        assert time.monotonic() - t2 < lease * 0.75


# ----------------------------------------------------------------------------------------------- worker processes
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


def _worker_processes(marker: str) -> list[int]:
    """Process ids whose command line holds ``--worker-only`` and ``marker``."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace")
        except (OSError, ValueError):
            continue
        if "--worker-only" in cmd and marker in cmd:
            pids.append(int(entry))
    return pids


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc to find the worker processes")
def test_ctrl_c_of_tune_with_workers_says_interrupted_once_and_stops_them(tmp_path):
    cfg = tiny_config(tmp_path, time_s=2.0, max_rounds=16)
    url = f"sqlite:///{tmp_path / 'ctrlc.db'}"
    script = ("import signal, sys\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"  # as in a terminal
              "from hffm_opt.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    proc = subprocess.Popen([sys.executable, "-c", script, "tune", "--study", "ctrlc", "--storage", url, "--trials",
                             "8", "--workers", "2", "--config", str(cfg), "--out", str(tmp_path / "out")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:  # Ctrl-C while the workers run trials
        time.sleep(0.3)
        try:
            if [s for s, _, _ in snapshot(url, "ctrlc").values()].count("RUNNING") >= 1:
                break
        except Exception:  # the workers have not created the study yet
            continue
    assert len(_worker_processes(str(tmp_path))) == 2
    os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole process group
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and out == ""
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    assert [line for line in lines if "interrupted" in line] == ["hffm-opt tune: interrupted"] == lines[-1:], err
    assert not _worker_processes(str(tmp_path))
