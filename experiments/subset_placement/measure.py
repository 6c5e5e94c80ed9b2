"""Full F4 with module subsets free (coverage "cluster") on clustered draws too large to enumerate: energy per
edge round, proven bound, gap on the whole objective and on its controllable part, time.

    python experiments/subset_placement/measure.py --seeds 3 --sizes 4x5,4x10,10x20 --e-aggs 2,8 [--json out.json]

Uses only the public API, so the same script measures an older checkout (``PYTHONPATH=<old checkout>``).
Prints one line per instance and the mean over seeds per (size, E_agg).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from hffm_opt import evaluate, schedule
from hffm_opt.network import generators


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--sizes", default="4x5,4x10,10x20", help="EDGESxDEVICES_PER_EDGE, comma-separated")
    ap.add_argument("--e-aggs", default="2,8")
    ap.add_argument("--json", default=None, help="write every instance's figures here")
    args = ap.parse_args()
    rows = []
    for size in args.sizes.split(","):
        n_e, per = (int(x) for x in size.split("x"))
        for e_agg in (int(x) for x in args.e_aggs.split(",")):
            for seed in range(args.seeds):
                sc = generators.clustered(n_e, per, seed=seed)
                t0 = time.perf_counter()
                plan = schedule(sc, "optimal", e_agg=e_agg, seed=seed, coverage="cluster")
                took = time.perf_counter() - t0
                meta = plan.meta
                row = {"size": size, "e_agg": e_agg, "seed": seed, "energy_j": evaluate(sc, plan).energy_j,
                       "bound_j": meta.get("bound"), "gap": meta.get("gap"),
                       "gap_controllable": meta.get("gap_controllable"), "status": meta.get("status"),
                       "trained_modules": int(plan.train.sum()), "seconds": took}
                rows.append(row)
                print(json.dumps(row), flush=True)
    print("\nsize, E_agg: mean energy J | mean gap | mean gap_controllable | mean s")
    for size in args.sizes.split(","):
        for e_agg in (int(x) for x in args.e_aggs.split(",")):
            sel = [r for r in rows if r["size"] == size and r["e_agg"] == e_agg]
            gaps = [r["gap"] for r in sel if r["gap"] is not None]
            ctl = [r["gap_controllable"] for r in sel if r["gap_controllable"] is not None]
            print(f"{size}, {e_agg}: {np.mean([r['energy_j'] for r in sel]):.6g} | "
                  f"{np.mean(gaps) if gaps else float('nan'):.4f} | {np.mean(ctl) if ctl else float('nan'):.4f} | "
                  f"{np.mean([r['seconds'] for r in sel]):.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
