"""The command line's flag rules: argparse ``type=`` functions that refuse a bad value with the flag's rule, the
check of ``--out`` before any work (:func:`check_out`), and the parser whose errors are one line with exit code 2.

A flag of any command that is declared with a bare ``type=int``/``type=float`` or an ``--out`` without a type gets
its rule here by name (:data:`FLAG_RULES`, :data:`OUT_KINDS`, :func:`apply_rules`), so no number or output path of
any command reaches the library unchecked.
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import re
import sys
import tempfile
from pathlib import Path

from .._cores import more_than_cores
from ..errors import ConfigError, OutputError, ScenarioError
from ..network.documents import first_repeat
from ..network.limits import MAX_DEVICES, MAX_E_AGG, MAX_LOCAL_STEPS, MAX_ROUNDS

SEED_MAX = 2 ** 63 - 1


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose error is one line on stderr (``PROG: error: --flag = 'value': rule``), exit code 2.
    A flag must be spelled in full (no prefix of it: ``--seed`` is not ``--seeds``), and the namespace records the
    destinations of the flags given on the command line (``given``), so a config file never overrides one."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        message = " ".join(message.split())
        if message.startswith("argument "):
            flag, _, rest = message[len("argument "):].partition(": ")
            flag = flag.split("/")[-1]
            message = f"{flag} = {rest}" if rest.startswith("'") else f"{flag}: {rest}"
        elif message.startswith("unrecognized arguments: "):
            given = message.split(": ", 1)[1].split()[0].split("=")[0]
            close = difflib.get_close_matches(given, sorted(self._option_string_actions), n=1)
            message += f" (did you mean {close[0]}?)" if close else ""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):
        """As ArgumentParser's, but an unknown flag is reported by its command (``hffm-opt schedule: error: ...``)."""
        tokens = list(sys.argv[1:] if args is None else args)
        namespace, extras = self.parse_known_args(tokens, namespace)
        commands = next((a.choices for a in self._actions if isinstance(a, argparse._SubParsersAction)), {})
        command = commands.get(getattr(namespace, "command", None), self)
        if extras:
            command.error(f"unrecognized arguments: {' '.join(extras)}")
        flags = tokens[:tokens.index("--")] if "--" in tokens else tokens
        namespace.given = frozenset(a.dest for a in command._actions for option in a.option_strings
                                    if any(t == option or t.startswith(option + "=") for t in flags))
        _out_not_an_input(command, namespace)
        return namespace


INPUT_FLAGS = ("scenario", "plan", "config", "availability_trace")  # the flags that name files a command reads


def _out_not_an_input(parser: argparse.ArgumentParser, namespace: argparse.Namespace) -> None:
    """Refuse an ``--out`` file that is one of the command's input files (writing it would destroy the input)."""
    out = getattr(namespace, "out", None)
    if not out or not Path(out).is_file():
        return
    for dest in INPUT_FLAGS:
        value = getattr(namespace, dest, None)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and Path(item).is_file() and os.path.samefile(item, out):
                parser.error(f"--out = {out!r}: is the file --{dest.replace('_', '-')} reads; write the output "
                             "elsewhere")


_INTEGER = re.compile(r"[+-]?[0-9]+")  # ASCII digits only: no 2_0, no full-width digits, no exponent
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")  # a decimal number in ASCII


def _rule(function, name: str):
    function.__name__ = name  # argparse names the type in some messages
    return function


def count(low: int = 1, high: int | None = None):
    """An integer in ``[low, high]`` (a decimal integer: no fraction, no exponent, no boolean)."""

    def parse(text: str) -> int:
        rule = f"must be an integer in [{low:,}, {high:,}]" if high is not None else f"must be an integer >= {low:,}"
        if not _INTEGER.fullmatch(str(text).strip()):
            raise argparse.ArgumentTypeError(f"{text!r}: {rule}")
        value = int(str(text).strip(), 10)
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text!r}: {rule}")
        return value

    return _rule(parse, "count")


TRAINING_WORKER = "each worker trains on one core and holds the experiment's data"  # why run/tune --workers <= cores


def processes(why: str):
    """A count of local processes in ``[1, 256]`` and no more than the cores this process may use (``why``: what
    each one needs a core for; :func:`hffm_opt._cores.more_than_cores`)."""
    one = count(1, 256)

    def parse(text: str) -> int:
        value = one(text)
        reason = more_than_cores(value, why)
        if reason:
            raise argparse.ArgumentTypeError(f"{text!r}: {reason}")
        return value

    return _rule(parse, "count")


def real(low: float = 0.0, high: float = math.inf, open_low: bool = True):
    """A finite number in ``(low, high]`` (``[low, high]`` when not ``open_low``)."""

    def parse(text: str) -> float:
        rule = f"must be a finite number in {'(' if open_low else '['}{low:g}, {high:g}]"
        if not _NUMBER.fullmatch(str(text).strip()):
            raise argparse.ArgumentTypeError(f"{text!r}: {rule}")
        value = float(text)
        if not math.isfinite(value) or not (value > low if open_low else value >= low) or value > high:
            raise argparse.ArgumentTypeError(f"{text!r}: {rule}")
        return value

    return _rule(parse, "number")


