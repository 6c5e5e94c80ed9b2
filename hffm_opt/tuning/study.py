"""Closing the loop with Optuna (section 6 of the design): plan, train the real model, score, search.

A trial samples the outer choices (:func:`suggest`): the scheduler among ``search.schedulers``, ``e_agg``, the
round deadline as a factor of the plan's latency per edge round without a deadline (a factor >= 1 drops nobody),
the local learning rate, the local steps tau, and each option of ``search.options`` (e.g. objective weights
``w_T``/``w_E``/``w_U``) that the chosen scheduler takes as a keyword. :func:`build_plan` turns them into a plan
checked by ``evaluate``; the trial trains under it (:func:`hffm_opt.learners.trainer.train`) for the edge rounds
that fit the budget (simulated seconds ``budget.time_s`` and/or joules ``budget.energy_j``, at most
``budget.max_rounds``) and returns the accuracy (percent, global test set) reached within the budget, or for the
Pareto study ``(accuracy, energy J spent within the budget)``; accuracy is measured on a seeded subset of
``score.test_rows`` rows of the global test set. Single-objective trials report their accuracy after
every edge round so a pruner can stop them early. A trial whose plan is infeasible, whose solver or training
fails, is told FAILED with the reason in the user attribute ``fail_reason``; the study goes on.

Many workers (processes, machines) share a study through any SQLAlchemy URL (SQLite by default). The count of
trials is exact: :func:`run_worker` claims a trial only under a mutex kept in the study's database
(:class:`StudyLock`) and only while finished + running trials < ``n_trials``; it returns when ``n_trials`` trials
are finished (complete, pruned or failed). A trial whose worker died (no heartbeat for ``study.grace_s``) is put
back to WAITING and re-run, keeping the parameters it had drawn, by the next worker that claims a trial, so it is
neither lost nor counted twice (optuna's own ``fail_stale_trials`` would finish it as FAIL, using up a slot); finished
trials are never touched. The first trial of a new study is the default configuration (``defaults``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
import os
import random
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
import sqlalchemy as sa
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from ..errors import ConfigError, PlanError
from ..evaluate import Metrics, evaluate
from ..network.scenario import Scenario
from ..plan import Plan
from ..schedulers import SchedulerError, get_scheduler, schedule, scheduler_options

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

OBJECTIVES = ("accuracy", "pareto")
CORE = ("scheduler", "e_agg", "deadline_factor", "lr", "local_steps")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
#: errors that fail one trial (infeasible plan, scheduler, solver, training) without stopping the study
TRIAL_ERRORS = (ValueError, RuntimeError, ArithmeticError)
PRUNERS = ("median", "halving", "none")
IMPORTANCE_MIN_TRIALS = 6  # complete trials before the parameter-importance plot means anything

DEFAULTS: dict = {
    "setup": {"benchmark": "easy_vqa", "scenario": "paper"},  # hffm_opt.learners.setup.learning_setup keywords
    "train": {"personalised": False},  # TrainConfig fields but rounds, lr, local_steps, eval_every
    "budget": {"time_s": 4.0, "max_rounds": 16},
    "score": {"test_rows": 1000},  # seeded subset of the global test set scoring every trial (0 = all of it)
    "search": {"schedulers": ["hierarchical", "hierarchical-d2d", "greedy", "edge-only"], "e_agg": [1, 8],
               "deadline_factor": [0.5, 1.2], "lr": [3e-4, 3e-2], "local_steps": [1, 3], "options": {}},
    "defaults": {"scheduler": "hierarchical", "e_agg": 2, "deadline_factor": 1.2, "lr": 3e-3, "local_steps": 1},
    "study": {"seed": 0, "pruner": "median", "pruner_startup": 3, "tpe_startup": 4, "heartbeat_s": 5, "grace_s": 30,
              "torch_threads": 1},
}


TuneConfigError = ConfigError  # a bad tuning configuration


class TrialFailed(RuntimeError):
    """A trial produced no usable score (e.g. no evaluation within the budget)."""


def _bad(name: str, value, rule: str):
    raise TuneConfigError(f"{name} = {value!r}: {rule}")


# --------------------------------------------------------------------------- settings
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
        try:
            doc = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            _bad("--config", str(path), "no such file")
        except tomllib.TOMLDecodeError as exc:
            _bad("--config", str(path), f"not valid TOML ({exc})")
    return settings_from_dict(doc)


def settings_from_dict(doc: dict) -> TuneSettings:
    """Validate ``doc`` (sections of :data:`DEFAULTS`, each merged over its default) into :class:`TuneSettings`."""
    unknown = sorted(set(doc) - set(DEFAULTS))
    if unknown:
        _bad("config section", unknown[0], f"unknown; sections are {sorted(DEFAULTS)}")
    for section, table in doc.items():
        if not isinstance(table, dict):
            _bad(section, table, "must be a table ([section] with key = value lines)")
    merged = {k: dict(v) | doc.get(k, {}) for k, v in DEFAULTS.items()}
    if "defaults" in doc:  # the default configuration is given whole, not merged
        merged["defaults"] = dict(doc["defaults"])
    _check_keys("setup", merged["setup"], _keywords(_learning_setup()))
    train_keys = {f.name for f in dataclasses.fields(_train_config())} - {"rounds", "lr", "local_steps", "eval_every"}
    _check_keys("train", merged["train"], train_keys)
    try:
        _train_config()(**merged["train"])
    except ValueError as exc:
        raise TuneConfigError(f"train.{exc}") from None
    budget = merged["budget"]
    _check_keys("budget", budget, {"time_s", "energy_j", "max_rounds"})
    if budget.get("time_s") is None and budget.get("energy_j") is None:
        _bad("budget", budget, "needs time_s (simulated s) or energy_j (J)")
    for key in ("time_s", "energy_j"):
        if budget.get(key) is not None and not (isinstance(budget[key], (int, float)) and budget[key] > 0):
            _bad(f"budget.{key}", budget[key], "must be a number > 0")
    if not (isinstance(budget["max_rounds"], int) and budget["max_rounds"] >= 1):
        _bad("budget.max_rounds", budget["max_rounds"], "must be an integer >= 1")
    _check_keys("score", merged["score"], set(DEFAULTS["score"]))
    rows = merged["score"]["test_rows"]
    if not (isinstance(rows, int) and rows >= 0):
        _bad("score.test_rows", rows, "must be an integer >= 0 (0 = the whole global test set)")
    study = merged["study"]
    _check_keys("study", study, set(DEFAULTS["study"]))
    if study["pruner"] not in PRUNERS:
        _bad("study.pruner", study["pruner"], f"must be one of {PRUNERS}")
    for key, low in (("seed", 0), ("pruner_startup", 0), ("tpe_startup", 0), ("heartbeat_s", 1), ("grace_s", 1),
                     ("torch_threads", 1)):
        if not (isinstance(study[key], int) and study[key] >= low):
            _bad(f"study.{key}", study[key], f"must be an integer >= {low}")
    if study["grace_s"] <= study["heartbeat_s"]:
        _bad("study.grace_s", study["grace_s"], f"must exceed study.heartbeat_s = {study['heartbeat_s']}")
    space, options = _space(merged["search"])
    defaults = merged["defaults"]
    _check_defaults(defaults, space, options)
    text = json.dumps(merged, sort_keys=True)
    return TuneSettings(merged["setup"], merged["train"], budget, merged["score"], space, options, defaults, study,
                        text)


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
        _bad(f"{section}.{extra[0]}", table[extra[0]], f"unknown key; known: {sorted(known)}")


def _range(name: str, value, kind: type, log: bool | None):
    """An Optuna distribution for the TOML range ``[low, high]`` (``log=None``: log scale when low > 0)."""
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value)
            and value[0] <= value[1]):
        _bad(name, value, "must be a range [low, high] of numbers with low <= high")
    if kind is int:
        if not all(float(v).is_integer() and v >= 1 for v in value):
            _bad(name, value, "must be integers >= 1")
        return IntDistribution(int(value[0]), int(value[1]))
    if log and value[0] <= 0:
        _bad(name, value, "a log-scaled range needs low > 0")
    return FloatDistribution(float(value[0]), float(value[1]), log=value[0] > 0 if log is None else log)


def _space(search: dict) -> tuple[dict, tuple[str, ...]]:
    _check_keys("search", search, set(DEFAULTS["search"]))
    names = search["schedulers"]
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        _bad("search.schedulers", names, "must be a non-empty list of scheduler names")
    for n in names:
        get_scheduler(n)  # SchedulerError names an unknown scheduler
    space = {"scheduler": CategoricalDistribution(tuple(names)),
             "e_agg": _range("search.e_agg", search["e_agg"], int, False),
             "deadline_factor": _range("search.deadline_factor", search["deadline_factor"], float, False),
             "lr": _range("search.lr", search["lr"], float, True),
             "local_steps": _range("search.local_steps", search["local_steps"], int, False)}
    if space["deadline_factor"].low <= 0:
        _bad("search.deadline_factor", search["deadline_factor"], "must be > 0")
    if not isinstance(search["options"], dict):
        _bad("search.options", search["options"], "must be a table of option = [low, high] or {choices = [...]}")
    for name, value in search["options"].items():
        if name in CORE + ("seed", "deadline_s"):
            _bad(f"search.options.{name}", value, "is set by the tuner, not a scheduler option")
        if not any(takes_option(n, name) for n in names):
            _bad(f"search.options.{name}", value, f"no scheduler of {names} takes this keyword")
        if isinstance(value, dict) and set(value) == {"choices"} and isinstance(value["choices"], list) \
                and value["choices"]:
            space[name] = CategoricalDistribution(tuple(value["choices"]))
        else:
            space[name] = _range(f"search.options.{name}", value, float, None)
    return space, tuple(search["options"])


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
            _bad(f"defaults.{name}", None, "missing (the default configuration sets every core parameter)")
    for name, value in defaults.items():
        if name not in space:
            _bad(f"defaults.{name}", value, f"not a searched parameter; searched: {sorted(space)}")
        if not _contains(space[name], value):
            _bad(f"defaults.{name}", value, f"must lie in the search space {space[name]}")
    sched = defaults["scheduler"]
    wanted = set(CORE) | {o for o in options if takes_option(sched, o)}
    for name in sorted(wanted ^ set(defaults)):
        rule = "missing: the default scheduler takes it" if name in wanted else "the default scheduler does not take it"
        _bad(f"defaults.{name}", defaults.get(name), f"{rule} (scheduler {sched!r})")


def takes_option(scheduler: str, option: str) -> bool:
    """Whether the scheduler ``scheduler`` declares ``option`` (the registry's record of its keyword options)."""
    try:
        return option in scheduler_options(scheduler)
    except SchedulerError:
        return False


# --------------------------------------------------------------------------- one trial
def suggest(trial: optuna.Trial, settings: TuneSettings) -> dict:
    """Sample the outer choices: the core parameters, then the chosen scheduler's options."""
    choice = {name: _suggest(trial, name, settings.space[name]) for name in CORE}
    for name in settings.options:
        if takes_option(choice["scheduler"], name):
            choice[name] = _suggest(trial, name, settings.space[name])
    return choice


def _suggest(trial: optuna.Trial, name: str, dist):
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high)
    return trial.suggest_float(name, dist.low, dist.high, log=dist.log)


