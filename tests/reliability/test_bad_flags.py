"""Every command with bad flag values: exit code 2, nothing on stdout, one line on stderr naming the flag, the value
and the rule; no number flag and no ``--out`` of any command goes unchecked."""

from __future__ import annotations

import argparse

import pytest
from fuzzing import run_cli

from hffm_opt import load_scenario
from hffm_opt.cli import build_parser
from hffm_opt.network.io import save_scenario


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    folder = tmp_path_factory.mktemp("flags")
    (folder / "file.txt").write_text("x")
    (folder / "link.json").symlink_to(folder / "file.txt")
    save_scenario(load_scenario("paper"), folder / "net.json")
    return {"{dir}": str(folder), "{file}": str(folder / "file.txt"), "{missing}": str(folder / "no" / "p.json"),
            "{under_file}": str(folder / "file.txt" / "out"), "{link}": str(folder / "link.json"),
            "{net}": str(folder / "net.json")}


CASES = [
    ("paper", ["--seed", "-1"], "--seed = '-1': must be an integer in [0,"),
    ("paper", ["--seed", "1.5"], "--seed = '1.5': must be an integer"),
    ("paper", ["--seed"], "--seed: expected one argument"),
    ("schedule", ["--e-agg", "0"], "--e-agg = '0': must be an integer in [1, 10,000]"),
    ("schedule", ["--e-agg", "1000000000"], "--e-agg = '1000000000': must be an integer in [1, 10,000]"),
    ("schedule", ["--e-agg", "2.5"], "--e-agg = '2.5': must be an integer"),
    ("schedule", ["--scheduler", "hierarchcal"], "--scheduler: invalid choice: 'hierarchcal'"),
    ("schedule", ["--out", "{dir}"], "is a folder; a file path is expected here"),
    ("schedule", ["--out", "{missing}"], "does not exist (create it first)"),
    ("schedule", ["--out", "/proc/plan.json"], "--out = '/proc/plan.json': cannot be written"),
    ("schedule", ["--e-agg", "2", "--sed", "3"], "unrecognized arguments: --sed 3 (did you mean --seed?)"),
    ("evaluate", [], "the following arguments are required: --plan"),
    ("optimize", ["--time-limit", "0"], "--time-limit = '0': must be a finite number in (0, 1e+07]"),
    ("optimize", ["--time-limit", "-1"], "--time-limit = '-1': must be a finite number"),
    ("optimize", ["--time-limit", "nan"], "--time-limit = 'nan': must be a finite number"),
    ("optimize", ["--time-limit", "inf"], "--time-limit = 'inf': must be a finite number"),
    ("optimize", ["--target-latency", "0"], "--target-latency = '0': must be a finite number in (0, 1e+09]"),
    ("optimize", ["--solver", "cplex"], "--solver: invalid choice: 'cplex'"),
    ("optimize", ["--objective", "cost"], "--objective: invalid choice: 'cost'"),
    ("optimize", ["--w-latency", "0"], "--w-latency = '0': must be a finite number in (0, 1e+12]"),
    ("optimize", ["--energy-budget", "nan"], "--energy-budget = 'nan': must be a finite number"),
    ("optimize", ["--w-u", "-1"], "--w-u = '-1': must be a finite number in [0, 1e+12]"),
    ("optimize", ["--coverage", "some"], "--coverage: invalid choice: 'some'"),
    ("optimize", ["--association", "best"], "--association: invalid choice: 'best'"),
    ("optimize", ["--energy-budget", "5"], "--energy-budget = 5.0: only with --objective latency"),
    ("optimize", ["--objective", "weighted", "--w-latency", "1"], "--w-energy: required with --objective weighted"),
    ("optimize", ["--objective", "latency", "--coverage", "cluster", "--w-u", "1"],
     "--w-u = 1.0: only with --objective energy"),
    ("optimize", ["--out", "{dir}"], "is a folder; a file path is expected here"),
    ("compare", ["--seeds", "0"], "--seeds = '0': must be an integer in [1, 10,000]"),
    ("compare", ["--e-agg", "2,,8"], "--e-agg = '2,,8': must be a comma-separated list of integers"),
    ("compare", ["--e-agg", "a"], "--e-agg = 'a': item 'a': must be an integer"),
    ("compare", ["--e-agg", "0"], "--e-agg = '0': item '0': must be an integer in [1, 10,000]"),
    ("compare", ["--schedulers", "greedy,optimall"], "'optimall' is unknown (did you mean 'optimal'?)"),
    ("compare", ["--schedulers", ""], "--schedulers = '': must be a comma-separated list of names"),
    ("compare", ["--out", "{file}"], "is an existing file; a folder is expected here"),
    ("compare", ["--out", "{under_file}"], "is a file, so the folder cannot be created"),
    ("compare", ["--schedulers", "hierarchical", "--reference", "greedy"], "--reference = 'greedy': must be one of"),
    ("compare", ["--config", "{missing}"], "config = '"),
    ("compare", ["--workers", "0"], "--workers = '0': must be an integer in [1, 256]"),
    ("compare", ["--cluster", "localhost:8786"], "--cluster = 'localhost:8786': must be a Dask scheduler address"),
    ("compare", ["--cluster", "tcp://h:99999"], "--cluster = 'tcp://h:99999': must be a Dask scheduler address"),
    ("bench", ["--schedulers", "gredy"], "'gredy' is unknown (did you mean 'greedy'?)"),
    ("bench", ["--workers", "x"], "--workers = 'x': must be an integer"),
    ("pareto", ["--workers", "0"], "--workers = '0': must be an integer in [1, 256]"),
    ("pareto", ["--cluster", "foo"], "--cluster = 'foo': must be a Dask scheduler address"),
    ("bench", ["--sizes", "abc"], "--sizes = 'abc': item 'abc': must be an integer in [1, 100,000]"),
    ("bench", ["--sizes", "40,0"], "--sizes = '40,0': item '0': must be an integer"),
    ("bench", ["--sizes", "1000000"], "--sizes = '1000000': item '1000000': must be an integer in [1, 100,000]"),
    ("train", ["--prox-mu", "-1"], "--prox-mu = '-1': must be a finite number in [0, 1e+06]"),
    ("train", ["--availability", "1.5"], "--availability = '1.5': must be a finite number in (0, 1]"),
    ("train", ["--participation", "0"], "--participation = '0': must be a finite number in (0, 1]"),
    ("train", ["--validation-fraction", "0.95"], "--validation-fraction = '0.95': must be a finite number in [0, 0.9]"),
    ("train", ["--edge-optimizer", "adam"], "--edge-optimizer: invalid choice: 'adam'"),
    ("bench", ["--learner", "--threads", "0"], "--threads = '0': must be an integer in [1, 1,024]"),
    ("run", ["--seeds", "0"], "--seeds = '0': must be an integer in [1, 10,000]"),
    ("run", ["--workers", "0"], "--workers = '0': must be an integer in [1, 256]"),
    ("run", ["--eval-rows", "-5"], "--eval-rows = '-5': must be an integer in [0, 100,000,000]"),
    ("train", ["--eval-rows", "1.5"], "--eval-rows = '1.5': must be an integer"),
    ("train", ["--rounds", "0"], "--rounds = '0': must be an integer in [1, 1,000,000]"),
    ("train", ["--lr", "nan"], "--lr = 'nan': must be a finite number in (0, 1000]"),
    ("train", ["--lr", "0"], "--lr = '0': must be a finite number"),
    ("train", ["--local-steps", "0"], "--local-steps = '0': must be an integer"),
    ("train", ["--batch-size", "-3"], "--batch-size = '-3': must be an integer"),
    ("train", ["--eval-every", "-1"], "--eval-every = '-1': must be an integer in [0,"),
    ("train", ["--threads", "0"], "--threads = '0': must be an integer in [1, 1,024]"),
    ("train", ["--n-edges", "0"], "--n-edges = '0': must be an integer"),
    ("train", ["--devices-per-edge", "x"], "--devices-per-edge = 'x': must be an integer"),
    ("train", ["--e-agg", "0"], "--e-agg = '0': must be an integer in [1, 10,000]"),
    ("train", ["--out", "{file}"], "is an existing file; a folder is expected here"),
    ("train", ["--out", "/proc/run"], "--out = '/proc/run': cannot be written"),
    ("run", ["--target", "101"], "--target = '101': must be a finite number in (0, 100]"),
    ("run", ["--target", "nan"], "--target = 'nan': must be a finite number"),
    ("run", ["--rounds", "-1"], "--rounds = '-1': must be an integer"),
    ("tune", ["--study", "s", "--trials", "0"], "--trials = '0': must be an integer in [1, 1,000,000]"),
    ("tune", ["--study", "s", "--workers", "0"], "--workers = '0': must be an integer in [1, 256]"),
    ("tune", ["--study", "s", "--timeout", "-5"], "--timeout = '-5': must be a finite number"),
    ("tune", ["--study", "a/b"], "--study = 'a/b': must be a non-empty printable name"),
    ("tune", ["--study", ""], "--study = '': must be a non-empty printable name"),
    ("tune", ["--study", "s", "--out", "{file}"], "is an existing file; a folder is expected here"),
    ("tune", ["--study", "s", "--objective", "speed"], "--objective: invalid choice: 'speed'"),
    # a repeated item would be computed, and counted in every mean and CI, twice
    ("compare", ["--schedulers", "star,greedy,star"], "--schedulers = 'star,greedy,star': 'star' is given twice"),
    ("compare", ["--e-agg", "2,8,2"], "--e-agg = '2,8,2': 2 is given twice (each item once)"),
    ("compare", ["--scenario", "paper", "--scenario", "paper"], "--scenario = 'paper': the same scenario as 'paper'"),
    ("bench", ["--learner", "--sizes", "40,40"], "--sizes = '40,40': 40 is given twice (each item once)"),
    ("pareto", ["--schedulers", "greedy,greedy"], "--schedulers = 'greedy,greedy': 'greedy' is given twice"),
    # a folder output named like a file (pareto --out front.png wrote a folder called front.png)
    ("pareto", ["--out", "{dir}/front.png"], "names a .png file, but this command writes a folder of files here"),
    ("train", ["--out", "{dir}/run.json"], "names a .json file, but this command writes a folder of files here"),
    # an option of the other kind of benchmark would be ignored
    ("bench", ["--threads", "2"], "--threads: an option of bench --learner only"),
    ("bench", ["--torch-device", "cuda"], "--torch-device: an option of bench --learner only"),
    ("bench", ["--learner", "--workers", "2"], "--workers: an option of the scheduler benchmarks, not of bench"),
    ("bench", ["--learner", "--workers", "1"], "--workers: an option of the scheduler benchmarks, not of bench"),
    ("bench", ["--learner", "--schedulers", "greedy"], "--schedulers: an option of the scheduler benchmarks"),
    # star aggregates at the cloud every edge round; a plan file is drawn as it is
    ("schedule", ["--scheduler", "star", "--e-agg", "3"], "--e-agg = 3: the star scheduler aggregates at the cloud"),
    ("train", ["--scheduler", "star", "--e-agg", "8"], "--e-agg = 8: the star scheduler aggregates at the cloud"),
    ("plot", ["--plan", "{file}", "--e-agg", "4", "--out", "/tmp/hffm-m.png"], "--e-agg: makes a plan when no"),
    # a prefix of a flag is not the flag (compare --seed ran --seeds); digits are ASCII decimal digits only
    ("compare", ["--seed", "2"], "unrecognized arguments: --seed 2"),
    ("schedule", ["--sched", "greedy"], "unrecognized arguments: --sched greedy (did you mean --scheduler?)"),
    ("schedule", ["--e-agg", "2_0"], "--e-agg = '2_0': must be an integer"),
    ("schedule", ["--e-agg", "\uff12"], "must be an integer in [1, 10,000]"),
    ("optimize", ["--target-latency", "1_0"], "--target-latency = '1_0': must be a finite number"),
    # an output replaces its path as a whole: never a device, a link or an input of the same command
    ("schedule", ["--out", "/dev/null"], "--out = '/dev/null': is not a regular file"),
    ("schedule", ["--out", "{link}"], "is a symbolic link"),
    ("schedule", ["--scenario", "{net}", "--out", "{net}"], "is the file --scenario reads"),
    # a flag the other options would ignore
    ("optimize", ["--exact", "--solver", "fast"], "--exact: the same as --solver exact, so it cannot go with"),
    ("optimize", ["--target-latency", "5", "--target-from", "greedy"], "--target-from = 'greedy': only without"),
    ("optimize", ["--objective", "latency", "--target-from", "greedy"], "--target-from = 'greedy': only with"),
    ("optimize", ["--solver", "fast", "--time-limit", "5"], "--time-limit = 5.0: only with --solver highs or"),
    ("optimize", ["--target-from", "gredy"], "--target-from: invalid choice: 'gredy'"),
    ("train", ["--server-lr", "0.5"], "--server-lr = 0.5: FedAvg at both tiers has no server learning rate"),
    ("train", ["--restart"], "--restart: discards the checkpoint in --out, so it needs --out"),
    ("pareto", ["--schedulers", "optimal"], "--schedulers = 'optimal': 'optimal' is unknown"),
    ("train", ["--scenario", "Clustered"], "neither one of ['paper', 'clustered'] (did you mean 'clustered'?)"),
    ("run", ["--seed", "9223372036854775807", "--seeds", "2"], "the last seed, 9223372036854775808, would exceed"),
]


