"""The package's errors: one base, :class:`HffmError`, and one class per kind of bad input.

Each message names the input, the field, the value and the rule it breaks. The command line turns any of them
into one line on stderr and exit code 2.
"""

from __future__ import annotations


class HffmError(Exception):
    """Base of every error the package raises for bad input or an unusable environment."""


class ScenarioError(HffmError, ValueError):
    """A scenario value breaks a rule."""


class PlanError(HffmError, ValueError):
    """A plan breaks a constraint."""


class SchedulerError(HffmError, ValueError):
    """An unknown, clashing or badly called scheduler."""


class ConfigError(HffmError, ValueError):
    """A bad configuration (tuning, experiment or command-line option)."""


class SolverUnavailable(HffmError, RuntimeError):
    """The requested solver backend cannot be imported or has no usable licence; the message says how to install it."""


class InstanceTooLarge(HffmError, RuntimeError):
    """The instance exceeds what the backend's licence (or the exact mode) may solve; the message gives the limit."""
