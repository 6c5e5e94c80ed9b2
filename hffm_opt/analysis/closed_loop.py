"""The closed loop, shown: several schedulers' plans trained on the same learning setup over seeds, with served
accuracy, time and energy to a target accuracy, and 95 % confidence intervals.

Per seed, one :func:`~hffm_opt.learners.setup.learning_setup` (network draw, data partition, model) is shared by
every method, so methods are compared on the same instances (paired). Every plan is made for the workload that
training runs (``local_steps`` tau and ``batch_size``), so the evaluator prices what is trained. Times and energies
are simulated (the evaluator's figures for each realised round); accuracies are in percent. The target is a served
accuracy (each device's tasks scored by the model that serves it), by default 95 % of central training's accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._io import atomic_path, atomic_write, dumps_json
from ..errors import ConfigError
from ..schedulers import schedule
from .compare import ci95, series_style
from .paper_table import PAPER_ROWS

METRIC = "served_accuracy"  # the accuracy the target and the curves are about


@dataclass(frozen=True)
class Method:
    """One row of the loop: ``key`` (JSON name), ``label``, the scheduler, its ``e_agg`` and scheduler options."""

    key: str
    label: str
    scheduler: str
    e_agg: int
    options: dict = field(default_factory=dict)


#: the learning-aware ``optimal``: full F4 with coverage ``cluster``, ``w_U`` (J per unit of training utility) and
#: edge tiers, so a module leaves its cluster only where the utility of global aggregation is worth its backhaul
LEARNING_AWARE = {"coverage": "cluster", "w_U": 100.0, "edge_tiers": True}

#: the paper's schemes, ``greedy`` and ``optimal`` (F4 at the latency of the paper's HF-FM+D2D, every edge round
#: ending no later than HF-FM+D2D's: ``match_rounds``) at E_agg 2 and 8, ``optimal`` choosing its own E_agg (the
#: least energy per edge round at HF-FM+D2D's E_agg 8 latency) and the learning-aware ``optimal`` at E_agg 8
MATCHED = {"match_rounds": True}
DEFAULT_METHODS = tuple(Method(*row) for row in PAPER_ROWS) + (
    Method("greedy", "Greedy", "greedy", 8), Method("optimal", "Optimal (F4)", "optimal", 2, MATCHED),
    Method("optimal", "Optimal (F4)", "optimal", 8, MATCHED),
    Method("optimal-own-e-agg", "Optimal (F4, own E_agg)", "optimal", 8, {"e_aggs": (2, 4, 8, 16)}),
    Method("optimal-learning-aware", "Optimal (F4, w_U)", "optimal", 8, LEARNING_AWARE))


@dataclass(frozen=True)
class MethodRun:
    """One method trained on one seed's setup."""

    method: Method
    seed: int
    history: object  # hffm_opt.learners.history.History


def _mean(values) -> float | None:
    x = [v for v in values if v is not None]
    return float(np.mean(x)) if x else None


def plan_methods(setup, methods, config, *, seed: int) -> list:
    """Every method's plan on ``setup.scenario``, made for the workload of ``config`` (its tau and batch)."""
    if config.local_steps is None or config.batch_size is None:
        raise ConfigError("config.local_steps / batch_size = None: the closed loop plans for the workload it "
                          "trains, so both must be set")
    return [schedule(setup.scenario, m.scheduler, e_agg=m.e_agg, seed=seed, local_steps=config.local_steps,
                     batch_size=config.batch_size, **m.options) for m in methods]


def train_methods(setup, methods, config, *, seed: int, progress=None, part: tuple[int, int] = (0, 1),
                  plans: list | None = None) -> list[MethodRun]:
    """Train every method's plan (``plans``, else :func:`plan_methods`) on ``setup.data``
    (:func:`~hffm_opt.learners.trainer.train_plans`: methods whose plans learn identically, e.g. the same
    aggregation at a D2D aggregator or at the edge, are trained once and each keeps its own clock and energy).

    ``part = (i, n)``: only the methods of the i-th of n shares, so that one seed runs on several processes; the
    shares are the methods' learning groups dealt in turn (methods that learn identically stay together), and
    the runs come in the methods' order. ``progress(label)`` returns a wrapper of the round iterator (e.g. a
    tqdm bar), or None."""
    from ..learners.trainer import learning_key, train_plans

    plans = plan_methods(setup, methods, config, seed=seed) if plans is None else plans
    keys = [learning_key(setup.scenario, p, config) or f"#{i}" for i, p in enumerate(plans)]
    groups = list(dict.fromkeys(keys))
    mine = [i for i, k in enumerate(keys) if groups.index(k) % part[1] == part[0]]
    bars = (lambda i, _: progress(f"seed {seed} {methods[mine[i]].label} E={methods[mine[i]].e_agg}")
            ) if progress else None
    histories = train_plans(setup.scenario, [plans[i] for i in mine], setup.data, config, progress=bars)
    return [MethodRun(methods[i], seed, h) for i, h in zip(mine, histories)]


