"""Optuna closes the loop: a study searches the outer choices (scheduler, E_agg, round deadline, learning rate,
local steps tau, scheduler options) scored by the accuracy trained within a simulated budget. Four jobs, one module
each: :mod:`.settings` (the TOML settings, defaults, validation, search space), :mod:`.objective` (one trial:
suggest, plan, train, score), :mod:`.workers` (storage, exact trial counts shared by many workers, re-queue of a
dead worker's trial, heartbeats) and :mod:`.report` (summary, ``trials.csv``/``summary.json``, plots)."""

from __future__ import annotations

from .objective import (
    TRIAL_ERRORS,
    Objective,
    TrialFailed,
    build_plan,
    default_points,
    make_objective,
    rounds_within,
    scheduler_points,
    scoring_data,
    suggest,
)
from .report import (
    IMPORTANCE_MIN_TRIALS,
    all_failed,
    best,
    counts,
    dominated_by,
    pareto_table,
    save_plots,
    summary,
    write_results,
)
from .settings import (
    CORE,
    DEFAULTS,
    OBJECTIVES,
    OPTION_REQUIRES,
    PRUNERS,
    TuneConfigError,
    TuneSettings,
    load_settings,
    option_applies,
    settings_from_dict,
    takes_option,
)
from .workers import FINISHED, StudyLock, mask_text, mask_url, open_study, prepare, run_trial, run_worker, storage_for

__all__ = [
    "CORE", "DEFAULTS", "FINISHED", "IMPORTANCE_MIN_TRIALS", "OBJECTIVES", "OPTION_REQUIRES", "PRUNERS",
    "TRIAL_ERRORS", "Objective", "all_failed", "make_objective",
    "StudyLock", "TrialFailed", "TuneConfigError", "TuneSettings", "best", "build_plan", "counts", "default_points",
    "dominated_by", "load_settings", "option_applies", "scheduler_points",
    "mask_text", "mask_url", "open_study", "pareto_table", "prepare", "rounds_within", "run_trial", "run_worker",
    "save_plots", "scoring_data", "settings_from_dict", "storage_for", "suggest", "summary", "takes_option",
    "write_results",
]