def build_plan(scenario: Scenario, choice: dict, seed: int = 0) -> tuple[Plan, Metrics]:
    """The plan of the choices ``choice`` (see :func:`suggest`) and its metrics; raises ``PlanError`` when the
    scheduler reports it infeasible or no training device meets the round deadline.

    ``deadline_s = deadline_factor x`` the plan's latency per edge round (s) without a deadline; ``local_steps``
    and ``deadline_s`` go to the scheduler when it takes them, else they are set on its plan.
    """
    plan = _scheduled(scenario, choice, seed).replace(local_steps=choice["local_steps"], deadline_s=None)
    deadline = choice["deadline_factor"] * evaluate(scenario, plan).latency_s
    if takes_option(choice["scheduler"], "deadline_s"):
        plan = _scheduled(scenario, choice, seed, deadline_s=deadline)
    plan = plan.replace(local_steps=choice["local_steps"], deadline_s=deadline)
    metrics = evaluate(scenario, plan)
    if not (metrics.participants & plan.train.any(axis=1)).any():
        raise PlanError(f"deadline_s = {deadline:.6g}: no training device meets it (deadline_factor = "
                        f"{choice['deadline_factor']:.4g}), nothing would be trained")
    return plan, metrics


def _scheduled(scenario: Scenario, choice: dict, seed: int, **extra) -> Plan:
    name = choice["scheduler"]
    options = {k: v for k, v in choice.items() if k not in CORE} | extra
    if takes_option(name, "local_steps"):
        options["local_steps"] = choice["local_steps"]
    plan = schedule(scenario, name, e_agg=choice["e_agg"], seed=seed, **options)
    if plan.meta.get("status") == "infeasible":
        raise PlanError(f"plan.meta.status = 'infeasible': scheduler {name!r} found no plan meeting its latency "
                        f"target {plan.meta.get('target_latency_s')!r} s per edge round")
    return plan


