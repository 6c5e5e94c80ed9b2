"""Run schedulers x scenarios x seeds x E_agg into one tidy table, with means, 95% CIs and ratios to a reference.

All figures per edge round in the consistent accounting: latency (s), energy (J), access energy (devices'
uplink + D2D, J), backhaul energy (J); ``objective`` is the energy per edge round (the optimising schedulers'
objective), ``gap`` the proven relative gap where a scheduler reports one (``gap_controllable`` the same on the
part of the objective the plan can change), ``solve_s`` its wall time.

A scenario spec is an embedded name or a file (fixed network; the seed drives the schedulers' randomness), or
a generator config (``.toml`` with ``[generator]``), or ``paper-random``: then each seed also draws a new network.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from .._io import atomic_path, atomic_write, dumps_json
from ..errors import ScenarioError
from ..evaluate import evaluate
from ..network import generators
from ..network import io as scenario_io
from ..network.documents import tomllib
from ..network.scenario import Scenario
from ..schedulers import schedule
from .sweep import run_cells

ROW_COLUMNS = ["scheduler", "scenario", "seed", "e_agg", "latency_s", "energy_j", "access_energy_j",
               "backhaul_energy_j", "objective", "gap", "gap_controllable", "solve_s"]
METRICS = ("latency_s", "energy_j", "access_energy_j")


def _number(value) -> float:
    """A meta figure as a float, NaN where the scheduler reports none."""
    return np.nan if value is None else float(value)


def scenario_for_seed(spec: str, seed: int) -> Scenario:
    """The scenario a spec names for one seed (generator specs are re-drawn with that seed)."""
    if spec == "paper-random":
        return generators.paper(seed=seed)
    path = Path(spec)
    if path.suffix == ".toml" and path.is_file():
        doc = tomllib.loads(path.read_text())
        if "generator" in doc:
            doc["generator"] = dict(doc["generator"]) | {"seed": seed}
            try:
                return scenario_io.from_config(doc, None)
            except ScenarioError as exc:
                raise ScenarioError(f"scenario file {spec!r}: {exc}") from None
    return scenario_io.load_scenario(spec)


def spec_content(spec: str) -> str | None:
    """SHA-256 of a scenario file's bytes (None for an embedded name or ``paper-random``). Sweep cells carry it, so
    their stored results are keyed by what the file holds: an edited file is never answered from its old cells."""
    import hashlib

    path = Path(spec)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def compare_cell(cell: dict) -> dict:
    """One row of the table: ``cell`` = ``{"scenario": spec, "seed", "e_agg", "scheduler"}`` (a sweep cell)."""
    scenario = scenario_for_seed(cell["scenario"], cell["seed"])
    t0 = time.perf_counter()
    plan = schedule(scenario, cell["scheduler"], e_agg=cell["e_agg"], seed=cell["seed"])
    solve_s = time.perf_counter() - t0
    m = evaluate(scenario, plan)
    return {"scheduler": cell["scheduler"], "scenario": cell["scenario"], "seed": cell["seed"], "e_agg": plan.e_agg,
            "latency_s": m.latency_s, "energy_j": m.energy_j, "access_energy_j": m.access_energy_j,
            "backhaul_energy_j": m.backhaul_energy_j, "objective": m.energy_j, "gap": plan.meta.get("gap"),
            "gap_controllable": plan.meta.get("gap_controllable"), "solve_s": solve_s, "_e_agg_asked": cell["e_agg"]}


def run(specs: list[str], schedulers: list[str], seeds: list[int], e_aggs: list[int], progress=None, *,
        workers: int = 1, cluster: str | None = None, store=None) -> pd.DataFrame:
    """The tidy table: one row per (scheduler, scenario, seed, e_agg), each a cell of :func:`~.sweep.run_cells`
    (``workers`` local processes or a Dask ``cluster``; with a ``store`` folder finished cells are kept and
    reused, so an interrupted comparison re-run with the same arguments computes only what is missing)."""
    cells = [{"scenario": spec, "content": spec_content(spec), "seed": seed, "e_agg": e_agg, "scheduler": name}
             for spec in specs for seed in seeds for e_agg in e_aggs for name in schedulers]
    rows, _ = run_cells(compare_cell, cells, workers=workers, cluster=cluster, store=store, progress=progress)
    table = pd.DataFrame(rows)
    for col in ("gap", "gap_controllable"):
        table[col] = table[col].map(_number)
    return table


def ci95(values) -> float | None:
    """Half-width of the 95 % confidence interval of the mean (Student t) of the values that are not None, None
    for fewer than 2 of them."""
    x = np.asarray([v for v in values if v is not None], dtype=float)
    if x.size < 2:
        return None
    return float(stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))


def summarise(rows: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Mean and 95% CI per (scheduler, e_agg), and the mean per-instance ratio to ``reference``.

    Instances are matched on (scenario, seed, requested e_agg); a ratio is NaN if the reference was not run.
    """
    key = ["scenario", "seed", "_e_agg_asked"]
    ref = rows[rows.scheduler == reference].set_index(key)[["latency_s", "access_energy_j"]].add_suffix("_ref")
    out = []
    for (name, e_agg), grp in rows.groupby(["scheduler", "_e_agg_asked"], sort=False):
        rec = {"scheduler": name, "e_agg": int(grp["e_agg"].iloc[0]), "n": len(grp)}
        for m in METRICS:
            rec[f"{m}_mean"] = float(grp[m].mean())
            rec[f"{m}_ci95"] = _number(ci95(grp[m]))
        joined = grp.set_index(key).join(ref, how="inner")
        for m, label in (("latency_s", "latency_ratio"), ("access_energy_j", "access_energy_ratio")):
            rec[label] = float((joined[m] / joined[f"{m}_ref"]).mean()) if len(joined) else float("nan")
        out.append(rec)
    return pd.DataFrame(out)


