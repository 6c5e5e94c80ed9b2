"""The package's errors: one base, :class:`HffmError`, and one class per kind of bad input.

Each message names the input, the field, the value and the rule it breaks. The command line turns any of them
into one line on stderr and exit code 2 (:func:`hffm_opt.cli.main`); anything else that escapes a command is a
bug and is reported as one.
"""

from __future__ import annotations


class HffmError(Exception):
    """Base of every error the package raises for bad input or an unusable environment."""


class ScenarioError(HffmError, ValueError):
    """A scenario value, a scenario document or a generator configuration breaks a rule."""


class PlanError(HffmError, ValueError):
    """A plan breaks a constraint, is malformed, was made for another scenario, or cannot be priced."""


class SchedulerError(HffmError, ValueError):
    """An unknown, clashing or badly called scheduler."""


class ConfigError(HffmError, ValueError):
    """A bad configuration (tuning, experiment or command-line option)."""


class CheckpointError(HffmError, ValueError):
    """A training checkpoint that cannot be resumed: unreadable, truncated, or written by a run with other inputs."""


class OutputError(HffmError, ValueError):
    """An output path that cannot be written (missing or read-only folder, a file where a folder is expected, ...)."""


class SolverError(HffmError, RuntimeError):
    """A solver backend cannot serve the request."""


class SolverUnavailable(SolverError):
    """The requested solver backend cannot be imported or has no usable licence; the message says how to install it."""


class InstanceTooLarge(SolverError):
    """The instance exceeds what the backend's licence (or the exact mode) may solve; the message gives the limit."""