def rounds_within(metrics: Metrics, time_s: float | None, energy_j: float | None, max_rounds: int) -> int:
    """Edge rounds (<= ``max_rounds``) that end within ``time_s`` simulated seconds and ``energy_j`` joules
    (None = no limit), on the trainer's clock: period after period of ``metrics.round_end_s``/``round_energy_j``."""
    r = np.arange(max_rounds)
    g = len(metrics.round_end_s)
    t = (r // g) * metrics.period_latency_s + metrics.round_end_s[r % g]
    e = (r // g) * metrics.period_energy_j + np.cumsum(metrics.round_energy_j)[r % g]
    ok = (t <= (math.inf if time_s is None else time_s)) & (e <= (math.inf if energy_j is None else energy_j))
    return int(max_rounds if ok.all() else np.argmin(ok))


def scoring_data(data, test_rows: int, seed: int):
    """``data`` (:class:`~hffm_opt.learners.trainer.FederatedData`) with its global test set cut to a seeded random
    subset of ``test_rows`` rows (0 or more rows than it has = unchanged): evaluating every edge round of every trial
    on the whole set would dominate the cost of a trial."""
    n = len(data.global_test)
    if test_rows == 0 or test_rows >= n:
        return data
    rows = np.sort(np.random.default_rng(seed).choice(n, test_rows, replace=False))
    return dataclasses.replace(data, global_test=data.global_test.subset(rows, f"{data.global_test.name}/score"))


class Objective:
    """``objective(trial)``: plan, train within the budget, return the accuracy (percent), or (accuracy, energy J)
    when ``kind == "pareto"``. ``setup`` is a :class:`hffm_opt.learners.setup.LearningSetup`."""

    def __init__(self, setup, settings: TuneSettings, kind: str = "accuracy"):
        if kind not in OBJECTIVES:
            _bad("objective", kind, f"must be one of {OBJECTIVES}")
        self.scenario, self.settings, self.kind = setup.scenario, settings, kind
        self.data = scoring_data(setup.data, settings.score["test_rows"], settings.study["seed"])
        self.config = _train_config()(**settings.train)

    def __call__(self, trial: optuna.Trial):
        from ..learners.trainer import train

        s, budget = self.settings, self.settings.budget
        choice = suggest(trial, s)
        plan, metrics = build_plan(self.scenario, choice, seed=s.study["seed"])
        rounds = rounds_within(metrics, budget.get("time_s"), budget.get("energy_j"), budget["max_rounds"])
        trial.set_user_attr("deadline_s", plan.deadline_s)
        trial.set_user_attr("latency_s", metrics.latency_s)
        trial.set_user_attr("n_stragglers", int(metrics.stragglers.sum()))
        if rounds == 0:
            raise TrialFailed(f"budget = {budget}: not even one edge round fits (first round ends at "
                              f"{metrics.round_end_s[0]:.4g} s, {metrics.round_energy_j[0]:.4g} J)")
        every = 1 if self.kind == "accuracy" else rounds  # per round for the pruner, else only the last round
        config = dataclasses.replace(self.config, rounds=rounds, lr=choice["lr"], eval_every=every)
        history = train(self.scenario, plan, self.data, config,
                        on_round=self._reporter(trial) if self.kind == "accuracy" else None)
        last = history.records[-1]
        accuracy = history.accuracy_at(time_s=budget.get("time_s"), energy_j=budget.get("energy_j"))
        if accuracy is None or not math.isfinite(accuracy):
            raise TrialFailed(f"accuracy = {accuracy!r}: no finite accuracy within the budget {budget}")
        trial.set_user_attr("rounds", rounds)
        trial.set_user_attr("accuracy_pct", accuracy)
        trial.set_user_attr("time_s", last["time_s"])
        trial.set_user_attr("energy_j", last["energy_j"])
        return accuracy if self.kind == "accuracy" else (accuracy, last["energy_j"])

    @staticmethod
    def _reporter(trial: optuna.Trial):
        def on_round(record: dict) -> None:
            if record["accuracy"] is not None:
                trial.report(record["accuracy"], step=record["round"])
                if trial.should_prune():
                    raise optuna.TrialPruned(f"accuracy {record['accuracy']:.2f} % at edge round {record['round']}")

        return on_round


# --------------------------------------------------------------------------- the shared study
def _engine_kwargs(url: str) -> dict:
    """SQLite: wait up to 60 s for another process's write; servers: check pooled connections before use."""
    return {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}


def storage_for(url: str, settings: TuneSettings) -> optuna.storages.RDBStorage:
    """An RDB storage on the SQLAlchemy ``url`` with heartbeats (``study.heartbeat_s``, ``study.grace_s``)."""
    return _retry(lambda: optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url),
                                                     heartbeat_interval=settings.study["heartbeat_s"],
                                                     grace_period=settings.study["grace_s"]))


