"""`hffm-opt train`, `run` and the learner bench on a tiny synthetic experiment (default: easy-VQA, paper scenario)."""

import json
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hffm_opt.cli import main
from hffm_opt.errors import ConfigError
from hffm_opt.evaluate import evaluate
from hffm_opt.learners.setup import learning_setup
from hffm_opt.schedulers import schedule

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TINY = ["--benchmark", "synthetic", "--scenario", "clustered", "--n-edges", "2", "--devices-per-edge", "3",
        "--rounds", "2", "--local-steps", "2", "--batch-size", "8", "--eval-every", "1"]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HFFM_OPT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _priced(scheduler, e_agg, seed=0):
    """The plan of the tiny experiment made for the workload of TINY (2 local steps of 8 samples), priced."""
    s = learning_setup("synthetic", scenario="clustered", n_edges=2, devices_per_edge=3, seed=seed).scenario
    return evaluate(s, schedule(s, scheduler, e_agg=e_agg, seed=seed, local_steps=2, batch_size=8))


def test_train_json(capsys, tmp_path):
    assert main(["train", *TINY, "--scheduler", "hierarchical-d2d", "--e-agg", "2", "--json", "--out",
                 str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["scheduler"] == "hierarchical-d2d" and out["e_agg"] == 2
    assert 0 <= out["accuracy"] <= 100 and set(out["accuracy_by_task"]) == {"t0", "t1"}
    m = _priced("hierarchical-d2d", 2)
    assert out["latency_s"] == pytest.approx(m.latency_s) and out["time_s"] == pytest.approx(m.period_latency_s)
    assert (tmp_path / "history.csv").exists() and (tmp_path / "checkpoint" / "checkpoint.pt").exists()
    assert len(json.loads((tmp_path / "history.json").read_text())["records"]) == 2


RUN_KEYS = {"method", "e_agg", "latency_s", "energy_j", "accuracy", "served_accuracy", "served_accuracy_ci95",
            "time_to_target_s", "energy_to_target_j", "energy_to_target_j_ci95", "n_seeds"}


def test_run_json_and_files(capsys, tmp_path):
    assert main(["run", *TINY, "--seeds", "2", "--central-epochs", "0.2", "--json", "--out", str(tmp_path)]) == 0
    doc = json.loads(capsys.readouterr().out)
    res = doc["results"]
    assert [(r["method"], r["e_agg"]) for r in res[:-2]] == [
        ("star", 1), ("hier", 2), ("hier", 8), ("edge", 200), ("hier-d2d", 2), ("hier-d2d", 8), ("edge-d2d", 200),
        ("greedy", 8), ("optimal", 2), ("optimal", 8)]
    # optimal choosing its E_agg among 2, 4, 8, 16 at the same latency target: never more energy than at E_agg 8
    own, aware = res[-2:]
    assert own["method"] == "optimal-own-e-agg" and own["e_agg"] in (2, 4, 8, 16)
    assert own["energy_j"] <= res[-3]["energy_j"] * (1 + 1e-9)
    # the learning-aware optimal may keep modules in their clusters: never more energy than optimal at E_agg 8
    assert aware["method"] == "optimal-learning-aware" and aware["e_agg"] == 8
    assert aware["energy_j"] <= res[-3]["energy_j"] * (1 + 1e-9)
    assert all(RUN_KEYS <= set(r) and r["n_seeds"] == 2 for r in res)
    # every plan is made for and priced with the workload that trains (mean over the two seeds' networks)
    hier = [_priced("hierarchical", 2, seed).latency_s for seed in (0, 1)]
    assert res[1]["latency_s"] == pytest.approx(sum(hier) / 2)
    assert all(0 <= r["accuracy"] <= 100 and 0 <= r["served_accuracy"] <= 100 for r in res)
    ref = doc["reference"]
    assert 0 < ref["linear_probe_accuracy"] <= 100 and 0 < ref["central_accuracy"] <= 100
    assert doc["target_accuracy"] == pytest.approx(round(0.95 * ref["central_accuracy"], 1))
    for r in res:  # a CI needs two values: both seeds' served accuracies are there
        assert r["served_accuracy_ci95"] is not None and r["served_accuracy_ci95"] >= 0
        assert (r["time_to_target_s"] is None) == (r["n_reached"] == 0)
    for name in ("served_accuracy_vs_time.png", "served_accuracy_vs_energy.png", "results.json",
                 "history_hier_E2_seed0.csv", "history_optimal_E8_seed1.json"):
        assert (tmp_path / name).stat().st_size > 0
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # atomic writes leave no temporary
    # the seeds ran on two local processes (the default): one process gives the same numbers
    assert main(["run", *TINY, "--seeds", "2", "--central-epochs", "0.2", "--workers", "1", "--json", "--out",
                 str(tmp_path / "serial")]) == 0
    assert json.loads(capsys.readouterr().out) == doc


@pytest.fixture
def tiny_bench(monkeypatch):
    """The learner bench on a tiny synthetic model (the command's code path, seconds instead of minutes)."""
    from hffm_opt.analysis import learner_bench
    from hffm_opt.learners import setup as setup_module

    real = setup_module.learning_setup

    def tiny(name, **kw):
        kw.update(benchmark_kwargs={"n_samples": 1200}, model_config={"d_model": 16, "d_ff": 32, "d_expert": 16,
                                                                      "n_heads": 2}, cache=False)
        return real("synthetic", **kw)

    monkeypatch.setattr(setup_module, "learning_setup", tiny)
    monkeypatch.setattr(learner_bench, "_benchmark_for", lambda n, b: ("synthetic", {}, {"epochs": 1,
                                                                                         "encoder_epochs": 0}))


@pytest.mark.parametrize("command", ["train", "run"])
@pytest.mark.parametrize("flags", [["--n-edges", "3"], ["--scenario", "paper", "--devices-per-edge", "5"]])
def test_layout_flags_of_another_scenario_than_clustered_are_refused_not_ignored(capsys, command, flags):
    """--n-edges/--devices-per-edge shape the 'clustered' scenario only; with another they used to be ignored."""
    assert main([command, "--benchmark", "synthetic", *flags]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1
    assert f"{flags[-2]} = {flags[-1]}: applies to --scenario clustered only (the scenario 'paper'" in err


@pytest.mark.parametrize("command", ["train", "run"])
@pytest.mark.parametrize("text, says", [(None, "cannot be read (FileNotFoundError"),
                                        ("device,start,end\n", "header = ['device', 'start', 'end']"),
                                        ("device,start_round,end_round\n-1,1,2\n", "device = -1: must be a device"),
                                        ("device,start_round,end_round\n6,1,2\n", "device = 6: must be a device "
                                                                               "index in [0, 6)"),
                                        ("device,start_round,end_round\n", "no device is available in any of the"),
                                        ("device,start_round,end_round\n0,99,100\n", "no interval starts by round")])
def test_a_bad_availability_trace_exits_2_before_any_training(command, text, says, tmp_path, capsys, monkeypatch):
    """The trace was read when training started: after the plans (about a minute of `run`). A missing or malformed
    file is refused before anything is built, a device the network lacks once the network is known, before any
    plan is made."""
    from hffm_opt.analysis import closed_loop
    from hffm_opt.cli import learn

    trace = tmp_path / "trace.csv"
    if text is not None:
        trace.write_text(text)
    built = []
    real_setup = learn._setup
    monkeypatch.setattr(learn, "_setup", lambda *a, **k: built.append(1) or real_setup(*a, **k))
    monkeypatch.setattr(closed_loop, "plan_methods", lambda *a, **k: pytest.fail("planned"))
    monkeypatch.setattr("hffm_opt.schedulers.schedule", lambda *a, **k: pytest.fail("planned"))
    assert main([command, *TINY, "--availability-trace", str(trace), "--workers" if command == "run" else "--seed",
                 "1" if command == "run" else "0", "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and says in err
    assert built == ([1] if "[0, 6)" in says else [])  # the network was built only to check the device indices


def test_run_and_tune_refuse_more_workers_than_cores_and_run_defaults_to_no_more(capsys, monkeypatch, tmp_path):
    """Each worker process of run (and of tune) trains on one core and holds the experiment's data: `run --workers
    64` on 2 cores used to start 64 of them (129 shares) and thrash; now both exit 2 before any work. Without
    --workers run uses 2 processes, or the cores where there are fewer."""
    from hffm_opt import _cores
    from hffm_opt.cli import learn

    monkeypatch.setattr(learn, "_setup", lambda *a, **k: pytest.fail("built the experiment"))
    monkeypatch.setattr(_cores, "cpu_cores", lambda: 3)
    assert main(["run", *TINY, "--workers", "4", "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.strip().splitlines() == [
        "hffm-opt run: error: --workers = '4': more than the 3 cores this process may use (each worker trains on "
        "one core and holds the experiment's data; use at most 3) (see hffm-opt run --help)"]
    assert learn._run_workers(3) == 3 and learn._run_workers(None) == 2
    pytest.importorskip("optuna")
    assert main(["tune", "--study", "s", "--workers", "4", "--out", str(tmp_path / "t"), "--json"]) == 2
    assert not (tmp_path / "t").exists()  # refused before the study was created
    assert capsys.readouterr().err.strip().splitlines() == [
        "hffm-opt tune: error: --workers = '4': more than the 3 cores this process may use (each worker trains on "
        "one core and holds the experiment's data; use at most 3) (see hffm-opt tune --help)"]
    monkeypatch.setattr(_cores, "cpu_cores", lambda: 1)
    assert learn._run_workers(None) == 1


def test_learner_bench_rows(tiny_bench):
    from hffm_opt.analysis.learner_bench import bench_learner

    (r,) = bench_learner((20,), local_steps=2, batch_size=8, reference_devices=4)
    assert r["n_devices"] == 20 and r["device"] == "cpu" and r["round_s"] > 0 and r["central_samples_per_s"] > 0
    # one global round = 2 edge rounds of every device: the throughput is those samples over the round's wall time
    assert r["fl_samples_per_s"] == pytest.approx(20 * 2 * 2 * 8 / r["round_s"])
    assert r["ratio"] == pytest.approx(r["fl_samples_per_s"] / r["central_samples_per_s"])
    assert r["speedup_vs_reference"] == pytest.approx(r["fl_samples_per_s"] / r["reference_samples_per_s"])
    # central training did the same work: the same number of steps at the same compute batch
    assert r["central_steps"] == r["central_steps_planned"] == 2 * 2 and r["compute_batch"] == 20 * 8
    assert r["reference_devices"] == 4


def test_bench_learner_json_shape_and_sizes(tiny_bench, capsys):
    assert main(["bench", "--learner", "--sizes", "40", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["learner"]
    assert [r["n_devices"] for r in rows] == [40]  # --sizes is honoured
    assert {"n_devices", "device", "round_s", "fl_samples_per_s", "central_samples_per_s", "reference_samples_per_s",
            "ratio", "speedup_vs_reference", "peak_mem_mb"} <= set(rows[0])
    assert rows[0]["device"] == "cpu" and rows[0]["peak_mem_mb"] > 0


@given(st.integers(1, 100_000))
@settings(max_examples=300, deadline=None)
def test_the_benchmarks_run_exactly_the_sizes_asked_or_refuse_them(n):
    from hffm_opt.analysis.bench import size_layout as layout

    try:
        n_edges, per = layout(n)
    except ConfigError as exc:  # the size it suggests is one it runs
        suggested = int(str(exc).rsplit("e.g. ", 1)[1].rstrip(")"))
        assert suggested < n and np.prod(layout(suggested)) == suggested
    else:
        assert n_edges * per == n and 1 <= n_edges <= 1000


@pytest.mark.parametrize("learner", [["--learner"], ["--schedulers", "greedy"]])
def test_a_size_the_benchmarks_cannot_lay_out_exits_2_before_any_run(tiny_bench, capsys, learner):
    assert main(["bench", *learner, "--sizes", "40,1234", "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and "1234" in err and "1224" in err


def test_the_learner_bench_refuses_more_threads_than_cores(tiny_bench, capsys):
    """Oversubscribed threads would time the OS's scheduler: more threads than cores is one clear line, exit 2."""
    from hffm_opt._cores import cpu_cores
    from hffm_opt.learners.device import one_torch_thread

    with one_torch_thread():  # the command sets torch's threads; leave them as they were for the other tests
        assert main(["bench", "--learner", "--threads", str(cpu_cores() + 1), "--sizes", "40", "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and f"more than the {cpu_cores()} cores" in err


def test_learner_bench_has_its_own_default_sizes():
    import argparse

    from hffm_opt.analysis.learner_bench import DEFAULT_SIZES, default_sizes

    scheduler_default = (40, 400, 4000, 10000)
    assert default_sizes(argparse.Namespace(sizes=scheduler_default), scheduler_default) == list(DEFAULT_SIZES)
    assert default_sizes(argparse.Namespace(sizes=(40, 1000)), scheduler_default) == [40, 1000]
    assert default_sizes(argparse.Namespace(sizes="40,400"), scheduler_default) == [40, 400]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("argv", [["train", *TINY], ["run", *TINY], ["bench", "--learner", "--sizes", "40"]])
def test_torch_device_cuda_without_cuda_exits_2_with_one_line(argv, capsys):
    assert main([*argv, "--torch-device", "cuda", "--json"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CUDA is not available" in err[0]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_tune_torch_device_cuda_without_cuda_exits_2_before_any_trial(tmp_path, capsys):
    pytest.importorskip("optuna")
    assert main(["tune", "--study", "s", "--out", str(tmp_path / "t"), "--torch-device", "cuda", "--json"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CUDA is not available" in err[0]
    assert not (tmp_path / "t").exists()  # refused before the study was created


def test_the_learner_bench_counts_its_workers_cpu_time_and_memory():
    """The training workers are child processes: the bench's CPU seconds and peak memory must include them."""
    from hffm_opt.analysis.learner_bench import _cpu_name
    from hffm_opt.analysis.memory import children_usage
    from hffm_opt.learners.workers import ForkedWorkers, fork_available

    if not fork_available():
        pytest.skip("this system cannot fork worker processes")
    before_s, before_mb = children_usage()  # other children of the test process, if any

    def spin(seconds):
        end = time.process_time() + seconds
        while time.process_time() < end:
            pass
        return bytearray(50 * 2**20)[:1]  # 50 MiB touched

    with ForkedWorkers(spin, 2) as workers:
        workers.map([0.3, 0.3])
        cpu_s, peak_mb = children_usage()
    assert cpu_s >= before_s + 0.5 and peak_mb >= before_mb + 2 * 50
    assert children_usage()[1] <= peak_mb - 2 * 50  # ended workers are no longer counted
    assert "cores" in _cpu_name()
