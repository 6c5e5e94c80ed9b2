"""The latency-energy front of F4 by the epsilon-constraint method, and the heuristics on the same plane.

All figures per edge round in the consistent accounting of ``evaluate``: latency (s), energy (J), access energy
(devices' uplink + D2D, J). The front runs from the least latency (F4's latency objective: its least-energy plan
there) to the far end: the slowest placed heuristic's latency, at least twice the least latency (the energy only
approaches its infimum as the target grows, so the far end is where the plane's heuristics end), or
``max_latency_s`` as given (above the least latency). Its points are evenly spaced targets, each the least energy
within that target, with its proven lower bound, gap and status. Every placement, point and check is an independent
cell of a sweep (:func:`run`), so a front runs on several processes or a Dask cluster and an interrupted one resumes.

A heuristic is *dominated* when the front reaches its latency at no more energy: the front point at the largest
target not above the heuristic's latency (a conservative reading of the front), or, failing that, F4 solved
exactly at the heuristic's latency. A heuristic whose plan trains other modules or aggregates at other tiers (e.g.
``edge-only``: no cloud aggregation) solves another problem; it is checked against F4 from its own plan, and
``problem`` says ``own-plan``.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from .._io import atomic_write
from ..errors import ConfigError
from ..evaluate import evaluate
from ..formulations.joint import build_joint
from ..network.scenario import Scenario
from ..schedulers import available, get_scheduler, schedule
from ..schedulers.optimising import joint_model
from ..solvers.f4.decomposition import optimise
from .compare import MARKERS, scenario_for_seed, series_style, spec_content
from .sweep import run_cells

FRONT_FIELDS = ("latency_s", "energy_j", "access_energy_j", "bound_j", "gap", "status")
HEURISTIC_FIELDS = ("scheduler", "latency_s", "energy_j", "access_energy_j")
DOMINANCE_RTOL = 1e-6  # the inner solvers keep a relative margin of 1e-6 below each target


def heuristic_names() -> list[str]:
    """Every registered scheduler that is not an optimiser (``is_optimiser`` unset): baselines, heuristics,
    local search, plug-ins."""
    return [name for name in available() if not getattr(get_scheduler(name), "is_optimiser", False)]


def place_heuristic(scenario: Scenario, name: str, e_agg: int, seed: int) -> dict:
    """One scheduler's plan priced by ``evaluate`` (with ``_plan`` kept for the dominance check)."""
    plan = schedule(scenario, name, e_agg=e_agg, seed=seed)
    m = evaluate(scenario, plan)
    return {"scheduler": name, "latency_s": m.latency_s, "energy_j": m.energy_j,
            "access_energy_j": m.access_energy_j, "_plan": plan}


def _point(res) -> dict:
    m = res.metrics if res.ok else None
    return {"latency_s": m.latency_s if m else None, "energy_j": res.stats.get("energy_j", res.objective) if m else None,
            "access_energy_j": m.access_energy_j if m else None,
            "bound_j": res.stats.get("energy_bound_j", res.bound), "gap": None,
            "status": res.stats.get("energy_status", res.status.value),
            "_target": res.stats.get("target_latency_s")}


def front_model(scenario: Scenario, e_agg: int, seed: int):
    """F4's least-latency model of the front (its start: the best heuristic plan)."""
    return joint_model(scenario, e_agg=e_agg, seed=seed, objective="latency")


def least_point(model) -> dict:
    """The front's first point: F4's least latency and its least-energy plan there."""
    least = optimise(model)
    if not least.ok:
        raise ConfigError(f"scenario {model.scenario.name!r}: F4 finds no plan at any latency ({least.message})")
    first = _point(least)
    first["gap"] = _gap(first)
    return first


