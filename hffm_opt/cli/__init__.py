"""The ``hffm-opt`` command line: one module per command group (:mod:`.plans`, :mod:`.learn`, :mod:`.tune`), the
flag rules (:mod:`.args`) and one error boundary, :func:`main`.

Exit codes: 0 success; 1 the solver found no feasible plan (``optimize``), or an internal error (a bug: its
traceback is shown after a line saying so); 2 bad input: a bad flag value, a bad scenario, plan, config or
checkpoint, an output that cannot be written, a file-system error, or an interrupt (Ctrl-C: the line
``hffm-opt CMD: interrupted``). Every error of kind 2 is one line on stderr naming the input, the field, the value
and the rule; stdout stays empty. A closed stdout (``hffm-opt ... | head``) ends the command quietly, with 0.
"""

from __future__ import annotations

import importlib
import os
import select
import signal
import sys
import threading
import traceback

from ..errors import HffmError
from . import args as flag_rules

EXIT_OK, EXIT_INFEASIBLE, EXIT_BUG, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 1, 2, 2
COMMAND_MODULES = ("plans", "tune", "learn", "plot", "pareto")
_CTRL_C = threading.Event()  # set by a Ctrl-C during main


def __getattr__(name: str):
    """``hffm_opt.cli.plans`` and the other command modules, loaded on first use: :func:`main` loads them (the
    solver stack with them, a second or so) inside its error boundary, where a Ctrl-C is an interrupt like any
    other."""
    if name in COMMAND_MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_parser() -> flag_rules.Parser:
    """The parser of every ``hffm-opt`` command (each flag with its rule, see :mod:`.args`)."""
    from . import learn, pareto, plans, plot, tune

    parser = flag_rules.Parser(prog="hffm-opt", description="Plan and compare hierarchical federated "
                               "foundation-model training over wireless fog/edge networks.")
    sub = parser.add_subparsers(dest="command", required=True)
    plans.add_commands(sub)
    tune.add_commands(sub)
    learn.add_commands(sub)
    plot.add_commands(sub)
    pareto.add_commands(sub)
    for name, command in sub.choices.items():
        flag_rules.apply_rules(name, command)
    return parser


def _os_message(exc: OSError) -> str:
    """One line for a file-system error: the file and the reason."""
    if exc.filename is not None:
        return f"file {str(exc.filename)!r}: {exc.strerror or type(exc).__name__}"
    return f"{type(exc).__name__}: {exc.strerror or exc}"


def _one_line(text: str) -> str:
    return " ".join(str(text).split()) or "(no message)"


def _close_progress_bars() -> None:
    """Close the progress bars still shown (they clear their line), so that a last message starts a line of its
    own."""
    tqdm = sys.modules.get("tqdm")
    if tqdm is not None:
        for bar in list(getattr(tqdm.tqdm, "_instances", ())):
            bar.close()


def _say(line: str) -> None:
    """``line`` on stderr, on a line of its own."""
    _close_progress_bars()
    print(line, file=sys.stderr)


def _stdout_gone() -> bool:
    """Whether stdout is a pipe (or socket) whose reader has gone, e.g. ``hffm-opt ... | head``."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), or a stdout without a file (captured)
        return False


def _silence_stdout() -> None:
    """Point stdout at the null device, so that the interpreter's last flush of its gone pipe cannot fail."""
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, sys.stdout.fileno())
    os.close(null)


def _interrupt(signum, frame) -> None:
    """SIGINT during a command: a KeyboardInterrupt, once. The clean-up that follows (stopping worker processes) and
    the interpreter's exit ignore a later one: a terminal's Ctrl-C reaches every process of the group, and e.g.
    ``timeout`` passes it on once more."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _CTRL_C.set()
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code (see the module docstring). After a Ctrl-C, SIGINT stays ignored."""
    handles_sigint = (threading.current_thread() is threading.main_thread()
                      and signal.getsignal(signal.SIGINT) is signal.default_int_handler)  # not where it is ignored
    _CTRL_C.clear()
    if handles_sigint:
        signal.signal(signal.SIGINT, _interrupt)
    try:
        return _run(sys.argv[1:] if argv is None else list(argv))
    finally:
        if handles_sigint and signal.getsignal(signal.SIGINT) is _interrupt:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def _run(words: list[str]) -> int:
    """Read the command line ``words`` and run its command, within the error boundary."""
    prog = f"hffm-opt {words[0]}" if words and not words[0].startswith("-") else "hffm-opt"
    try:
        args = build_parser().parse_args(words)  # the command modules load here: a Ctrl-C meanwhile is an interrupt
        code = args.func(args)
        if sys.stdout is not None:
            sys.stdout.flush()  # a gone reader is found here, not at the interpreter's exit
        return code
    except SystemExit as exc:  # --help (0), or a bad flag: argparse printed its one line
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return _interrupted(prog, words)
    except Exception as exc:  # noqa: BLE001 - sorted by _report
        # after a Ctrl-C, any error is its echo: e.g. an ImportError (a KeyboardInterrupt broke a native module's
        # initialization), or a worker's pipe closed under the call
        return _interrupted(prog, words) if _CTRL_C.is_set() else _report(exc, prog)


def _interrupted(prog: str, words: list[str]) -> int:
    """The interrupt's one line (none in a child of ``tune --workers``: its parent says it once)."""
    if "--worker-only" in words:
        _close_progress_bars()
    else:
        _say(f"{prog}: interrupted")
    return EXIT_INTERRUPTED


def _report(exc: Exception, prog: str) -> int:
    """The exit code of the error ``exc``, after its line (and, for a bug, its traceback) on stderr."""
    if isinstance(exc, BrokenPipeError) and _stdout_gone():  # its reader has had enough: not an error
        _silence_stdout()
        return EXIT_OK
    if isinstance(exc, HffmError):
        _say(f"{prog}: error: {_one_line(exc)}")
    elif isinstance(exc, OSError):
        _say(f"{prog}: error: {_one_line(_os_message(exc))}")
    elif isinstance(exc, MemoryError):
        _say(f"{prog}: error: out of memory: the instance is too large for this machine")
    else:  # anything else is a bug: say so and show where
        _say(f"{prog}: internal error (a bug, please report it):")
        traceback.print_exception(exc)
        return EXIT_BUG
    return EXIT_BAD_INPUT
