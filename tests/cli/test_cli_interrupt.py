"""A terminal's Ctrl-C reaches every process of the foreground group, the command's worker processes included: the
command ends with one line (``hffm-opt CMD: interrupted``), exit code 2, no traceback from any process. Also: an
error message after a progress bar starts a line of its own, and a closed stdout ends a command quietly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hffm_opt import cli
from hffm_opt.errors import ConfigError

# the default Ctrl-C handler, as in a terminal (a child of a background job inherits SIGINT ignored)
SCRIPT = ("import signal, sys\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
          "from hffm_opt.cli import main\nsys.exit(main(sys.argv[1:]))\n")

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc to find the worker processes")


def children(pid: int) -> list[int]:
    """The process ids of ``pid``'s children."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:  # the thread or the process has ended
            continue
    return found


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError):  # the process has ended
            continue
        if int(group) == pgid and state != "Z":
            found.append(int(stat.parent.name))
    return found


def stderr_lines(err: str) -> list[str]:
    """The lines of ``err`` as a terminal shows them: a progress bar's carriage-return segments dropped."""
    return [line.split("\r")[-1] for line in err.split("\n") if line.split("\r")[-1].strip()]


def ctrl_c_once_workers_run(args: list[str], cwd: Path, after_s: float) -> tuple[int, str, str, list[int]]:
    """Run ``hffm-opt ARGS`` in a process group of its own, and ``after_s`` seconds after it has two worker processes
    send SIGINT to the whole group, twice (an impatient user, or ``timeout`` passing it on); (exit code, stdout,
    stderr, the processes of the group still running 5 s after it exited)."""
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=cwd, start_new_session=True)  # bytes: text mode would turn each "\r" into a line
    try:
        deadline = time.monotonic() + 60
        while len(children(proc.pid)) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert proc.poll() is None and len(children(proc.pid)) >= 2, "the command never ran two worker processes"
        time.sleep(after_s)
        for _ in range(2):
            os.killpg(proc.pid, signal.SIGINT)
            time.sleep(0.3)
        out, err = proc.communicate(timeout=60)
        deadline = time.monotonic() + 5
        while group_members(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        return proc.returncode, out.decode(), err.decode(), group_members(proc.pid)
    finally:
        if group_members(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)  # nothing left behind, whatever failed


@pytest.mark.parametrize("after_s", [0.0, 1.0])  # as the workers start, and while they compute
def test_ctrl_c_stops_a_sweeps_spawned_workers_with_one_line(tmp_path, after_s):
    args = ["compare", "--seeds", "2", "--schedulers", "optimal,greedy", "--workers", "2", "--out", str(tmp_path / "o")]
    code, out, err, left = ctrl_c_once_workers_run(args, tmp_path, after_s)
    assert (code, out, left) == (2, "", []) and "Traceback" not in err, err
    assert stderr_lines(err) == ["hffm-opt compare: interrupted"], err


@pytest.mark.parametrize("after_s", [0.0, 1.0])
def test_ctrl_c_stops_f4s_forked_cluster_workers_with_one_line(tmp_path, after_s):
    code, out, err, left = ctrl_c_once_workers_run(["compare", "--seeds", "50", "--schedulers", "optimal,greedy"],
                                                   tmp_path, after_s)
    assert (code, out, left) == (2, "", []) and "Traceback" not in err, err
    assert stderr_lines(err) == ["hffm-opt compare: interrupted"], err


@pytest.mark.parametrize("error, first_line", [
    (ConfigError("--cluster = 'tcp://x:1': no Dask scheduler answers there"),
     "hffm-opt schedule: error: --cluster = 'tcp://x:1': no Dask scheduler answers there"),
    (ZeroDivisionError("a bug"), "hffm-opt schedule: internal error (a bug, please report it):"),
])
def test_an_error_under_a_progress_bar_starts_a_line_of_its_own(monkeypatch, capsys, error, first_line):
    from tqdm import tqdm

    def failing(*args, **kwargs):
        bar = tqdm(total=4, desc="cells", file=sys.stderr)  # still shown: this frame lives on in the traceback
        bar.update(1)
        raise error

    monkeypatch.setattr(cli.plans, "load_scenario", failing)
    cli.main(["schedule"])
    lines = capsys.readouterr().err.replace("\r", "\n").splitlines()
    assert first_line in lines, lines
    assert not list(getattr(tqdm, "_instances", ()))


def test_a_closed_stdout_ends_the_command_quietly(tmp_path):
    read, write = os.pipe()
    os.close(read)  # the reader has gone, as in `hffm-opt schedule | true`
    try:
        proc = subprocess.run([sys.executable, "-m", "hffm_opt.cli", "schedule"], stdout=write,
                              stderr=subprocess.PIPE, text=True, cwd=tmp_path, timeout=120)
    finally:
        os.close(write)
    assert (proc.returncode, proc.stderr) == (0, "")