def _retry(fn, tries: int = 5):
    """``fn()``, retried on database errors (first creation of the schema by several workers at once)."""
    for attempt in range(tries):
        try:
            return fn()
        except (sa.exc.DBAPIError, optuna.exceptions.StorageInternalError):
            if attempt == tries - 1:
                raise
            time.sleep(random.uniform(0.1, 0.5))


class StudyLock:
    """A mutex shared by every worker of a study on any SQLAlchemy URL: a row of the table ``hffm_opt_locks`` in
    the study's own database. A holder that dies loses it after ``lease_s`` seconds (workers' clocks must agree
    to well within that)."""

    _TABLE = sa.Table("hffm_opt_locks", sa.MetaData(), sa.Column("name", sa.String(255), primary_key=True),
                      sa.Column("owner", sa.String(255), nullable=False),
                      sa.Column("expires", sa.Float, nullable=False))  # time.time() s

    def __init__(self, url: str, name: str, lease_s: float = 30.0):
        self.engine = sa.create_engine(url, **_engine_kwargs(url))
        _retry(lambda: self._TABLE.metadata.create_all(self.engine))
        self.name, self.lease_s = name, lease_s
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def __enter__(self) -> "StudyLock":
        t, busy = self._TABLE, 0
        while True:
            now = time.time()
            try:
                with self.engine.begin() as con:
                    con.execute(sa.delete(t).where(t.c.name == self.name, t.c.expires < now))
                    con.execute(sa.insert(t).values(name=self.name, owner=self.owner, expires=now + self.lease_s))
                return self
            except sa.exc.IntegrityError:  # held by another worker
                pass
            except sa.exc.OperationalError:  # SQLite busy (or the server gone: give up after a while)
                busy += 1
                if busy > 100:
                    raise
            time.sleep(random.uniform(0.02, 0.2))

    def __exit__(self, *exc) -> None:
        t = self._TABLE
        with self.engine.begin() as con:
            con.execute(sa.delete(t).where(t.c.name == self.name, t.c.owner == self.owner))


