"""One trial: suggest a choice, build its plan, train within the budget, score it.

:func:`suggest` samples the outer choices of the search space (:mod:`.settings`); :func:`build_plan` turns them into
a plan checked by ``evaluate``; :class:`Objective` trains under it (:func:`hffm_opt.learners.trainer.train`) for the
edge rounds that fit the budget (:func:`rounds_within`) and returns the served accuracy (percent, on a seeded subset
of the validation split, :func:`scoring_data`: a study never sees the global test set) reached within the budget, or
for the Pareto study ``(served accuracy, energy J spent within the budget)``. Single-objective trials report their
accuracy after every edge round so a pruner can stop them early. :func:`scheduler_points` scores each searched
scheduler at the default configuration the same way, for the Pareto study's comparison (:func:`default_points`).
An infeasible plan, a solver or a training failure raises one of :data:`TRIAL_ERRORS`: the worker tells that trial
FAILED with the reason and the study goes on.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, IntDistribution

from ..errors import ConfigError, PlanError
from ..evaluate import Metrics, evaluate
from ..learners.evaluation import seeded_rows
from ..network.scenario import Scenario
from ..plan import Plan
from ..schedulers import schedule
from .settings import CORE, OBJECTIVES, TuneSettings, in_section, option_applies, reject, takes_option

METRIC = "served_accuracy"  # what a trial is scored by, on the validation split

#: errors that fail one trial (infeasible plan, scheduler, solver, training) without stopping the study
TRIAL_ERRORS = (ValueError, RuntimeError, ArithmeticError)


class TrialFailed(RuntimeError):
    """A trial produced no usable score (e.g. no evaluation within the budget)."""


def suggest(trial: optuna.Trial, settings: TuneSettings) -> dict:
    """Sample the outer choices: the core parameters, then the chosen scheduler's options (each that applies given
    the others, :data:`~.settings.OPTION_REQUIRES`; ``settings.options`` lists the options others need first)."""
    choice = {name: _suggest(trial, name, settings.space[name]) for name in CORE}
    for name in settings.options:
        if takes_option(choice["scheduler"], name) and option_applies(name, choice):
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


def scoring_data(data, validation_rows: int, seed: int):
    """``data`` (:class:`~hffm_opt.learners.trainer.FederatedData`) with its validation split cut to a seeded random
    subset of ``validation_rows`` rows (0 or more rows than it has = unchanged; evaluating every edge round of every
    trial on the whole split would dominate the cost of a trial) and its global test set removed from what trials
    can reach (replaced by that subset, so nothing a trial does can read it)."""
    if data.validation is None:
        raise ConfigError("data.validation = None: tuning scores trials on a validation split, and this learning "
                          "setup has none (learning_setup(validation_fraction > 0))")
    n = len(data.validation)
    valid = data.validation
    if 0 < validation_rows < n:
        valid = valid.subset(seeded_rows(n, validation_rows, seed), f"{valid.name}/score")
    return dataclasses.replace(data, validation=valid, global_test=valid)


class Objective:
    """``objective(trial)``: plan, train within the budget, return the accuracy (percent), or (accuracy, energy J)
    when ``kind == "pareto"``. ``setup`` is a :class:`hffm_opt.learners.setup.LearningSetup`; ``device`` the torch
    device of training (None = the settings' ``train.device``, else the CPU)."""

    def __init__(self, setup, settings: TuneSettings, kind: str = "accuracy", device: str | None = None):
        from ..learners.device import resolve_device
        from ..learners.participation import Participation
        from ..learners.trainer import TrainConfig

        if kind not in OBJECTIVES:
            reject("objective", kind, f"must be one of {OBJECTIVES}")
        self.scenario, self.settings, self.kind = setup.scenario, settings, kind
        self.data = scoring_data(setup.data, settings.score["validation_rows"], settings.study["seed"])
        # the torch device (cpu, cuda, auto) of the trials: ``device``, else the settings' train.device, else cpu
        self.config = TrainConfig(**(settings.train | {"eval_split": "validation", "personalised": False}
                                     | ({"device": device} if device else {})))
        resolve_device(self.config.device)  # CUDA where there is none fails the worker, not every trial
        try:  # availabilities and trace devices against the network, before any trial
            Participation(self.scenario.n_devices, self.config.availability, self.config.availability_trace)
        except ConfigError as exc:
            raise ConfigError(in_section("train", exc)) from None

    def __call__(self, trial: optuna.Trial):
        accuracy, attrs = self.score(suggest(trial, self.settings), trial)
        return accuracy if self.kind == "accuracy" else (accuracy, attrs["energy_j"])

    def score(self, choice: dict, trial: optuna.Trial | None = None) -> tuple[float, dict]:
        """Plan the choices ``choice`` (:func:`suggest`), train within the budget: (served accuracy %, figures
        ``{"deadline_s", "latency_s", "n_stragglers", "rounds", "time_s", "energy_j"}``), each also set on
        ``trial`` when given (which then reports every edge round to its pruner in the accuracy study)."""
        from ..learners.trainer import train

        s, budget = self.settings, self.settings.budget
        plan, metrics = build_plan(self.scenario, choice, seed=s.study["seed"])
        rounds = rounds_within(metrics, budget.get("time_s"), budget.get("energy_j"), budget["max_rounds"])
        attrs = {"deadline_s": plan.deadline_s, "latency_s": metrics.latency_s,
                 "n_stragglers": int(metrics.stragglers.sum())}
        _set(trial, attrs)
        if rounds == 0:
            end_s, energy_j = metrics.round_end_s[0], metrics.round_energy_j[0]
            key = "time_s" if budget.get("time_s") is not None and end_s > budget["time_s"] else "energy_j"
            raise TrialFailed(f"[budget].{key} = {budget[key]!r}: not even one edge round fits (the first ends at "
                              f"{end_s:.4g} s, {energy_j:.4g} J)")
        pruned = self.kind == "accuracy" and trial is not None
        every = 1 if pruned else rounds  # per round for the pruner, else only the last round
        config = dataclasses.replace(self.config, rounds=rounds, lr=choice["lr"], eval_every=every)
        history = train(self.scenario, plan, self.data, config, on_round=self._reporter(trial) if pruned else None)
        last = history.records[-1]
        accuracy = history.accuracy_at(time_s=budget.get("time_s"), energy_j=budget.get("energy_j"), metric=METRIC)
        if accuracy is None or not math.isfinite(accuracy):
            raise TrialFailed(f"accuracy = {accuracy!r}: no finite accuracy within the budget {budget}")
        attrs |= {"rounds": rounds, "accuracy_pct": accuracy, "time_s": last["time_s"], "energy_j": last["energy_j"]}
        _set(trial, attrs)
        return accuracy, attrs

    @staticmethod
    def _reporter(trial: optuna.Trial):
        def on_round(record: dict) -> None:
            if record[METRIC] is not None:
                trial.report(record[METRIC], step=record["round"])
                if trial.should_prune():
                    raise optuna.TrialPruned(f"served accuracy {record[METRIC]:.2f} % at edge round {record['round']}")

        return on_round


def _set(trial: optuna.Trial | None, attrs: dict) -> None:
    if trial is not None:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)


