"""What a study found: trial counts by state, the best trial against the default configuration (accuracy) or the
Pareto front (accuracy up, energy down), ``trials.csv``/``summary.json`` and PNG plots, every file written
atomically (:mod:`hffm_opt._io`)."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
from optuna.trial import TrialState

from .._io import atomic_path, atomic_write, dumps_json

IMPORTANCE_MIN_TRIALS = 6  # complete trials before the parameter-importance plot means anything


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


def dominated_by(front: list[dict], point: dict) -> bool:
    """Whether some front trial has at least ``point``'s accuracy with no more energy (weak dominance)."""
    return any(f["accuracy_pct"] >= point["accuracy_pct"] and f["energy_j"] <= point["energy_j"] for f in front)


def all_failed(study: optuna.Study) -> str | None:
    """Why the study has no score, when every one of its finished trials failed (the first trial's reason); None
    when some trial completed or was pruned, or none finished."""
    c = counts(study)
    if c["n_complete"] or c["n_pruned"] or not c["n_failed"]:
        return None
    first = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))[0]
    reason = " ".join(str(first.user_attrs.get("fail_reason", "no reason recorded")).split())
    return (f"study {study.study_name!r}: no trial was scored, every finished trial failed ({c['n_failed']}); "
            f"trial {first.number}: {reason}")


def summary(study: optuna.Study, kind: str) -> dict:
    """``{"study", "n_complete", "n_pruned", "n_failed", "best"}`` (accuracy) or ``{..., "pareto"}`` (pareto)."""
    out = {"study": study.study_name, **counts(study)}
    if kind == "accuracy":
        out["best"] = best(study)
    else:
        out["pareto"] = json.loads(pareto_table(study).to_json(orient="records"))
    return out


def save_plots(study: optuna.Study, out_dir, kind: str, points: list[dict] | None = None) -> list[Path]:
    """PNG plots of ``optuna.visualization.matplotlib`` into ``out_dir``: optimisation history and parameter
    importances (accuracy; from :data:`IMPORTANCE_MIN_TRIALS` complete trials), Pareto front (pareto, with the
    schedulers' ``points`` of :func:`~.objective.scheduler_points` beside it); none without a complete trial.
    Returns the files written."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if not n_done:  # nothing to plot (optuna would log a warning)
        return []
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
        if label == "pareto":
            for p in points or []:
                if "error" not in p:
                    ax.scatter([p["accuracy_pct"]], [p["energy_j"]], marker="x", s=50, zorder=4)
                    ax.annotate(p["scheduler"], (p["accuracy_pct"], p["energy_j"]), fontsize=7)
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        path = out / f"{label}.png"
        try:
            with atomic_path(path, ".png") as tmp:
                fig.savefig(tmp, dpi=110, bbox_inches="tight")
        finally:
            plt.close(fig)
        written.append(path)
    return written


def write_results(out_dir, study: optuna.Study, result: dict) -> list[Path]:
    """``trials.csv`` (every trial, :meth:`optuna.Study.trials_dataframe`) and ``summary.json`` (``result``, see
    :func:`summary`) into ``out_dir``, each atomically; returns the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [atomic_write(out / "trials.csv", study.trials_dataframe().to_csv(index=False)),
            atomic_write(out / "summary.json", dumps_json(result, indent=1))]