def open_study(name: str, storage, settings: TuneSettings, kind: str, *, seed_offset: int = 0) -> optuna.Study:
    """Create or load the study ``name`` (seeded TPE; the configured pruner for ``kind == "accuracy"``) and, when it is
    new, enqueue the default configuration as its first trial. Call under :class:`StudyLock`. Raises
    :class:`TuneConfigError` when the stored study has another objective or other settings."""
    s = settings.study
    sampler = optuna.samplers.TPESampler(seed=s["seed"] + seed_offset, n_startup_trials=s["tpe_startup"])
    if kind == "pareto" or s["pruner"] == "none":
        pruner = optuna.pruners.NopPruner()
    elif s["pruner"] == "median":
        pruner = optuna.pruners.MedianPruner(n_startup_trials=s["pruner_startup"])
    else:
        pruner = optuna.pruners.SuccessiveHalvingPruner()
    directions = ["maximize"] if kind == "accuracy" else ["maximize", "minimize"]
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                                directions=directions, load_if_exists=True)
    stored = study.user_attrs
    if "objective" not in stored:
        study.set_user_attr("objective", kind)
        study.set_user_attr("settings", settings.text)
        study.set_user_attr("settings_digest", settings.digest)
        study.enqueue_trial(settings.defaults, user_attrs={"role": "default"})
    elif stored["objective"] != kind or len(study.directions) != len(directions):
        _bad("--objective", kind, f"study {name!r} was created with objective {stored['objective']!r}")
    elif stored["settings_digest"] != settings.digest:
        _bad("--config", settings.digest, f"study {name!r} was created with other settings (digest "
             f"{stored['settings_digest']}); use a new --study name")
    return study