def front_targets(first: dict, points: int, far_s: float | None, heuristics_s: float = 0.0) -> list[float]:
    """The other points' latency targets (s per edge round), far end first, evenly spaced from the least latency to
    the far end: ``far_s`` when given (it must exceed the least latency), else the slowest heuristic's latency
    ``heuristics_s``, at least twice the least latency."""
    if points < 2:
        raise ConfigError(f"points = {points!r}: must be an integer >= 2 (both ends)")
    low = first["_target"]
    if far_s is not None and not far_s > low:
        raise ConfigError(f"the front's far end (--max-latency, max_latency_s) = {far_s!r} s: must exceed the least "
                          f"latency any plan reaches, {low:.6g} s (the front's near end)")
    far = far_s if far_s is not None else max(heuristics_s, 2 * low)
    return [float(t) for t in np.linspace(low, far, points)[1:][::-1]]


def target_point(model, target_s: float) -> dict:
    """The least energy within ``target_s`` (s per edge round), with its bound, gap and status."""
    point = _point(optimise(model.at_target(target_s)))
    point["gap"] = _gap(point)
    return point


def _gap(point: dict) -> float | None:
    if point["energy_j"] is None or point["bound_j"] is None:
        return None
    return abs(point["energy_j"] - point["bound_j"]) / max(abs(point["energy_j"]), 1e-9)


def _same_problem(plan, start) -> bool:
    return (plan.mode == start.mode and plan.e_agg == start.e_agg and np.array_equal(plan.train, start.train)
            and np.array_equal(plan.tier, start.tier) and np.array_equal(plan.association, start.association))


def check_heuristic(scenario: Scenario, model, points: list[dict], h: dict) -> dict:
    """Whether the front (``points``) reaches heuristic ``h``'s latency at no more energy (module docstring)."""
    lat, plan = h["latency_s"], h["_plan"]
    same = plan.mode != "hierarchical" or _same_problem(plan, model.start)
    reached = [p for p in points if p["energy_j"] is not None and p["_target"] <= lat * (1 + 1e-12)]
    energy, how = (reached[-1]["energy_j"], "front") if same and reached else (math.inf, "front")
    if energy > h["energy_j"] * (1 + DOMINANCE_RTOL) and plan.mode == "hierarchical":
        start = model.start if same else plan
        res = optimise(build_joint(scenario, start, lat, start.scheduler))
        energy, how = (res.objective if res.ok else math.inf), ("exact" if same else "own-plan")
    return {"scheduler": h["scheduler"], "latency_s": lat, "energy_j": h["energy_j"],
            "front_energy_j": energy if math.isfinite(energy) else None, "problem": how,
            "dominated": bool(energy <= h["energy_j"] * (1 + DOMINANCE_RTOL))}


def pareto_cell(cell: dict) -> dict:
    """One independent piece of a front, a sweep cell: ``{"scenario": spec, "seed", "e_agg", "kind", ...}`` with
    kind ``heuristic`` (+ ``scheduler``: its placed record), ``least`` (the first point), ``point``
    (+ ``target_s``) or ``check`` (+ ``scheduler`` and the front's ``points``: the dominance record)."""
    scenario = scenario_for_seed(cell["scenario"], cell["seed"])
    if cell["kind"] == "heuristic":
        placed = place_heuristic(scenario, cell["scheduler"], cell["e_agg"], cell["seed"])
        return {k: placed[k] for k in HEURISTIC_FIELDS}
    model = front_model(scenario, cell["e_agg"], cell["seed"])
    if cell["kind"] == "least":
        return least_point(model)
    if cell["kind"] == "point":
        return target_point(model, cell["target_s"])
    placed = place_heuristic(scenario, cell["scheduler"], cell["e_agg"], cell["seed"])
    return check_heuristic(scenario, model, cell["points"], placed)


