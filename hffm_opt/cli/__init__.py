"""The ``hffm-opt`` command line: one module per command group (:mod:`.plans`, :mod:`.learn`, :mod:`.tune`) and
one error boundary, :func:`main`: the package's errors (:class:`~hffm_opt.errors.HffmError`) and file-system
errors print one line on stderr and exit with code 2; Ctrl-C exits with 130."""

from __future__ import annotations

import argparse
import sys

from ..errors import HffmError
from . import learn, plans, tune


def build_parser() -> argparse.ArgumentParser:
    """The parser of every ``hffm-opt`` command."""
    parser = argparse.ArgumentParser(prog="hffm-opt", description="Plan and compare hierarchical federated "
                                     "foundation-model training over wireless fog/edge networks.")
    sub = parser.add_subparsers(dest="command", required=True)
    plans.add_commands(sub)
    tune.add_commands(sub)
    learn.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (HffmError, OSError) as exc:
        print(f"hffm-opt {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hffm-opt {args.command}: interrupted", file=sys.stderr)
        return 130
