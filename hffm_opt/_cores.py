"""The CPU cores this process may use, and the rule that a process count or thread count asks for no more."""

from __future__ import annotations

import os

from .errors import ConfigError


def cpu_cores() -> int:
    """The CPU cores this process may use (its affinity where the OS tells it, else every core)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def more_than_cores(asked: int, why: str) -> str | None:
    """Why ``asked`` processes or threads are refused (more than :func:`cpu_cores`; ``why``: what each one needs a
    core for), else None."""
    cores = cpu_cores()
    return f"more than the {cores} cores this process may use ({why}; use at most {cores})" if asked > cores else None


def at_most_cores(flag: str, asked: int, why: str) -> int:
    """``asked`` (the processes or threads of the option ``flag``); ConfigError when :func:`more_than_cores`."""
    reason = more_than_cores(asked, why)
    if reason:
        raise ConfigError(f"{flag} = {asked}: {reason}")
    return asked
