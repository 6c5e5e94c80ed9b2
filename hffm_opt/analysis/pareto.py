"""The latency-energy front of F4 by the epsilon-constraint method, and the heuristics on the same plane.

All figures per edge round in the consistent accounting of ``evaluate``: latency (s), energy (J), access energy
(devices' uplink + D2D, J). The front runs from the least latency (F4's latency objective: its least-energy plan
there) to the far end, the slowest placed heuristic's latency (or ``max_latency_s``; at least twice the least
latency): the energy only approaches its infimum as the target grows, so the far end is where the plane's
heuristics end. Its points are evenly spaced targets, each the least energy within that target, with its proven
lower bound, gap and status; they are solved from the far end down so that each reuses the energies priced before
as proven floors.

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
from .compare import MARKERS, series_style

FRONT_FIELDS = ("latency_s", "energy_j", "access_energy_j", "bound_j", "gap", "status")
HEURISTIC_FIELDS = ("scheduler", "latency_s", "energy_j", "access_energy_j")
DOMINANCE_RTOL = 1e-6  # the inner solvers keep a relative margin of 1e-6 below each target


def heuristic_names() -> list[str]:
    """Every registered scheduler that is not an optimiser (``is_optimiser`` unset): baselines, heuristics,
    local search, plug-ins."""
    return [name for name in available() if not getattr(get_scheduler(name), "is_optimiser", False)]


def place_heuristics(scenario: Scenario, names, e_agg: int, seed: int) -> list[dict]:
    """Each scheduler's plan priced by ``evaluate`` (with ``_plan`` kept for the dominance check)."""
    out = []
    for name in names:
        plan = schedule(scenario, name, e_agg=e_agg, seed=seed)
        m = evaluate(scenario, plan)
        out.append({"scheduler": name, "latency_s": m.latency_s, "energy_j": m.energy_j,
                    "access_energy_j": m.access_energy_j, "_plan": plan})
    return out


def _point(res) -> dict:
    m = res.metrics if res.ok else None
    return {"latency_s": m.latency_s if m else None, "energy_j": res.stats.get("energy_j", res.objective) if m else None,
            "access_energy_j": m.access_energy_j if m else None,
            "bound_j": res.stats.get("energy_bound_j", res.bound), "gap": None,
            "status": res.stats.get("energy_status", res.status.value),
            "_target": res.stats.get("target_latency_s")}


def front(scenario: Scenario, e_agg: int, points: int, seed: int = 0, far_s: float | None = None,
          progress=None) -> tuple[list[dict], object]:
    """The front's points (least latency first) and the F4 model it was solved on."""
    if points < 2:
        raise ConfigError(f"points = {points!r}: must be an integer >= 2 (both ends)")
    model = joint_model(scenario, e_agg=e_agg, seed=seed, objective="latency")
    known: dict = {}
    least = optimise(model, known=known)
    if not least.ok:
        raise ConfigError(f"scenario {scenario.name!r}: F4 finds no plan at any latency ({least.message})")
    first = _point(least)
    first["gap"] = _gap(first)
    low = first["_target"]
    high = max(far_s or 0.0, 2 * low)
    targets = np.linspace(low, high, points)[1:][::-1]
    rest = []
    for target in (progress(targets) if progress else targets):
        rest.append(_point(optimise(model.at_target(float(target)), known=known)))
        rest[-1]["gap"] = _gap(rest[-1])
    return [first] + rest[::-1], model


def _gap(point: dict) -> float | None:
    if point["energy_j"] is None or point["bound_j"] is None:
        return None
    return abs(point["energy_j"] - point["bound_j"]) / max(abs(point["energy_j"]), 1e-9)


def _same_problem(plan, start) -> bool:
    return (plan.mode == start.mode and plan.e_agg == start.e_agg and np.array_equal(plan.train, start.train)
            and np.array_equal(plan.tier, start.tier) and np.array_equal(plan.association, start.association))


def dominance(scenario: Scenario, model, points: list[dict], heuristics: list[dict]) -> list[dict]:
    """Per heuristic: the energy the front reaches at its latency, how it was found, and whether it dominates."""
    out = []
    for h in heuristics:
        lat, plan = h["latency_s"], h["_plan"]
        same = plan.mode != "hierarchical" or _same_problem(plan, model.start)
        reached = [p for p in points if p["energy_j"] is not None and p["_target"] <= lat * (1 + 1e-12)]
        energy, how = (reached[-1]["energy_j"], "front") if same and reached else (math.inf, "front")
        if energy > h["energy_j"] * (1 + DOMINANCE_RTOL) and plan.mode == "hierarchical":
            start = model.start if same else plan
            res = optimise(build_joint(scenario, start, lat, start.scheduler))
            energy, how = (res.objective if res.ok else math.inf), ("exact" if same else "own-plan")
        out.append({"scheduler": h["scheduler"], "latency_s": lat, "energy_j": h["energy_j"],
                    "front_energy_j": energy if math.isfinite(energy) else None, "problem": how,
                    "dominated": bool(energy <= h["energy_j"] * (1 + DOMINANCE_RTOL))})
    return out


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
