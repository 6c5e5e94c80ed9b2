"""Least latency per edge round of `optimal` on the paper scenario with placement and tiers fixed or free:
latency, proven floor, status, energy, time.

    python experiments/subset_placement/latency.py [--e-aggs 2,8]

Uses only the public API, so the same script measures an older checkout (``PYTHONPATH=<old checkout>``).
"""

from __future__ import annotations

import argparse
import time

from hffm_opt import evaluate, load_scenario, schedule

OPTIONS = {"fixed": {}, "edge tiers": {"edge_tiers": True}, "coverage cluster": {"coverage": "cluster"},
           "both": {"coverage": "cluster", "edge_tiers": True}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--e-aggs", default="2,8")
    ap.add_argument("--scenario", default="paper")
    args = ap.parse_args()
    scenario = load_scenario(args.scenario)
    print("options | E_agg | latency s | floor s | status | energy J | solve s")
    for name, options in OPTIONS.items():
        for e_agg in (int(x) for x in args.e_aggs.split(",")):
            t0 = time.perf_counter()
            plan = schedule(scenario, "optimal", e_agg=e_agg, objective="latency", **options)
            took = time.perf_counter() - t0
            m = evaluate(scenario, plan)
            bound = plan.meta.get("bound")
            print(f"{name} | {e_agg} | {m.latency_s:.4f} | {'-' if bound is None else f'{bound:.4f}'} | "
                  f"{plan.meta.get('status')} | {m.energy_j:.4g} | {took:.1f}", flush=True)


if __name__ == "__main__":
    main()
