"""Schedulers turn a scenario into a plan: the registry (strict options), the paper's baselines, the heuristics
and the optimising schedulers, all registered on import."""

from ..errors import SchedulerError
from . import baselines, heuristics, optimising  # noqa: F401  (registers the built-in schedulers)
from .registry import ENTRY_POINT_GROUP, available, get_scheduler, register, schedule, scheduler_options

__all__ = ["ENTRY_POINT_GROUP", "SchedulerError", "available", "get_scheduler", "register", "schedule",
           "scheduler_options"]