def _trial_id(storage, study: optuna.Study, number: int) -> int:
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)


def _claim(study: optuna.Study, storage, n_trials: int) -> tuple[bool, optuna.Trial | None]:
    """Under the lock: put the trials of dead workers back to WAITING, then ``(done, trial)``: done when ``n_trials``
    trials are finished, else a claimed trial if finished + running trials leave a slot, else None (wait)."""
    # the storage's stale trial ids (heartbeat older than its grace period); private but part of BaseHeartbeat
    for trial_id in storage._get_stale_trial_ids(storage.get_study_id_from_name(study.study_name)):
        storage.set_trial_state_values(trial_id, TrialState.WAITING)
    states = [t.state for t in study.get_trials(deepcopy=False)]  # one snapshot: a trial may finish meanwhile
    finished = sum(st in FINISHED for st in states)
    if finished >= n_trials:
        return True, None
    if finished + states.count(TrialState.RUNNING) >= n_trials:
        return False, None
    trial = study.ask()
    storage.record_heartbeat(_trial_id(storage, study, trial.number))
    return False, trial


def _finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def _heartbeat(storage, trial_id: int, every_s: float, stop: threading.Event) -> None:
    while not stop.wait(every_s):
        storage.record_heartbeat(trial_id)


def run_trial(study: optuna.Study, trial: optuna.Trial, objective, storage, heartbeat_s: float, log=None) -> TrialState:
    """Run ``objective`` on a claimed trial with heartbeats and tell the study: COMPLETE, PRUNED, or FAIL with
    ``fail_reason`` for :data:`TRIAL_ERRORS`. Any other exception (e.g. Ctrl-C) puts the trial back to WAITING."""
    trial_id = _trial_id(storage, study, trial.number)
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(storage, trial_id, heartbeat_s, stop), daemon=True)
    beat.start()
    value, state, note, t0 = None, TrialState.COMPLETE, "", time.perf_counter()
    try:
        value = objective(trial)
    except optuna.TrialPruned as exc:
        state, note = TrialState.PRUNED, str(exc)
    except TRIAL_ERRORS as exc:
        state, note = TrialState.FAIL, f"{type(exc).__name__}: {exc}"
    except BaseException:
        stop.set()
        storage.set_trial_state_values(trial_id, TrialState.WAITING)
        raise
    finally:
        stop.set()
        beat.join()
    try:
        if state == TrialState.FAIL:
            trial.set_user_attr("fail_reason", note)
        study.tell(trial, value, state=state if state != TrialState.COMPLETE else None, skip_if_finished=True)
    except optuna.exceptions.UpdateFinishedTrialError:  # taken for dead and finished by another worker meanwhile
        note += " (already finished by another worker)"
    if log is not None:
        log(f"trial {trial.number} {state.name} in {time.perf_counter() - t0:.1f} s: value {value} {note} "
            f"params {trial.params}")
    return state


def prepare(name: str, url: str, settings: TuneSettings, kind: str) -> None:
    """Create the study (and its default trial) before several workers start on it."""
    storage = storage_for(url, settings)
    with StudyLock(url, f"study:{name}"):
        open_study(name, storage, settings, kind)


def run_worker(name: str, url: str, settings: TuneSettings, kind: str, n_trials: int, *, objective=None,
               timeout_s: float | None = None, log=None) -> optuna.Study:
    """Work on the study until it holds ``n_trials`` finished trials, or until ``timeout_s`` seconds have passed (no
    trial starts after that); returns the study. ``objective`` defaults to :class:`Objective` on
    ``learning_setup(**settings.setup)``. The ``k``-th worker to join seeds its sampler with ``study.seed + k``."""
    if not (isinstance(n_trials, int) and n_trials >= 1):
        _bad("--trials", n_trials, "must be an integer >= 1")
    storage = storage_for(url, settings)
    lock = StudyLock(url, f"study:{name}")
    with lock:
        first = open_study(name, storage, settings, kind)
        joined = int(first.user_attrs.get("workers_joined", 0))
        first.set_user_attr("workers_joined", joined + 1)
    study = open_study(name, storage, settings, kind, seed_offset=joined)
    if _finished(study) >= n_trials:
        return study
    if objective is None:
        import torch

        torch.set_num_threads(settings.study["torch_threads"])
        objective = Objective(_learning_setup()(**settings.setup), settings, kind)
    start = time.monotonic()
    while timeout_s is None or time.monotonic() - start < timeout_s:
        with lock:
            done, trial = _claim(study, storage, n_trials)
        if done:
            break
        if trial is None:
            time.sleep(settings.study["heartbeat_s"])
        else:
            run_trial(study, trial, objective, storage, settings.study["heartbeat_s"], log)
    return study