def run(spec: str, seed: int, e_agg: int, points: int, schedulers, far_s: float | None = None, progress=None, *,
        workers: int = 1, cluster: str | None = None, store=None) -> tuple[list[dict], list[dict], list[dict]]:
    """(front points, placed heuristics, dominance checks) of scenario ``spec`` (drawn with ``seed``) as cells of
    :func:`~.sweep.run_cells` in three waves (heuristics and the least latency; the other points; the checks),
    on ``workers`` local processes or a Dask ``cluster``; with a ``store`` folder each finished cell is kept and
    an interrupted run computes only what is missing."""
    if points < 2:
        raise ConfigError(f"points = {points!r}: must be an integer >= 2 (both ends)")
    base = {"scenario": spec, "content": spec_content(spec), "seed": seed, "e_agg": e_agg}
    sweep = {"workers": workers, "cluster": cluster, "store": store, "progress": progress}
    first_wave = [base | {"kind": "heuristic", "scheduler": name} for name in schedulers] + [base | {"kind": "least"}]
    found, _ = run_cells(pareto_cell, first_wave, **sweep)
    heuristics, first = found[:-1], found[-1]
    slowest = max((h["latency_s"] for h in heuristics), default=0.0)
    rest, _ = run_cells(pareto_cell, [base | {"kind": "point", "target_s": t}
                                      for t in front_targets(first, points, far_s, slowest)], **sweep)
    front_points = [first] + rest[::-1]
    shared = [{k: p[k] for k in ("_target", "energy_j")} for p in front_points]
    checks, _ = run_cells(pareto_cell, [base | {"kind": "check", "scheduler": name, "points": shared}
                                        for name in schedulers], **sweep)
    return front_points, heuristics, checks


def to_json(points: list[dict], heuristics: list[dict]) -> dict:
    """``{"front": [...], "heuristics": [...]}`` with exactly the documented keys."""
    return {"front": [{k: p[k] for k in FRONT_FIELDS} for p in points],
            "heuristics": [{k: h[k] for k in HEURISTIC_FIELDS} for h in heuristics]}


def _csv(rows: list[dict], fields) -> str:
    lines = [",".join(fields)]
    for r in rows:
        lines.append(",".join("" if r.get(f) is None else str(r[f]) for f in fields))
    return "\n".join(lines) + "\n"


def write(points: list[dict], heuristics: list[dict], checks: list[dict], out_dir, title: str = "") -> list[Path]:
    """front.csv, heuristics.csv (with the dominance check) and pareto.png in ``out_dir`` (atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    check = {c["scheduler"]: c for c in checks}
    rows = [{k: h[k] for k in HEURISTIC_FIELDS} | {k: check.get(h["scheduler"], {}).get(k)
                                                   for k in ("front_energy_j", "problem", "dominated")}
            for h in heuristics]
    written = [atomic_write(out / "front.csv", _csv(points, FRONT_FIELDS)),
               atomic_write(out / "heuristics.csv",
                            _csv(rows, HEURISTIC_FIELDS + ("front_energy_j", "problem", "dominated")))]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ok = [p for p in points if p["energy_j"] is not None]
    ax.plot([p["latency_s"] for p in ok], [p["energy_j"] for p in ok], "k-o", ms=4, lw=1.2, label="F4 front")
    bounded = [p for p in ok if p["bound_j"] is not None]
    if bounded:
        ax.plot([p["_target"] for p in bounded], [p["bound_j"] for p in bounded], "k:", lw=1, label="proven bound")
    names = [h["scheduler"] for h in heuristics]
    style = series_style(names, [0])
    for i, h in enumerate(heuristics):
        color, _ = style[h["scheduler"], 0]
        ax.scatter([h["latency_s"]], [h["energy_j"]], color=color, marker=MARKERS[i % len(MARKERS)], s=40,
                   label=h["scheduler"], zorder=3)
    ax.set(xlabel="latency per edge round (s)", ylabel="energy per edge round (J)", yscale="log", title=title)
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=120)
    plt.close(fig)
    atomic_write(out / "pareto.png", image.getvalue())
    written.append(out / "pareto.png")
    return written