def counts(low: int = 1, high: int | None = None):
    """A comma-separated list of integers in ``[low, high]``, e.g. ``2,8`` (as a tuple)."""
    one = count(low, high)

    def parse(text: str) -> tuple[int, ...]:
        parts = str(text).split(",")
        if not all(p.strip() for p in parts):
            raise argparse.ArgumentTypeError(f"{text!r}: must be a comma-separated list of integers, e.g. 2,8")
        try:
            values = tuple(one(p) for p in parts)
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(f"{text!r}: item {exc}") from None
        return _distinct(text, values)

    return _rule(parse, "list")


def _distinct(text: str, values: tuple) -> tuple:
    """``values`` when no item repeats; a repeated item would be computed (and counted in every statistic) twice."""
    twice = first_repeat(values)
    if twice is not None:
        raise argparse.ArgumentTypeError(f"{text!r}: {twice!r} is given twice (each item once)")
    return values


def scheduler_e_agg(args: argparse.Namespace, default: int) -> int:
    """``--e-agg`` of a command that runs one ``--scheduler`` (``default`` when not given). Refused for ``star``,
    which aggregates at the cloud every edge round (E_agg 1): the value would be ignored."""
    if args.e_agg is None:
        return default
    if args.scheduler == "star" and args.e_agg != 1:
        raise ConfigError(f"--e-agg = {args.e_agg}: the star scheduler aggregates at the cloud every edge round "
                          "(E_agg 1); leave --e-agg out")
    return args.e_agg


def cluster_address(text: str) -> str:
    """A Dask scheduler address ``tcp://HOST:PORT`` (or ``tls://``, ``inproc://``)."""
    match = re.fullmatch(r"(tcp|tls)://[^\s:/]+:(\d{1,5})|inproc://\S+", str(text).strip())
    if not match or (match.group(2) and not 1 <= int(match.group(2)) <= 65535):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a Dask scheduler address such as tcp://HOST:8786")
    return str(text).strip()


def add_sweep_flags(p: argparse.ArgumentParser) -> None:
    """``--workers N`` and ``--cluster ADDRESS`` of the commands that sweep independent cells."""
    p.add_argument("--workers", type=processes("each process computes its cells on one core"), default=1,
                   help="local processes that compute cells in parallel, at most the cores (default: %(default)s)")
    p.add_argument("--cluster", type=_rule(cluster_address, "address"),
                   help="compute the cells on the Dask scheduler at this address (tcp://HOST:8786) instead")


def names(choices=None):
    """A comma-separated list of non-empty names (each one of ``choices()`` when given), as a tuple."""

    def parse(text: str) -> tuple[str, ...]:
        parts = [p.strip() for p in str(text).split(",")]
        if not all(parts):
            raise argparse.ArgumentTypeError(f"{text!r}: must be a comma-separated list of names")
        known = choices() if choices is not None else None
        for p in parts:
            if known is not None and p not in known:
                close = difflib.get_close_matches(p, known, n=1)
                raise argparse.ArgumentTypeError(f"{text!r}: {p!r} is unknown" + (f" (did you mean {close[0]!r}?)"
                                                 if close else "") + f"; choose from {', '.join(known)}")
        return _distinct(text, tuple(parts))

    return _rule(parse, "list")


def seed(text: str) -> int:
    """A seed: an integer in [0, 2^63)."""
    return count(0, SEED_MAX)(text)


# ----------------------------------------------------------------------------------------------- outputs
def _probe(folder: Path) -> None:
    """Create and remove a temporary file in ``folder`` (the atomic writer's own first step there)."""
    fd, name = tempfile.mkstemp(dir=folder, prefix=".hffm-opt.", suffix=".probe")
    os.close(fd)
    os.unlink(name)


def check_out(path, kind: str) -> Path:
    """Check, before any work, that ``path`` can be written as a ``"file"`` (not an existing folder; its folder
    exists and is writable) or a ``"folder"`` (not an existing file; creatable and writable). Nothing is left
    behind (folders created for the check are removed again). Raises :class:`OutputError` naming the path and the
    rule."""
    text = str(path)
    if not text.strip():
        raise OutputError(f"{text!r}: must be a path")
    path = Path(text)
    try:
        if kind == "file":
            if text.endswith(("/", os.sep)) or path.is_dir():
                raise OutputError(f"{text!r}: is a folder; a file path is expected here")
            if path.is_symlink() or (path.exists() and not path.is_file()):
                what = "a symbolic link" if path.is_symlink() else "not a regular file (a device, pipe or socket)"
                raise OutputError(f"{text!r}: is {what}; the file is replaced as a whole, so give a regular file's "
                                  "path or a new one")
            parent = path.parent
            if not parent.is_dir():
                raise OutputError(f"{text!r}: its folder {str(parent)!r} does not exist (create it first)")
            _probe(parent)
            return path
        if path.exists() and not path.is_dir():
            raise OutputError(f"{text!r}: is an existing file; a folder is expected here")
        created = []
        probe = path
        while not probe.exists():
            created.append(probe)
            probe = probe.parent
        if not probe.is_dir():
            raise OutputError(f"{text!r}: {str(probe)!r} is a file, so the folder cannot be created")
        try:
            for folder in reversed(created):
                folder.mkdir()
            _probe(path)
        finally:
            for folder in created:
                if folder.is_dir():
                    folder.rmdir()
        return path
    except OSError as exc:
        raise OutputError(f"{text!r}: cannot be written ({exc.strerror or exc})") from None