def reference(setup, central_epochs: float, seed: int) -> dict:
    """Central training of the trainable modules (of a copy: the setup's model stays untrained for the federated
    runs) and the linear probe on the frozen features, on ``setup``'s benchmark: ``{"central_accuracy",
    "linear_probe_accuracy"}`` (percent)."""
    import copy

    from ..learners.central import central_vs_linear

    model = copy.deepcopy(setup.data.model)
    ref = central_vs_linear(setup.benchmark, model=model, epochs=central_epochs, seed=seed)
    return {"central_accuracy": 100 * ref["mean"]["central"], "linear_probe_accuracy": 100 * ref["mean"]["linear"]}


_LAST_SETUP: list = [None, None]  # (key, learning setup) of this process's last cell: training leaves it unchanged


def _cell_setup(cell: dict):
    """The learning setup of a cell's seed (``cell["setup"]`` keywords), built once per process and seed, with the
    cell's torch threads set."""
    import json

    import torch

    from ..learners.setup import learning_setup

    torch.set_num_threads(cell["threads"])
    key = json.dumps([cell["setup"], cell["seed"]], sort_keys=True)
    if _LAST_SETUP[0] != key:  # a process often runs several cells of one seed
        _LAST_SETUP[:] = [key, learning_setup(**cell["setup"], seed=cell["seed"])]
    return _LAST_SETUP[1]


def plans_cell(cell: dict) -> dict:
    """A seed's plans of DEFAULT_METHODS, in whatever process runs it (a cell of :func:`~.sweep.run_cells`):
    ``cell`` = ``{"seed", "setup": learning_setup keywords, "threads", "config": TrainConfig fields}`` ->
    ``{"plans": Plan documents}``."""
    from ..learners.config import TrainConfig

    config = TrainConfig(**{**cell["config"], "seed": cell["seed"]})
    return {"plans": [p.to_dict() for p in plan_methods(_cell_setup(cell), DEFAULT_METHODS, config,
                                                        seed=cell["seed"])]}


def train_cell(cell: dict) -> dict:
    """Training in whatever process runs it: with ``cell["central_epochs"]`` the seed's :func:`reference`, else one
    share (``"part": [i, n]``) of the seed's methods trained from ``cell["plans"]`` (:func:`plans_cell`), returned as
    ``{"methods": indices into DEFAULT_METHODS, "histories": JSON documents}`` (:func:`seed_runs` reads them back).
    The other keys are those of :func:`plans_cell`'s cells."""
    import json

    from ..learners.config import TrainConfig
    from ..plan import Plan

    setup, seed = _cell_setup(cell), cell["seed"]
    if "central_epochs" in cell:
        return reference(setup, cell["central_epochs"], seed)
    config = TrainConfig(**{**cell["config"], "seed": seed})
    plans = [Plan.from_dict(p) for p in cell["plans"]]
    runs = train_methods(setup, DEFAULT_METHODS, config, seed=seed, part=tuple(cell["part"]), plans=plans)
    return {"methods": [DEFAULT_METHODS.index(r.method) for r in runs],
            "histories": [json.loads(r.history.to_json()) for r in runs]}


def seed_runs(seed: int, shares: list[dict]) -> list[MethodRun]:
    """The :class:`MethodRun` s of one seed from its shares (:func:`train_cell`'s results), in the methods' order."""
    from ..learners.history import History

    found = {i: h for share in shares for i, h in zip(share["methods"], share["histories"])}
    return [MethodRun(DEFAULT_METHODS[i], seed, History(found[i]["records"], found[i]["meta"])) for i in sorted(found)]


def plans_e_agg(grp: list[MethodRun]) -> int | str:
    """The E_agg the plans of a method's seeds ran with: one number when every seed's plan chose the same, else the
    choices joined by '/' (e.g. '4/16')."""
    chosen = sorted({int(r.history.meta["e_agg"]) for r in grp})
    return chosen[0] if len(chosen) == 1 else "/".join(map(str, chosen))


