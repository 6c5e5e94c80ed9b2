"""The scheduler registry: a scheduler maps a scenario to a plan; each declares its keyword options.

Register a scheduler with ``@register("name")`` or, from another distribution, an entry point in the group
``hffm_opt.schedulers`` pointing at a callable ``(scenario, *, e_agg, seed, <option>=<default>, ...) -> Plan``.
Options are read from the signature when the scheduler is registered; a scheduler that takes ``**kwargs`` is
refused, and :func:`schedule` refuses an option the scheduler does not declare (naming the accepted ones), so a
misspelt option never runs silently with its default. :func:`schedule` checks ``e_agg``, ``seed``, ``local_steps``
and ``batch_size`` before the scheduler runs and records on its plan the scenario it was made for
(:meth:`~hffm_opt.plan.Plan.for_scenario`). A scheduler plans for a training workload by declaring ``local_steps``
(tau, local steps per edge round) and ``batch_size`` (samples per step); every built-in one does, so its deadlines
and allocations hold for the compute time that training will take.
"""

from __future__ import annotations

import difflib
import inspect
from importlib.metadata import entry_points
from typing import Callable

from ..errors import SchedulerError
from ..network.documents import as_number
from ..network.limits import MAX_BATCH, MAX_E_AGG, MAX_LOCAL_STEPS
from ..network.scenario import Scenario
from ..plan import Plan

ENTRY_POINT_GROUP = "hffm_opt.schedulers"
Scheduler = Callable[..., Plan]

_REGISTRY: dict[str, Scheduler] = {}
_OPTIONS: dict[str, dict[str, object]] = {}


def declared_options(name: str, fn: Scheduler) -> dict[str, object]:
    """The keyword options of the scheduler ``fn`` (every parameter after the scenario) and their defaults."""
    params = list(inspect.signature(fn).parameters.values())
    for p in params:
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            raise SchedulerError(f"scheduler {name!r} takes {'**' if p.kind == p.VAR_KEYWORD else '*'}{p.name}: a "
                                 "scheduler must declare every keyword option explicitly")
    if not params:
        raise SchedulerError(f"scheduler {name!r} takes no arguments: it must take the scenario first")
    return {p.name: (None if p.default is p.empty else p.default) for p in params[1:]}


def register(name: str) -> Callable[[Scheduler], Scheduler]:
    """Decorator adding a scheduler to the registry under ``name`` (its options read from its signature)."""

    def deco(fn: Scheduler) -> Scheduler:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise SchedulerError(f"scheduler name = {name!r}: already registered")
        _OPTIONS[name] = declared_options(name, fn)
        _REGISTRY[name] = fn
        return fn

    return deco


_ENTRY_POINT_NAMES: dict = {}  # the names per lookup function: the installed-metadata scan takes ~15 ms


def available() -> list[str]:
    """Names of the built-in, registered and entry-point schedulers."""
    if entry_points not in _ENTRY_POINT_NAMES:
        _ENTRY_POINT_NAMES[entry_points] = {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(set(_REGISTRY) | _ENTRY_POINT_NAMES[entry_points])


def get_scheduler(name: str) -> Scheduler:
    """The scheduler registered as ``name`` (loading entry points on demand)."""
    if name not in _REGISTRY:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name == name:
                register(name)(ep.load())
                break
    if name not in _REGISTRY:
        hint = difflib.get_close_matches(str(name), available(), n=1)
        raise SchedulerError(f"scheduler = {name!r}: unknown" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                             + f"; available: {available()}")
    return _REGISTRY[name]


def scheduler_options(name: str) -> dict[str, object]:
    """The keyword options the scheduler ``name`` accepts, with their defaults."""
    get_scheduler(name)
    return dict(_OPTIONS[name])


def schedule(scenario: Scenario, name: str, **options) -> Plan:
    """Run the scheduler ``name`` on ``scenario``; an option it does not declare raises :class:`SchedulerError`.
    The plan records the scenario it was made for (name and fingerprint)."""
    fn = get_scheduler(name)
    accepted = _OPTIONS[name]
    for key in options:
        if key not in accepted:
            hint = difflib.get_close_matches(key, list(accepted), n=1)
            raise SchedulerError(f"scheduler {name!r} option {key} = {options[key]!r}: unknown option"
                                 + (f" (did you mean {hint[0]!r}?)" if hint else "")
                                 + f"; accepted: {sorted(accepted)}")
    for key, high in (("e_agg", MAX_E_AGG), ("local_steps", MAX_LOCAL_STEPS), ("batch_size", MAX_BATCH)):
        if key in options:
            as_number(options[key], f"scheduler {name!r} option {key}", SchedulerError, integer=True, low=1,
                      high=high)
    if options.get("seed") is not None:
        as_number(options["seed"], f"scheduler {name!r} option seed", SchedulerError, integer=True, low=0,
                  high=2 ** 63 - 1)
    plan = fn(scenario, **options)
    if not isinstance(plan, Plan):
        raise SchedulerError(f"scheduler {name!r} returned {type(plan).__name__}: a scheduler must return a Plan")
    return plan.for_scenario(scenario)