def make_objective(settings: TuneSettings, kind: str = "accuracy", device: str | None = None) -> Objective:
    """:class:`Objective` on ``learning_setup(**settings.setup)`` with the study's torch threads; building it checks
    every setting only the learning setup can check (an error names its ``[setup]`` field)."""
    import torch

    from ..learners.setup import learning_setup

    torch.set_num_threads(settings.study["torch_threads"])
    try:
        setup = learning_setup(**settings.setup)
    except (ValueError, TypeError) as exc:  # TypeError: e.g. a keyword of benchmark_kwargs the loader lacks
        raise ConfigError(in_section("setup", exc)) from None
    return Objective(setup, settings, kind, device=device)


def default_points(settings: TuneSettings, front: list[dict], device: str | None = None) -> list[dict]:
    """:func:`scheduler_points` on the settings' learning setup (:func:`make_objective`), each marked ``dominated``
    where a trial of the Pareto ``front`` (rows with ``accuracy_pct`` and ``energy_j``) is at least as accurate for
    no more energy."""
    from .report import dominated_by

    points = scheduler_points(make_objective(settings, "pareto", device))
    return [p | ({"dominated": dominated_by(front, p)} if "error" not in p else {}) for p in points]


def scheduler_points(objective: Objective) -> list[dict]:
    """Each searched scheduler at the default configuration (the settings' ``defaults`` with that scheduler), scored
    as a trial of the Pareto study is: ``{"scheduler", "accuracy_pct", "energy_j", "time_s", "rounds"}``, or
    ``{"scheduler", "error"}`` where its plan or training fails; what the study's front is compared with."""
    points = []
    for name in objective.settings.space["scheduler"].choices:
        choice = {k: v for k, v in objective.settings.defaults.items() if k in CORE} | {"scheduler": name}
        try:
            _, attrs = objective.score(choice)
        except TRIAL_ERRORS as exc:
            points.append({"scheduler": name, "error": str(exc).splitlines()[0]})
            continue
        points.append({"scheduler": name} | {k: attrs[k] for k in ("accuracy_pct", "energy_j", "time_s", "rounds")})
    return points