def summarise(runs: list[MethodRun], target_pct: float) -> list[dict]:
    """One row per (method, e_agg), in the order first seen: means over seeds and 95 % CI half-widths.

    ``time_to_target_s``/``energy_to_target_j`` average the seeds that reached the target (``n_reached`` of
    ``n_seeds``; None when none did); ``latency_s``/``energy_j`` are per edge round as planned (static channel);
    ``e_agg`` is the plans' (:func:`plans_e_agg`: a method that chooses its own reports its choice, or the seeds'
    different choices as one string, e.g. '4/16'). ``per_seed`` holds each seed's own figures (lists in the order of
    ``seed``; None where a seed did not reach the target): the seed-by-seed comparisons of two methods."""
    groups: dict[tuple, list[MethodRun]] = {}
    for r in runs:
        groups.setdefault((r.method.key, r.method.e_agg), []).append(r)
    rows = []
    for (key, _), grp in groups.items():
        hist = [r.history for r in grp]
        served = [h.final(METRIC) for h in hist]
        times = [h.time_to(target_pct, METRIC) for h in hist]
        energies = [h.energy_to(target_pct, METRIC) for h in hist]
        rows.append({"method": key, "label": grp[0].method.label, "e_agg": plans_e_agg(grp),
                     "latency_s": _mean(h.meta["latency_s"] for h in hist),
                     "energy_j": _mean(h.meta["energy_j"] for h in hist),
                     "accuracy": _mean(h.final("accuracy") for h in hist), "served_accuracy": _mean(served),
                     "served_accuracy_ci95": ci95(served), "time_to_target_s": _mean(times),
                     "time_to_target_s_ci95": ci95(times), "energy_to_target_j": _mean(energies),
                     "energy_to_target_j_ci95": ci95(energies), "n_reached": sum(t is not None for t in times),
                     "n_seeds": len(grp),
                     "per_seed": {"seed": [r.seed for r in grp], "served_accuracy": served,
                                  "time_to_target_s": times, "energy_to_target_j": energies,
                                  "time_s": [h.records[-1]["time_s"] for h in hist],
                                  "total_energy_j": [h.records[-1]["energy_j"] for h in hist]}})
    return rows


def _curves(grp: list[MethodRun], x_key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean x, mean served accuracy and its CI half-width at each evaluated round common to the seeds."""
    per_seed = [{r["round"]: (r[x_key], r[METRIC]) for r in run.history.records if r.get(METRIC) is not None}
                for run in grp]
    rounds = sorted(set.intersection(*(set(s) for s in per_seed))) if per_seed else []
    x = np.array([np.mean([s[k][0] for s in per_seed]) for k in rounds])
    y = np.array([np.mean([s[k][1] for s in per_seed]) for k in rounds])
    half = np.array([ci95([s[k][1] for s in per_seed]) or 0.0 for k in rounds])
    return x, y, half


def plot_curves(runs: list[MethodRun], target_pct: float, out: Path) -> list[Path]:
    """Served accuracy vs simulated time and vs energy, one line per (method, E_agg) with its 95 % CI band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[tuple, list[MethodRun]] = {}
    for r in runs:
        groups.setdefault((r.method.key, r.method.e_agg), []).append(r)
    style = series_style(list(dict.fromkeys(k for k, _ in groups)), {e for _, e in groups})
    written = []
    for x_key, xlabel, name in (("time_s", "simulated time (s)", "served_accuracy_vs_time.png"),
                                ("energy_j", "energy (J)", "served_accuracy_vs_energy.png")):
        fig, ax = plt.subplots(figsize=(7.5, 4.8))
        for (key, e_agg), grp in groups.items():
            x, y, half = _curves(grp, x_key)
            colour, marker = style[(key, e_agg)]
            label = f"{grp[0].method.label} E={plans_e_agg(grp)}"
            ax.plot(x, y, color=colour, marker=marker, markersize=4, label=label)
            ax.fill_between(x, y - half, y + half, color=colour, alpha=0.15, linewidth=0)
        ax.axhline(target_pct, color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("served accuracy (%), mean over seeds, 95 % CI")
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        try:
            with atomic_path(out / name, ".png") as tmp:
                fig.savefig(tmp, dpi=120)
        finally:
            plt.close(fig)
        written.append(out / name)
    return written


def write(runs: list[MethodRun], document: dict, out) -> list[Path]:
    """Every history (CSV + JSON), ``results.json`` (``document``) and the two plots, into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for r in runs:
        written += list(r.history.save(out, f"history_{r.method.key}_E{plans_e_agg([r])}_seed{r.seed}"))
    written.append(atomic_write(out / "results.json", dumps_json(document, indent=1)))
    return written + plot_curves(runs, document["target_accuracy"], out)
