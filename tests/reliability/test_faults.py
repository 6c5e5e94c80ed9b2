"""One test per fault found by the bad-input hunt of the reliability issue: each is now exit code 2 with one line
on stderr naming the input, the field, the value and the rule (never a traceback, never a silent change of the
result, never a partial or stray file); an interrupt exits 2 with one line and a bug says it is one."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from fuzzing import run_cli, tiny_scenario

from hffm_opt import cli
from hffm_opt._io import dumps_json
from hffm_opt.network import generators
from hffm_opt.network.io import save_scenario
from hffm_opt.schedulers import schedule
from hffm_opt.tuning import mask_text, mask_url


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny scenario (JSON and TOML), a plan made for it, and a helper writing a mutated copy of either."""
    folder = tmp_path_factory.mktemp("faults")
    s = tiny_scenario()
    save_scenario(s, folder / "s.json")
    save_scenario(s, folder / "s.toml")
    schedule(s, "hierarchical", e_agg=2).save(folder / "plan.json")
    return folder


def _doc(files, name: str, change, base: str = "s.json") -> str:
    """Write ``change(copy of the document base)`` (or ``change`` itself when it is text) as ``name``."""
    path = files / name
    if isinstance(change, str):
        path.write_text(change)
    else:
        doc = copy.deepcopy(json.loads((files / base).read_text()))
        change(doc)
        path.write_text(json.dumps(doc))
    return str(path)


def _refused(argv, *parts):
    code, _, err = run_cli(argv)
    assert code == 2, err
    for part in parts:
        assert part in err, err
    return err


# ------------------------------------------------------------------------------------------- flags and outputs
@pytest.mark.parametrize("argv, part", [
    (["optimize", "--time-limit", "0"], "--time-limit = '0': must be a finite number in (0, 1e+07]"),
    (["train", "--rounds", "0"], "--rounds = '0': must be an integer in [1, 1,000,000]"),
    (["compare", "--seeds", "0"], "--seeds = '0': must be an integer in [1, 10,000]"),
    (["bench", "--sizes", "abc"], "--sizes = 'abc': item 'abc': must be an integer"),
    (["schedule", "--e-agg", "1000000000"], "--e-agg = '1000000000': must be an integer in [1, 10,000]"),
])
def test_bad_flag_values_that_used_to_end_in_a_traceback(argv, part):
    start = time.perf_counter()
    _refused(argv, part)
    assert time.perf_counter() - start < 5  # refused before any work


def test_out_naming_an_existing_folder_is_refused_and_leaves_no_stray_file(files, tmp_path):
    before = sorted(p.name for p in tmp_path.parent.iterdir())
    _refused(["schedule", "--scenario", str(files / "s.json"), "--out", str(tmp_path)], "is a folder")
    assert sorted(p.name for p in tmp_path.parent.iterdir()) == before and not list(tmp_path.iterdir())


@pytest.mark.parametrize("command, out, part", [
    ("schedule", "{tmp}/missing/plan.json", "does not exist (create it first)"),
    ("schedule", "/proc/plan.json", "cannot be written"),
    ("compare", "{tmp}/file.txt/runs", "is a file, so the folder cannot be created"),
    ("train", "/proc/train-run", "cannot be written"),
    ("plot", "{tmp}/map.txt", "must end in .png (the file written is a PNG file)"),
])
def test_out_that_cannot_be_written_is_refused_before_any_work(tmp_path, command, out, part):
    (tmp_path / "file.txt").write_text("x")
    start = time.perf_counter()
    _refused([command, "--out", out.format(tmp=tmp_path)], f"--out = '{out.format(tmp=tmp_path)}'", part)
    assert time.perf_counter() - start < 5  # train: refused before the (minutes long) setup and training
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_a_folder_out_is_checked_without_leaving_the_folder_behind(tmp_path):
    from hffm_opt.cli.args import check_out

    check_out(tmp_path / "a" / "b", "folder")
    assert not (tmp_path / "a").exists()


# ------------------------------------------------------------------------------------------- documents
def test_a_plan_file_that_is_a_json_list(files):
    _refused(["evaluate", "--scenario", str(files / "s.json"), "--plan", _doc(files, "list.json", "[1, 2]")],
             "plan = ", "the document is a list; it must be an object")