# --------------------------------------------------------------------------- results
def counts(study: optuna.Study) -> dict:
    """Finished trials by state: ``n_complete``, ``n_pruned``, ``n_failed``."""
    states = [t.state for t in study.get_trials(deepcopy=False)]
    return {"n_complete": states.count(TrialState.COMPLETE), "n_pruned": states.count(TrialState.PRUNED),
            "n_failed": states.count(TrialState.FAIL)}


def _trial_row(t: optuna.trial.FrozenTrial) -> dict:
    return {"number": t.number, "accuracy_pct": t.values[0], "energy_j": t.user_attrs.get("energy_j"),
            "time_s": t.user_attrs.get("time_s"), "rounds": t.user_attrs.get("rounds"), "params": dict(t.params)}


def best(study: optuna.Study) -> dict | None:
    """The best complete trial of a single-objective study and how it compares with the default configuration
    (the enqueued trial with ``role = "default"``): ``default_accuracy_pct`` (None if that trial did not complete)
    and ``beats_default`` (strictly higher accuracy). None when no trial is complete."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        return None
    top = max(done, key=lambda t: (t.value, -t.number))
    default = next((t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("role") == "default"), None)
    ref = default.value if default is not None and default.state == TrialState.COMPLETE else None
    return _trial_row(top) | {"default_number": None if default is None else default.number,
                              "default_accuracy_pct": ref, "beats_default": None if ref is None else top.value > ref}


def pareto_table(study: optuna.Study):
    """The Pareto front of a (accuracy up, energy down) study as a pandas table, by increasing energy (J)."""
    import pandas as pd

    rows = [{k: v for k, v in _trial_row(t).items() if k != "params"} | t.params | {"energy_j": t.values[1]}
            for t in study.best_trials]
    cols = ["number", "accuracy_pct", "energy_j", "time_s", "rounds"]
    table = pd.DataFrame(rows, columns=cols + sorted({k for r in rows for k in r} - set(cols)))
    return table.sort_values(["energy_j", "number"]).reset_index(drop=True)


def summary(study: optuna.Study, kind: str) -> dict:
    """``{"study", "n_complete", "n_pruned", "n_failed", "best"}`` (accuracy) or ``{..., "pareto"}`` (pareto)."""
    out = {"study": study.study_name, **counts(study)}
    if kind == "accuracy":
        out["best"] = best(study)
    else:
        out["pareto"] = json.loads(pareto_table(study).to_json(orient="records"))
    return out


def save_plots(study: optuna.Study, out_dir, kind: str) -> list[Path]:
    """PNG plots of ``optuna.visualization.matplotlib`` into ``out_dir``: optimisation history and parameter
    importances (accuracy; from :data:`IMPORTANCE_MIN_TRIALS` complete trials), Pareto front (pareto).
    Returns the files written."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if kind == "accuracy":
        plots = {"history": lambda: ovm.plot_optimization_history(study, target_name="accuracy %")}
        if n_done >= IMPORTANCE_MIN_TRIALS:
            plots["importances"] = lambda: ovm.plot_param_importances(study, target_name="accuracy %")
    else:
        plots = {"pareto": lambda: ovm.plot_pareto_front(study, target_names=["accuracy %", "energy J"])}
    written = []
    for label, make in plots.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ax = make()
            except (ValueError, RuntimeError, ZeroDivisionError):  # e.g. no varying parameter to rank
                continue
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        path = out / f"{label}.png"
        tmp = out / f".{label}.{os.getpid()}.png"
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        plt.close(fig)
        os.replace(tmp, path)
        written.append(path)
    return written