@pytest.mark.parametrize("command, flags, message", CASES, ids=[f"{c} {' '.join(f)}" for c, f, _ in CASES])
def test_a_bad_flag_value_exits_2_with_one_line_naming_the_flag_and_the_rule(paths, command, flags, message):
    flags = [paths.get(f, f) for f in flags]
    message = next((message.replace(k, v) for k, v in paths.items() if k in message), message)
    code, _, err = run_cli([command, *flags])
    assert code == 2 and message in err, err


@pytest.mark.parametrize("command, flags", [("compare", []), ("pareto", []), ("bench", []), ("run", []),
                                            ("tune", ["--study", "s"])])
def test_more_local_processes_than_cores_are_refused(command, flags, monkeypatch):
    """`--workers 256` on 2 cores started 256 processes (about 180 MB each for the solver cells, the experiment's
    data for run and tune): more than the machine's memory. At most the cores, whatever the count of the machine."""
    from hffm_opt import _cores

    monkeypatch.setattr(_cores, "cpu_cores", lambda: 2)
    code, _, err = run_cli([command, *flags, "--workers", "3"])
    assert code == 2 and "--workers = '3': more than the 2 cores this process may use" in err, err
    assert "unrecognized arguments: --nosuch" in run_cli([command, *flags, "--workers", "2", "--nosuch"])[2]  # 2 is
    # accepted: the parse goes on to the unknown flag


def test_every_number_flag_and_every_out_of_every_command_has_a_rule():
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"paper", "schedule", "evaluate", "optimize", "compare", "bench", "train", "run", "tune"} <= set(commands)
    for name, command in commands.items():
        for action in command._actions:
            assert action.type not in (int, float), f"{name} {action.option_strings}: a bare {action.type.__name__}"
            if action.dest == "out":
                assert action.type is not None and "path" in action.type.__name__, name


def test_help_exits_0_and_a_missing_command_exits_2(capsys):
    from hffm_opt.cli import main

    assert main(["schedule", "--help"]) == 0 and "--e-agg" in capsys.readouterr().out
    assert main([]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "the following arguments are required: command" in err