@pytest.mark.parametrize("name, change, part", [
    ("pos3", lambda d: d["devices"][0].update(position_m=[1.0, 2.0, 3.0]),
     "devices[id=0].position_m = [1.0, 2.0, 3.0]: must be a list of 2 items, not 3"),
    ("pmax_str", lambda d: d["devices"][1].update(pmax_w="1 W"), "devices[id=1].pmax_w = '1 W': must be a number"),
    ("pmax_true", lambda d: d["devices"][1].update(pmax_w=True), "devices[id=1].pmax_w = True: must be a number, "
                                                                  "not a boolean"),
    ("id_str", lambda d: d["devices"][2].update(id="d2"), "devices[2].id = 'd2': must be an integer"),
    ("edge_id_str", lambda d: d["edge_servers"][0].update(id="e0"), "edge_servers[0].id = 'e0': must be an integer"),
    ("unknown", lambda d: d["devices"][0].update(cpu_hzz=2e9),
     "devices[0].cpu_hzz = 2000000000.0: unknown key (did you mean 'cpu_hz'?); allowed: ["),
    ("version", lambda d: d.update(version=99), "version = 99: unknown version; this package reads version 1"),
    ("fraction", lambda d: d["devices"][0]["samples"].update(vqa=10.5),
     "devices[id=0].samples.vqa = 10.5: must be an integer (a count is never fractional)"),
    ("cpu_huge", lambda d: d["devices"][0].update(cpu_hz=1e308), "devices.cpu_hz[id=0] = 1e+308: must be in [1000, "
                                                                  "1e+12] Hz"),
    ("gain_huge", lambda d: d["d2d"]["links"][0].update(gain=5.0), "d2d.links.gain[id=0] = 5.0: must be in [1e-40, 1]"),
])
def test_scenario_json_faults(files, name, change, part):
    _refused(["schedule", "--scenario", _doc(files, f"{name}.json", change)], "scenario file '", part)


@pytest.mark.parametrize("name, edit, part", [
    ("range_typo", lambda t: t.replace("[d2d]\n", "[d2d]\nrang_m = 1.0\n"),
     "d2d.rang_m = 1.0: unknown key (did you mean 'range_m'?)"),
    ("aggregators_typo", lambda t: t.replace("[d2d_aggregators]", "[d2d_agregators]"),
     "d2d_agregators = {'0': 0, '1': 2}: unknown key (did you mean 'd2d_aggregators'?)"),
    ("version", lambda t: t.replace("version = 1\n", "version = 99\n"), "version = 99: unknown version"),
])
def test_scenario_toml_faults(files, name, edit, part):
    text = (files / "s.toml").read_text()
    assert edit(text) != text
    _refused(["schedule", "--scenario", _doc(files, f"{name}.toml", edit(text))], part)


@pytest.mark.parametrize("text, part", [
    ('[generator]\nname = "clustered"\nn_edges = 1\ndevices_per_edge = 2\nsed = 3\n',
     "generator.sed = 3: unknown key (did you mean 'seed'?)"),
    ('[generator]\nname = "clustered"\nn_edges = 1\ndevices_per_edge = 2\n[profil]\ncpu_hz = 2e9\n',
     "profil = {'cpu_hz': 2000000000.0}: unknown key (did you mean 'profile'?)"),
    ('[generator]\nname = "clustered"\nn_edges = 1000000\ndevices_per_edge = 100000\n',
     "size = 100,000,000,000 devices: at most 1,000,000 are supported"),
    ('[generator]\nname = "clustered"\nn_edges = 1.5\ndevices_per_edge = 2\n', "generator.n_edges = 1.5: must be an "
                                                                              "integer"),
])
def test_generator_config_faults(files, text, part):
    start = time.perf_counter()
    _refused(["schedule", "--scenario", _doc(files, "gen.toml", text)], part)
    assert time.perf_counter() - start < 5  # the 10^6 x 10^5 config is refused before anything is allocated


def test_a_hundred_thousand_nested_brackets(files):
    deep = "[" * 100_000 + "]" * 100_000
    _refused(["schedule", "--scenario", _doc(files, "deep.json", deep)], "nested deeper than 64 levels")
    _refused(["evaluate", "--scenario", str(files / "s.json"), "--plan", _doc(files, "deep_plan.json", deep)],
             "nested deeper than 64 levels")
    _refused(["compare", "--config", _doc(files, "deep.toml", "a = " + "[" * 100_000)], "config = ")


