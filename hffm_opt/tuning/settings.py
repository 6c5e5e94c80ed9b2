"""The tuning settings: the TOML file's sections merged over :data:`DEFAULTS`, validated, and the search space.

A study searches the scheduler among ``search.schedulers``, ``e_agg``, the round deadline as a factor of the plan's
latency per edge round without a deadline (a factor >= 1 drops nobody), the local learning rate, the local steps tau,
and each option of ``search.options`` (e.g. objective weights ``w_T``/``w_E``/``w_U``) that the chosen scheduler
takes as a keyword (an option of :data:`OPTION_REQUIRES` only when the option it needs has the value it needs: ``w_U``
with ``coverage = "cluster"``). By default ``optimal`` is searched with its coverage, ``w_U`` and edge tiers.
``budget`` bounds a trial's training (simulated seconds ``time_s`` and/or joules ``energy_j``, at most
``max_rounds`` edge rounds), ``score.validation_rows`` the seeded subset of the validation split that scores it
(its served accuracy; the global test set is never seen by a study). ``defaults`` is the default configuration, the
first trial of every new study. Every error names the field as the file writes it (``[search].e_agg``), the value
and the rule it breaks (:class:`TuneConfigError`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import numpy as np
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from .._cores import at_most_cores
from ..errors import ConfigError, ScenarioError
from ..formulations.joint import check_full_options
from ..network.documents import as_number, first_repeat, hint, keyword_types, read_document
from ..network.io import load_scenario
from ..network.limits import MAX_E_AGG, MAX_LOCAL_STEPS, MAX_ROUNDS
from ..schedulers import SchedulerError, get_scheduler, scheduler_options

OBJECTIVES = ("accuracy", "pareto")
CORE = ("scheduler", "e_agg", "deadline_factor", "lr", "local_steps")
PRUNERS = ("median", "halving", "none")
SEED_MAX = 2**32 - 1  # the samplers' seed (numpy's RandomState takes no more)
MAX_HEARTBEAT_S = 86_400  # s: a heartbeat or grace period of at most one day

DEFAULTS: dict = {
    "setup": {"benchmark": "easy_vqa", "scenario": "paper"},  # hffm_opt.learners.setup.learning_setup keywords
    "train": {"personalised": False},  # TrainConfig fields but rounds, lr, local_steps, eval_every
    "budget": {"time_s": 120.0, "max_rounds": 16},  # the priced foundation model: about 5-15 s per edge round
    "score": {"validation_rows": 1000},  # seeded subset of the validation split scoring every trial (0 = all of it)
    "search": {"schedulers": ["hierarchical", "hierarchical-d2d", "greedy", "edge-only", "optimal"], "e_agg": [1, 8],
               "deadline_factor": [0.5, 1.2], "lr": [3e-4, 3e-2], "local_steps": [1, 3],
               # the optimiser's coverage, value of training (J per unit of utility) and edge tiers
               "options": {"coverage": {"choices": ["full", "cluster"]}, "w_U": [1.0, 1000.0],
                           "edge_tiers": {"choices": [False, True]}}},
    "defaults": {"scheduler": "hierarchical", "e_agg": 2, "deadline_factor": 1.2, "lr": 3e-3, "local_steps": 1},
    "study": {"seed": 0, "pruner": "median", "pruner_startup": 3, "tpe_startup": 4, "heartbeat_s": 5, "grace_s": 30,
              "torch_threads": 1},
}

TuneConfigError = ConfigError  # a bad tuning configuration

#: options searched only when another option has a given value (the scheduler refuses them otherwise)
OPTION_REQUIRES = {"w_U": ("coverage", "cluster")}


def option_applies(name: str, choice: dict) -> bool:
    """Whether option ``name`` is searched given the other choices (:data:`OPTION_REQUIRES`)."""
    other, value = OPTION_REQUIRES.get(name, (None, None))
    return other is None or choice.get(other) == value


def reject(name: str, value, rule: str) -> NoReturn:
    """Raise :class:`TuneConfigError` naming the field ``name``, its value and the rule it breaks."""
    raise TuneConfigError(f"{name} = {value!r}: {rule}")


@dataclass(frozen=True)
class TuneSettings:
    """A validated tuning configuration (the TOML file's sections, see :data:`DEFAULTS`).

    ``space`` maps every searched parameter to its Optuna distribution (``options`` included); ``defaults`` is the
    default configuration, enqueued as the study's first trial; ``text`` is the canonical JSON of the settings.
    """

    setup: dict
    train: dict
    budget: dict
    score: dict
    space: dict
    options: tuple[str, ...]
    defaults: dict
    study: dict
    text: str = field(repr=False)

    @property
    def digest(self) -> str:
        """Short hash of the settings (a study is only resumed with the settings it was created with)."""
        return hashlib.sha1(self.text.encode()).hexdigest()[:12]


def load_settings(path=None) -> TuneSettings:
    """The settings of the TOML file ``path`` merged over :data:`DEFAULTS` (None = the defaults)."""
    doc: dict = {}
    if path is not None:
        doc = read_document(Path(path), "--config", TuneConfigError)
    return settings_from_dict(doc)


def settings_from_dict(doc: dict) -> TuneSettings:
    """Validate ``doc`` (sections of :data:`DEFAULTS`, each merged over its default) into :class:`TuneSettings`."""
    unknown = sorted(set(doc) - set(DEFAULTS))
    if unknown:
        reject("config section", unknown[0], f"unknown{hint(unknown[0], DEFAULTS)}; sections are {sorted(DEFAULTS)}")
    for section, table in doc.items():
        if not isinstance(table, dict):
            reject(f"[{section}]", table, "must be a table ([section] with key = value lines)")
    merged = {k: dict(v) | doc.get(k, {}) for k, v in DEFAULTS.items()}
    if "defaults" in doc:  # the default configuration is given whole, not merged
        merged["defaults"] = dict(doc["defaults"])
    _check_setup(merged["setup"])
    _check_train(merged["train"])
    _check_budget(merged["budget"])
    _check_keys("score", merged["score"], set(DEFAULTS["score"]))
    rows = merged["score"]["validation_rows"]
    if isinstance(rows, bool) or not (isinstance(rows, int) and rows >= 0):
        reject("[score].validation_rows", rows, "must be an integer >= 0 (0 = the whole validation split)")
    _check_study(merged["study"])
    space, options = _space(merged["search"])
    defaults = merged["defaults"]
    _check_defaults(defaults, space, options)
    text = json.dumps(merged, sort_keys=True)
    return TuneSettings(merged["setup"], merged["train"], merged["budget"], merged["score"], space, options, defaults,
                        merged["study"], text)


def in_section(section: str, exc: Exception) -> str:
    """The one-line message of ``exc`` (a check of a ``[section]`` value, e.g. ``benchmark = 'x': ...``) with the
    field it names put in its section (``[setup].benchmark = 'x': ...``)."""
    text = " ".join(str(exc).split())
    return f"[{section}].{text}" if re.match(r"\w+ = ", text) else f"[{section}]: {text}"


def _check_setup(setup: dict) -> None:
    """The learning setup's keywords, their types, the scenario file, the layout and the validation split (what
    only building the setup can check is checked before a study is created, :func:`~.objective.make_objective`)."""
    _check_keys("setup", setup, _keywords(_learning_setup()))
    _check_types("setup", setup, _learning_setup())
    scenario = setup.get("scenario", "paper")
    if scenario not in ("paper", "clustered"):  # a scenario file is read now, not after the first trial's setup
        try:
            load_scenario(scenario)
        except ScenarioError as exc:
            raise TuneConfigError(in_section("setup", exc)) from None
    for key in ("n_edges", "devices_per_edge"):
        if scenario != "clustered" and key in setup:
            reject(f"[setup].{key}", setup[key], f"applies to [setup].scenario = 'clustered' only (the scenario "
                                                 f"{scenario!r} has its own network)")
    fraction = setup.get("validation_fraction", inspect.signature(_learning_setup()).parameters["validation_fraction"]
                         .default)
    if not 0 < fraction < 1:
        reject("[setup].validation_fraction", fraction, "must be in (0, 1) (trials are scored on the validation "
                                                        "split)")


def _check_train(train: dict) -> None:
    """TrainConfig fields but those a trial sets; an availability somebody has and a trace file that reads."""
    from ..learners.participation import read_trace

    _check_keys("train", train, {f.name for f in dataclasses.fields(_train_config())} - {"rounds", "lr", "local_steps",
                                                                                            "eval_every"})
    _check_types("train", train, _train_config())
    try:
        config = _train_config()(**train)
        if config.availability_trace is not None:
            read_trace(config.availability_trace, None)  # device indices are checked once the network is built
    except ValueError as exc:
        raise TuneConfigError(in_section("train", exc)) from None
    if max(np.atleast_1d(config.availability)) <= 0:
        reject("[train].availability", train["availability"], "must be in (0, 1] for some device (0: no device is "
                                                              "ever available, nothing would be trained)")


def _check_budget(budget: dict) -> None:
    _check_keys("budget", budget, {"time_s", "energy_j", "max_rounds"})
    if budget.get("time_s") is None and budget.get("energy_j") is None:
        reject("[budget]", budget, "needs time_s (simulated s) or energy_j (J)")
    for key in ("time_s", "energy_j"):
        if budget.get(key) is not None and not as_number(budget[key], f"[budget].{key}", TuneConfigError) > 0:
            reject(f"[budget].{key}", budget[key], "must be a number > 0")
    as_number(budget["max_rounds"], "[budget].max_rounds", TuneConfigError, integer=True, low=1, high=MAX_ROUNDS)


def _check_study(study: dict) -> None:
    _check_keys("study", study, set(DEFAULTS["study"]))
    if study["pruner"] not in PRUNERS:
        reject("[study].pruner", study["pruner"], f"must be one of {PRUNERS}")
    for key, low, high in (("seed", 0, SEED_MAX), ("pruner_startup", 0, None), ("tpe_startup", 0, None),
                           ("heartbeat_s", 1, MAX_HEARTBEAT_S), ("grace_s", 1, MAX_HEARTBEAT_S),
                           ("torch_threads", 1, None)):
        value = study[key]
        if isinstance(value, bool) or not (isinstance(value, int) and value >= low and (high is None or value <= high)):
            reject(f"[study].{key}", value, f"must be an integer in [{low}, {high}]" if high else
                   f"must be an integer >= {low}")
    if study["grace_s"] <= study["heartbeat_s"]:
        reject("[study].grace_s", study["grace_s"], f"must exceed [study].heartbeat_s = {study['heartbeat_s']}")
    at_most_cores("[study].torch_threads", study["torch_threads"], "each torch thread of a trial computes on one core")


def _learning_setup():
    from ..learners.setup import learning_setup

    return learning_setup


def _train_config():
    from ..learners.trainer import TrainConfig

    return TrainConfig


def _keywords(fn) -> set[str]:
    return {p.name for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def _check_keys(section: str, table: dict, known: set[str]) -> None:
    extra = sorted(set(table) - known)
    if extra:
        reject(f"[{section}].{extra[0]}", table[extra[0]],
               f"unknown key{hint(extra[0], known)}; known: {sorted(known)}")


def _check_types(section: str, table: dict, target) -> None:
    """Each value of ``table`` of the type its keyword (or field) of ``target`` is annotated with."""
    checks, _ = keyword_types(target)
    for key, value in table.items():
        if key in checks:
            checks[key](value, f"[{section}].{key}", TuneConfigError)


def _range(name: str, value, kind: type, log: bool | None, high: int | None = None):
    """An Optuna distribution for the TOML range ``[low, high]`` (``log=None``: log scale when low > 0; integers at
    most ``high`` when given)."""
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                                and math.isfinite(v) for v in value)
            and value[0] <= value[1]):
        reject(name, value, "must be a range [low, high] of numbers with low <= high")
    if kind is int:
        if not all(float(v).is_integer() and v >= 1 for v in value):
            reject(name, value, "must be integers >= 1")
        if high is not None and value[1] > high:
            reject(name, value, f"must be integers in [1, {high:,}]")
        return IntDistribution(int(value[0]), int(value[1]))
    if log and value[0] <= 0:
        reject(name, value, "a log-scaled range needs low > 0")
    return FloatDistribution(float(value[0]), float(value[1]), log=value[0] > 0 if log is None else log)


def _option_range(name: str, value, schedulers: list[str]):
    """The distribution of the numeric scheduler option ``name`` (integer where the schedulers' default is one); both
    ends must be values full F4 accepts (checked by :func:`~hffm_opt.formulations.joint.check_full_options`)."""
    defaults = [scheduler_options(n)[name] for n in schedulers if takes_option(n, name)]
    kind = int if all(isinstance(d, int) and not isinstance(d, bool) for d in defaults) else float
    dist = _range(f"[search].options.{name}", value, kind, None)
    _check_option_values(name, value, (dist.low, dist.high), "every value in the range")
    return dist


def _option_choices(name: str, value: dict) -> CategoricalDistribution:
    """The distribution of a scheduler option searched over ``value["choices"]``: each choice once, each valid."""
    choices = value["choices"]
    if first_repeat(choices) is not None:
        reject(f"[search].options.{name}", value, "each choice once (a repeated one would be sampled more often)")
    _check_option_values(name, value, choices, "every choice")
    return CategoricalDistribution(tuple(choices))


def _check_option_values(name: str, value, values, which: str) -> None:
    """Reject ``value`` (the option's search entry) unless full F4 accepts each of ``values`` for option ``name``
    (:func:`~hffm_opt.formulations.joint.check_full_options`; an option it does not know is the scheduler's own)."""
    if name not in inspect.signature(check_full_options).parameters:
        return
    context = {"coverage": "cluster"} if name == "w_U" else {}  # w_U is searched with coverage 'cluster' only
    for v in values:
        try:
            check_full_options(**context, **{name: v})
        except ConfigError as exc:
            reject(f"[search].options.{name}", value, f"{which} must be valid ({exc})")


def _space(search: dict) -> tuple[dict, tuple[str, ...]]:
    _check_keys("search", search, set(DEFAULTS["search"]))
    names = search["schedulers"]
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        reject("[search].schedulers", names, "must be a non-empty list of scheduler names")
    for n in names:
        get_scheduler(n)  # SchedulerError names an unknown scheduler
    twice = first_repeat(names)
    if twice is not None:
        reject("[search].schedulers", names, f"{twice!r} is given twice (each once: a repeated one would be sampled "
                                            "more often)")
    space = {"scheduler": CategoricalDistribution(tuple(names)),
             "e_agg": _range("[search].e_agg", search["e_agg"], int, False, MAX_E_AGG),
             "deadline_factor": _range("[search].deadline_factor", search["deadline_factor"], float, False),
             "lr": _range("[search].lr", search["lr"], float, True),
             "local_steps": _range("[search].local_steps", search["local_steps"], int, False, MAX_LOCAL_STEPS)}
    if space["deadline_factor"].low <= 0:
        reject("[search].deadline_factor", search["deadline_factor"], "must be > 0")
    if not isinstance(search["options"], dict):
        reject("[search].options", search["options"], "must be a table of option = [low, high] or {choices = [...]}")
    for name, value in search["options"].items():
        if name in CORE + ("seed", "deadline_s"):
            reject(f"[search].options.{name}", value, "is set by the tuner, not a scheduler option")
        if not any(takes_option(n, name) for n in names):
            reject(f"[search].options.{name}", value, f"no scheduler of {names} takes this keyword")
        if isinstance(value, dict) and set(value) == {"choices"} and isinstance(value["choices"], list) \
                and value["choices"]:
            space[name] = _option_choices(name, value)
        else:
            space[name] = _option_range(name, value, names)
    for name, (other, value) in OPTION_REQUIRES.items():
        if name in space and not (other in space and isinstance(space[other], CategoricalDistribution)
                                  and value in space[other].choices):
            reject(f"[search].options.{name}", search["options"][name],
                   f"needs [search].options.{other} with the choice {value!r} (the scheduler takes {name} only then)")
    return space, tuple(sorted(search["options"], key=lambda n: n in OPTION_REQUIRES))


def _contains(dist, value) -> bool:
    if isinstance(dist, CategoricalDistribution):
        return value in dist.choices
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(dist, IntDistribution) and not float(value).is_integer():
        return False
    return dist.low <= value <= dist.high


def _check_defaults(defaults: dict, space: dict, options: tuple[str, ...]) -> None:
    for name in CORE:
        if name not in defaults:
            reject(f"[defaults].{name}", None, "missing (the default configuration sets every core parameter)")
    for name, value in defaults.items():
        if name not in space:
            reject(f"[defaults].{name}", value, f"not a searched parameter; searched: {sorted(space)}")
        if not _contains(space[name], value):
            reject(f"[defaults].{name}", value, f"must lie in the search space {space[name]}")
    sched = defaults["scheduler"]
    wanted = set(CORE) | {o for o in options if takes_option(sched, o) and option_applies(o, defaults)}
    for name in sorted(wanted ^ set(defaults)):
        rule = "missing: the default scheduler takes it" if name in wanted else "the default scheduler does not take it"
        reject(f"[defaults].{name}", defaults.get(name), f"{rule} (scheduler {sched!r})")


def takes_option(scheduler: str, option: str) -> bool:
    """Whether the scheduler ``scheduler`` declares ``option`` (the registry's record of its keyword options)."""
    try:
        return option in scheduler_options(scheduler)
    except SchedulerError:
        return False