def _clean(records: list[dict]) -> list[dict]:
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in records]


def to_json(rows: pd.DataFrame, summary: pd.DataFrame) -> dict:
    """``{"rows": [...], "summary": [...]}`` with NaN as null."""
    return {"rows": _clean(rows[ROW_COLUMNS].to_dict("records")), "summary": _clean(summary.to_dict("records"))}


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def series_style(schedulers, e_aggs) -> dict:
    """(colour, marker) of each (scheduler, E_agg) series: one colour per scheduler (matplotlib's 20-colour
    palette, so up to 20 schedulers never share one), one marker per E_agg value."""
    from matplotlib import colormaps

    palette = colormaps["tab20"].colors if len(schedulers) > 10 else colormaps["tab10"].colors
    return {(name, e): (palette[i % len(palette)], MARKERS[j % len(MARKERS)])
            for i, name in enumerate(schedulers) for j, e in enumerate(sorted(e_aggs))}


def write(rows: pd.DataFrame, summary: pd.DataFrame, out_dir) -> list[Path]:
    """Write rows.csv, summary.csv, compare.json and a latency-energy scatter with the Pareto front (atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (("rows.csv", rows[ROW_COLUMNS].to_csv(index=False)),
                       ("summary.csv", summary.to_csv(index=False)),
                       ("compare.json", dumps_json(to_json(rows, summary), indent=1))):
        written.append(atomic_write(out / name, text))
    fig, ax = plt.subplots(figsize=(6, 4.5))
    style = series_style(rows["scheduler"].unique(), rows["_e_agg_asked"].unique())
    for (name, e_agg), grp in rows.groupby(["scheduler", "_e_agg_asked"], sort=False):
        color, marker = style[name, e_agg]
        ax.scatter(grp["latency_s"], grp["energy_j"], s=16, alpha=0.7, color=color, marker=marker,
                   label=f"{name} (E_agg={e_agg})")
    pts = summary.sort_values("latency_s_mean")[["latency_s_mean", "energy_j_mean"]].to_numpy()
    front = [p for i, p in enumerate(pts) if all(q[1] > p[1] for q in pts[:i])]
    if front:
        ax.plot(*np.array(front).T, "k--", lw=1, label="Pareto front of the means")
    ax.set_xlabel("latency per edge round (s)")
    ax.set_ylabel("energy per edge round (J)")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(out / "pareto.png", ".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    written.append(out / "pareto.png")
    return written