@pytest.mark.parametrize("change, part", [
    (lambda d: d.update(modee="star"), "modee = 'star': unknown key (did you mean 'mode'?)"),
    (lambda d: d.update(version=99), "version = 99: unknown version"),
    (lambda d: d.update(e_agg=2.5), "e_agg = 2.5: must be an integer"),
    (lambda d: d.update(association=[0.0, 0, 1, 1]), "association[0] = 0.0: must be an integer"),
    (lambda d: d.update(train=[[1] * 14] * 3 + [[1] * 13]), "train[3] = [1, 1, 1"),
])
def test_plan_file_faults(files, change, part):
    _refused(["evaluate", "--scenario", str(files / "s.json"), "--plan", _doc(files, "p.json", change, "plan.json")],
             "plan file '", part)


def test_a_plan_made_for_another_scenario_of_the_same_size_is_refused_with_both_names(files):
    other = generators.clustered(2, 2, seed=5, spacing_m=800.0, cluster_radius_m=250.0)
    save_scenario(other, files / "other.json")
    _refused(["evaluate", "--scenario", str(files / "other.json"), "--plan", str(files / "plan.json")],
             "the plan was made for scenario 'clustered-2x2-s0', not for scenario 'clustered-2x2-s5'")


def test_a_plan_made_for_another_version_of_its_scenario_is_refused_saying_so(files):
    data = json.loads((files / "s.json").read_text())
    data["devices"][0]["cpu_hz"] *= 2  # the same name, other contents
    (files / "s_changed.json").write_text(json.dumps(data))
    _refused(["evaluate", "--scenario", str(files / "s_changed.json"), "--plan", str(files / "plan.json")],
             "the plan was made for another version of scenario 'clustered-2x2-s0' (fingerprint ")


def test_a_plan_every_device_misses_the_deadline_of_is_refused_not_priced(files):
    path = _doc(files, "late.json", lambda d: d.update(deadline_s=1e-6), "plan.json")
    _refused(["evaluate", "--scenario", str(files / "s.json"), "--plan", path],
             "deadline_s = 1e-06: no training device meets it (all 4 miss it)")


def test_a_plan_with_a_rate_of_zero_is_refused_not_priced(files):
    path = _doc(files, "zero.json", lambda d: d.update(power_w=[5e-324] * 4), "plan.json")  # SNR underflows to 0
    _refused(["evaluate", "--scenario", str(files / "s.json"), "--plan", path], "its update never arrives")


def test_a_hand_made_plan_without_a_fingerprint_is_still_accepted(files):
    path = _doc(files, "hand.json", lambda d: d.update(scenario_name="", scenario_fingerprint=""), "plan.json")
    assert run_cli(["evaluate", "--scenario", str(files / "s.json"), "--plan", path])[0] == 0


def test_json_output_is_strict():
    assert dumps_json({"a": float("inf"), "b": [np.float64("nan"), np.int64(3)], "c": (1.5,)}) == \
        '{"a": null, "b": [null, 3], "c": [1.5]}'


def test_the_fingerprint_survives_a_round_trip_and_sees_any_change(files):
    from hffm_opt.network.io import load_scenario

    s = tiny_scenario()
    assert load_scenario(files / "s.json").fingerprint == load_scenario(files / "s.toml").fingerprint == s.fingerprint
    assert s.replace(name="renamed").fingerprint == s.fingerprint
    gains = s.devices.uplink_gain.copy()
    gains[0, 0] *= 1 + 1e-12
    devices = type(s.devices)(**{**s.devices.__dict__, "uplink_gain": gains})
    assert s.replace(devices=devices).fingerprint != s.fingerprint


# ------------------------------------------------------------------------------------------- storage, bugs, Ctrl-C
def test_storage_passwords_are_masked():
    url = "postgresql+psycopg2://ann:s3cr%40t@db.example:5432/hffm"
    assert mask_url(url) == "postgresql+psycopg2://ann:***@db.example:5432/hffm"
    text = f"could not connect to {url} as ann with password s3cr@t or s3cr%40t"
    assert "s3cr" not in mask_text(text, url) and "ann:***@db.example" in mask_text(text, url)


