"""The ``hffm-opt`` command line: one module per command group (:mod:`.plans`, :mod:`.learn`, :mod:`.tune`), the
flag rules (:mod:`.args`) and one error boundary, :func:`main`.

Exit codes: 0 success; 1 the solver found no feasible plan (``optimize``), or an internal error (a bug: its
traceback is shown after a line saying so); 2 bad input: a bad flag value, a bad scenario, plan, config or
checkpoint, an output that cannot be written, a file-system error, or an interrupt (Ctrl-C: the line
``hffm-opt CMD: interrupted``). Every error of kind 2 is one line on stderr naming the input, the field, the value
and the rule; stdout stays empty.
"""

from __future__ import annotations

import sys
import traceback

from ..errors import HffmError
from . import args as flag_rules
from . import learn, pareto, plans, plot, tune

EXIT_OK, EXIT_INFEASIBLE, EXIT_BUG, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 1, 2, 2


def build_parser() -> flag_rules.Parser:
    """The parser of every ``hffm-opt`` command (each flag with its rule, see :mod:`.args`)."""
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


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code (see the module docstring)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0), or a bad flag: argparse printed its one line
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    prog = f"hffm-opt {args.command}"
    try:
        return args.func(args)
    except KeyboardInterrupt:
        _close_progress_bars()
        if not getattr(args, "worker_only", False):  # a child of `tune --workers`: its parent says it once
            print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except HffmError as exc:
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
    except OSError as exc:
        print(f"{prog}: error: {_one_line(_os_message(exc))}", file=sys.stderr)
    except MemoryError:
        print(f"{prog}: error: out of memory: the instance is too large for this machine", file=sys.stderr)
    except Exception:  # noqa: BLE001 - anything else is a bug: say so and show where
        print(f"{prog}: internal error (a bug, please report it):", file=sys.stderr)
        traceback.print_exc()
        return EXIT_BUG
    return EXIT_BAD_INPUT