def out_path(kind: str, suffix: str | None = None):
    """The ``type=`` of an ``--out`` that names a ``"file"`` or a ``"folder"`` (see :func:`check_out`), or either
    (``"auto"``: a file when the path has a suffix such as ``.png``); a file that must end in ``suffix`` (e.g.
    ``.png``: the bytes written are of that format) is refused otherwise."""

    def parse(text: str) -> str:
        if kind == "folder" and Path(text).suffix.lower() in FILE_SUFFIXES and not Path(text).exists():
            raise argparse.ArgumentTypeError(f"{text!r}: names a {Path(text).suffix} file, but this command writes a "
                                             "folder of files here (give a folder path)")
        if suffix is not None and Path(text).suffix.lower() != suffix:
            raise argparse.ArgumentTypeError(f"{text!r}: must end in {suffix} (the file written is a "
                                             f"{suffix[1:].upper()} file)")
        try:
            check_out(text, kind if kind != "auto" else "file" if Path(text).suffix else "folder")
        except ValueError as exc:  # OutputError, or a path the OS cannot take (a NUL byte)
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text

    return _rule(parse, f"{kind} path")


# ----------------------------------------------------------------------------------------------- by name
FLAG_RULES = {  # the rule of a number flag of any command, by its destination
    "rounds": count(1, MAX_ROUNDS), "e_agg": count(1, MAX_E_AGG), "seed": seed, "seeds": count(1, 10_000),
    "n_edges": count(1, MAX_DEVICES), "devices_per_edge": count(1, MAX_DEVICES),
    "local_steps": count(1, MAX_LOCAL_STEPS), "batch_size": count(1, 1_000_000), "eval_every": count(0, MAX_ROUNDS),
    "eval_rows": count(0, 100_000_000),
    "threads": count(1, 1024), "lr": real(0.0, 1e3), "target": real(0.0, 100.0), "trials": count(1, 1_000_000),
    "timeout": real(0.0, 1e9), "central_epochs": real(0.0, 1e3),
    "time_limit": real(0.0, 1e7), "target_latency": real(0.0, 1e9), "prox_mu": real(0.0, 1e6, open_low=False),
    "server_lr": real(0.0, 1e3), "availability": real(0.0, 1.0), "participation": real(0.0, 1.0),
    "validation_fraction": real(0.0, 0.9, open_low=False),
}
OUT_KINDS = {"schedule": "file", "optimize": "file", "compare": "folder", "train": "folder", "run": "folder",
             "tune": "folder", "plot": "file"}  # any other command: a file when the path has a suffix, else a folder
OUT_SUFFIXES = {"plot": ".png"}  # the commands whose --out file has one format
FILE_SUFFIXES = {".png", ".jpg", ".jpeg", ".svg", ".pdf", ".csv", ".json", ".txt", ".toml", ".db"}  # not a folder's


def scenario_spec(names: tuple[str, ...]):
    """A scenario flag read before any work: one of ``names``, or a scenario file that loads (its first error)."""

    def parse(text: str) -> str:
        if text not in names:
            from ..network.io import load_scenario

            if not Path(text).exists():
                close = difflib.get_close_matches(text.lower(), names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise argparse.ArgumentTypeError(f"{text!r}: neither one of {list(names)}{hint} nor an existing file")
            try:
                load_scenario(text)
            except ScenarioError as exc:
                raise argparse.ArgumentTypeError(str(exc)) from None
        return text

    return _rule(parse, "scenario")


LATE_SCENARIO = {"train": ("paper", "clustered"), "run": ("paper", "clustered")}  # read after minutes of setup


def apply_rules(command: str, parser: argparse.ArgumentParser) -> None:
    """Give every flag of ``command`` declared with a bare ``type=int``/``float`` its rule of :data:`FLAG_RULES` (a
    plain integer or finite number when it has none), an untyped ``--out`` its output check, and a ``--scenario``
    that the command would read only after its setup (:data:`LATE_SCENARIO`) a check at once."""
    for action in parser._actions:
        if action.type is int:
            action.type = FLAG_RULES.get(action.dest, count(-SEED_MAX, SEED_MAX))
        elif action.type is float:
            action.type = FLAG_RULES.get(action.dest, real(-math.inf, math.inf))
        elif action.dest == "out" and action.type is None:
            action.type = out_path(OUT_KINDS.get(command, "auto"), OUT_SUFFIXES.get(command))
        elif action.dest == "scenario" and action.type is None and command in LATE_SCENARIO:
            action.type = scenario_spec(LATE_SCENARIO[command])