def test_a_database_error_never_echoes_the_password(tmp_path):
    url = "postgresql+psycopg2://user:SECRETPW@127.0.0.1:1/db"  # nothing listens on port 1
    err = _refused(["tune", "--study", "s", "--storage", url, "--trials", "1", "--out", str(tmp_path / "t")],
                   "--storage = 'postgresql+psycopg2://user:***@127.0.0.1:1/db'")
    assert "SECRETPW" not in err


def test_a_bug_says_it_is_one_and_shows_its_traceback(files, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cli.plans, "evaluate", broken)
    assert cli.main(["schedule", "--scenario", str(files / "s.json")]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("hffm-opt schedule: internal error (a bug, please report it):\nTraceback")
    assert "ZeroDivisionError: a bug" in captured.err


def test_ctrl_c_while_writing_exits_2_with_one_line_and_no_partial_file(files, monkeypatch, capsys, tmp_path):
    import hffm_opt._io

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(hffm_opt._io.os, "replace", interrupted)
    assert cli.main(["schedule", "--scenario", str(files / "s.json"), "--out", str(tmp_path / "plan.json")]) == 2
    assert capsys.readouterr().err == "hffm-opt schedule: interrupted\n"
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_under_a_progress_bar_says_interrupted_on_a_line_of_its_own(files, monkeypatch, capsys):
    from tqdm import tqdm

    def interrupted(*args, **kwargs):
        bar = tqdm(total=10, desc="cells", file=sys.stderr, leave=False)
        bar.update(3)
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.plans, "load_scenario", interrupted)
    assert cli.main(["schedule", "--scenario", str(files / "s.json")]) == 2
    err = capsys.readouterr().err
    last = err.replace("\r", "\n").splitlines()[-1]
    assert last == "hffm-opt schedule: interrupted" and "cells" in err  # the bar was shown, then cleared
    assert not list(getattr(tqdm, "_instances", ()))


def test_a_real_sigint_exits_2_with_one_line(tmp_path):
    # the default Ctrl-C handler, as in a terminal (a child of a background job inherits SIGINT ignored)
    script = ("import signal, sys, time\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
              "import hffm_opt.cli.plans as p\n"
              "def slow(*a, **k):\n    print('ready', file=sys.stderr, flush=True)\n    time.sleep(60)\n"
              "p.load_scenario = slow\nfrom hffm_opt.cli import main\nsys.exit(main(['schedule']))\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path)
    assert proc.stderr.readline() == "ready\n"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and out == "" and err == "hffm-opt schedule: interrupted\n"


def test_the_console_command_exits_2_with_one_line():
    proc = subprocess.run([sys.executable, "-m", "hffm_opt.cli", "schedule", "--e-agg", "0"], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == ["hffm-opt schedule: error: --e-agg = '0': must be an integer in [1, 10,000] "
                                        "(see hffm-opt schedule --help)"]


# ------------------------------------------------------------------------------------------- checkpoints
TINY = ["--benchmark", "synthetic", "--scenario", "clustered", "--n-edges", "2", "--devices-per-edge", "2",
        "--rounds", "2", "--local-steps", "1", "--batch-size", "8", "--eval-every", "0", "--json"]


@pytest.fixture
def trained(tmp_path_factory, monkeypatch):
    """A finished tiny ``train`` run with its checkpoint (the pre-trained model cached in a scratch folder)."""
    monkeypatch.setenv("HFFM_OPT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    out = tmp_path_factory.mktemp("train")
    assert run_cli(["train", *TINY, "--out", str(out)])[0] == 0
    return out


def test_a_corrupted_truncated_or_foreign_checkpoint_is_refused_and_restart_starts_afresh(trained, one_torch_thread):
    path = trained / "checkpoint" / "checkpoint.pt"
    good = path.read_bytes()
    for bad in (good[: len(good) // 2], b"not a checkpoint at all"):
        path.write_bytes(bad)
        _refused(["train", *TINY, "--out", str(trained)], f"the checkpoint '{path}' is unreadable",
                 "start afresh with hffm-opt train --restart")
        assert path.read_bytes() == bad  # never silently replaced
    assert run_cli(["train", *TINY, "--out", str(trained), "--restart"])[0] == 0
    _refused(["train", *TINY, "--lr", "0.02", "--out", str(trained)],
             f"the checkpoint '{path}' was written by a run with other inputs", "--restart")
