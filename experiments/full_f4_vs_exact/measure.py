"""Full F4 (the alternation, solver "fast") against its exact mode on small random instances.

Per option set it prints the ratio F4 score / exact score (score = energy per edge round - w_U x utility, J) as
mean and max, and how many instances F4 misses by more than 1 %. Run from the repository root:

    python experiments/full_f4_vs_exact/measure.py [--seeds 4] [--out after.json] [--exact-from after.json]

Instances alternate by seed between two families: ``clustered`` (the package's generator) and ``d2d`` (strong D2D
links, weaker uplinks, every device in reach of every edge), each with two trainable modules drawn at random.
``--exact-from`` reuses the exact scores of an earlier run's JSON (to price another F4 against the same optimum).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np

from hffm_opt.evaluate import evaluate
from hffm_opt.formulations.placement import module_value
from hffm_opt.network import generators
from hffm_opt.network.generators import synthetic_catalogue
from hffm_opt.network.scenario import D2DLinks, Devices, EdgeServers, PrototypeConstants, Scenario
from hffm_opt.schedulers.optimising import joint_model
from hffm_opt.solvers import solve

WORSE_RTOL = 0.01  # an instance where F4's score exceeds the exact one by more than this (relative) is a miss
UTILITY_SHARE = 0.3  # w_U prices the start's utility at this share of the start's energy per edge round
SIZES_FIXED = ((2, 2), (2, 3), (3, 2), (2, 2))  # (edges, devices per edge) with a fixed association
SIZES_FREE = ((2, 2),)  # with a free association (the exact mode's limit allows no more)
OPTION_SETS = {
    "coverage cluster": (SIZES_FIXED, dict(coverage="cluster")),
    "coverage cluster + w_U": (SIZES_FIXED, dict(coverage="cluster", w_U=None)),
    "edge_tiers": (SIZES_FIXED, dict(edge_tiers=True)),
    "association optimise": (SIZES_FREE, dict(association="optimise", assoc_candidates=2)),
    "all together": (SIZES_FREE, dict(coverage="cluster", w_U=None, edge_tiers=True, association="optimise",
                                      assoc_candidates=2)),
}


def d2d_scenario(n_e: int, per: int, seed: int) -> Scenario:
    """``n_e`` clusters of ``per`` devices, every device in reach of every edge (its home edge the strongest), D2D
    links inside each cluster 3-30x stronger than the uplinks (gains drawn from ``seed``)."""
    rng = np.random.default_rng(seed)
    n = n_e * per
    edge = np.repeat(np.arange(n_e), per)
    gain = 10 ** rng.uniform(-11.5, -10.5, (n, n_e))
    gain[np.arange(n), edge] = 10 ** rng.uniform(-10.3, -9.7, n)
    devices = Devices(ids=np.arange(n), position_m=np.stack([np.arange(n) * 10.0, np.zeros(n)], 1), edge=edge,
                      cpu_hz=np.full(n, 1e9), flops_per_cycle=np.full(n, 4.0), kappa=np.full(n, 1e-28),
                      memory_bytes=np.full(n, 8e9), pmax_w=np.full(n, 1.0), uplink_gain=gain,
                      modalities=np.ones((n, 2), bool), samples=rng.integers(50, 200, (n, 2)))
    pairs = [(a, b) for e in range(n_e) for a in np.flatnonzero(edge == e) for b in np.flatnonzero(edge == e) if a != b]
    src, dst = (list(x) for x in zip(*pairs))
    edges = EdgeServers(ids=np.arange(n_e), position_m=np.zeros((n_e, 2)), bandwidth_hz=np.full(n_e, per * 1e6),
                        downlink_power_w=np.zeros(n_e), backhaul_delay_s=np.full(n_e, 0.1),
                        backhaul_rate_bps=np.full(n_e, 4e6), backhaul_power_w=np.full(n_e, 0.8))
    proto = PrototypeConstants()
    return Scenario(name=f"d2d-{n_e}x{per}-s{seed}", modalities=("image", "text"), tasks=("vqa", "shape"),
                    modules=synthetic_catalogue(("image", "text"), ("vqa", "shape"), proto.model_bits), edges=edges,
                    devices=devices, d2d=D2DLinks(src=src, dst=dst, gain=10 ** rng.uniform(-9.5, -8.5, len(src)),
                                                  bandwidth_hz=8e6), noise_psd_w_per_hz=1e-20, prototype=proto)


def instance(n_e: int, per: int, seed: int) -> tuple[str, Scenario]:
    """(family, scenario): ``clustered`` for even seeds, ``d2d`` for odd ones, two trainable modules drawn at random
    (three module sets per device)."""
    family = "clustered" if seed % 2 == 0 else "d2d"
    if family == "clustered":
        sc = generators.clustered(n_e, per, seed=seed, spacing_m=800.0, cluster_radius_m=250.0)
    else:
        sc = d2d_scenario(n_e, per, seed)
    rng = np.random.default_rng(seed)
    trainable = np.flatnonzero(sc.module_arrays["trainable"])
    keep = set(rng.choice(trainable, size=2, replace=False).tolist())
    mods = tuple(dataclasses.replace(m, trainable=k in keep) for k, m in enumerate(sc.modules))
    return family, sc.replace(modules=mods)


def score(sc, plan, w_U: float) -> float:
    return evaluate(sc, plan).energy_j - w_U * float((module_value(sc) * plan.train).sum())


def run_one(sc, e_agg: int, options: dict, known: float | None = None) -> dict:
    """F4 and exact on one instance (exact only when its score is not ``known``): their scores, the ratio and the
    run times (s)."""
    if options.get("w_U", 0.0) is None:
        start = joint_model(sc, e_agg=e_agg, target_from="hierarchical").start
        utility = float((module_value(sc) * start.train).sum())
        options = options | {"w_U": UTILITY_SHARE * evaluate(sc, start).energy_j / utility}
    model = joint_model(sc, e_agg=e_agg, target_from="hierarchical", **options)
    t0 = time.perf_counter()
    exact = solve(model, "exact") if known is None else None
    t1 = time.perf_counter()
    f4 = solve(model, "fast")
    t2 = time.perf_counter()
    if not ((exact is None or exact.ok) and f4.ok):
        return {"skipped": f"exact {exact.status}, F4 {f4.status}: {exact.message or f4.message}"}
    best = known if exact is None else score(sc, exact.plan, model.w_U)
    found = score(sc, f4.plan, model.w_U)
    return {"exact": best, "f4": found, "ratio": 1.0 + (found - best) / abs(best), "exact_s": t1 - t0,
            "f4_s": t2 - t1, "f4_stats": {k: v for k, v in f4.stats.items() if isinstance(v, (int, float, bool))}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4, help="seeds per size and e_agg")
    parser.add_argument("--sets", nargs="*", default=list(OPTION_SETS), help="option sets to run")
    parser.add_argument("--out", default=None, help="write every instance's figures to this JSON file")
    parser.add_argument("--exact-from", default=None, help="reuse the exact scores of this earlier --out file")
    parser.add_argument("--f4-only", action="store_true", help="run F4 only (ratios left out; join with --exact-from)")
    args = parser.parse_args()
    known: dict = {}
    if args.exact_from:
        with open(args.exact_from) as fh:
            known = {(r["set"], r["seed"], r["e_agg"]): r["exact"] for r in json.load(fh) if "exact" in r}
    rows = []
    for name in args.sets:
        sizes, options = OPTION_SETS[name]
        for seed in range(args.seeds):
            n_e, per = sizes[seed % len(sizes)]
            for e_agg in (2, 8):
                family, sc = instance(n_e, per, seed)
                row = {"set": name, "family": family, "edges": n_e, "per_edge": per, "seed": seed, "e_agg": e_agg}
                row |= run_one(sc, e_agg, options, np.nan if args.f4_only else known.get((name, seed, e_agg)))
                rows.append(row)
                print(json.dumps({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()
                                  if k != "f4_stats"}), flush=True)
    print(f"\n{'option set':<24} {'n':>3} {'mean ratio':>11} {'max ratio':>10} {'> 1% worse':>11} {'F4 s':>6}"
          f" {'exact s':>8}")
    for name in args.sets:
        done = [r for r in rows if r["set"] == name and "ratio" in r]
        ratios = np.array([r["ratio"] for r in done])
        if not len(done):
            print(f"{name:<24} no instance solved")
            continue
        print(f"{name:<24} {len(done):>3} {ratios.mean():>11.4f} {ratios.max():>10.4f}"
              f" {int((ratios > 1 + WORSE_RTOL).sum()):>11} {np.mean([r['f4_s'] for r in done]):>6.2f}"
              f" {np.mean([r['exact_s'] for r in done]):>8.2f}")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
