"""``hffm-opt pareto``: F4's latency-energy front (epsilon-constraint) with the heuristics on the same plane."""

from __future__ import annotations

import sys
from pathlib import Path

from .._io import dumps_json
from ..analysis.compare import scenario_for_seed
from ..network.limits import MAX_E_AGG
from .args import add_sweep_flags, count, names, out_path, real, seed


def _cell_counter(enabled: bool):
    """For :func:`~hffm_opt.analysis.sweep.run_cells`: a tqdm bar of each wave's cells (stderr), or None."""
    if not enabled:
        return None
    from tqdm import tqdm

    return lambda total: tqdm(total=total, desc="front cells", unit="cell", file=sys.stderr, leave=False).update


def _heuristics() -> list[str]:
    """The schedulers ``--schedulers`` may place: every registered one that is not an optimiser."""
    from ..analysis.pareto import heuristic_names

    return heuristic_names()


def _cmd_pareto(args) -> int:
    from ..analysis import pareto  # the solver stack (cvxpy, pyomo) loads only for this command

    schedulers = list(args.schedulers) if args.schedulers is not None else pareto.heuristic_names()
    scenario = scenario_for_seed(args.scenario, args.seed)  # checked before any work
    if not args.json:
        print(f"placing {len(schedulers)} heuristics, solving F4's front ...", file=sys.stderr)
    points, heuristics, checks = pareto.run(
        args.scenario, args.seed, args.e_agg, args.points, schedulers, args.max_latency, _cell_counter(not args.json),
        workers=args.workers, cluster=args.cluster, store=Path(args.out) / "cells" if args.out else None)
    if args.out:
        pareto.write(points, heuristics, checks, args.out, f"{scenario.name}, E_agg = {args.e_agg}")
    if args.json:
        print(dumps_json(pareto.to_json(points, heuristics)))
        return 0
    print(f"F4 front of {scenario.name}, E_agg = {args.e_agg} (per edge round)")
    print(f"{'latency s':>11}{'energy J':>11}{'access J':>11}{'bound J':>11}{'gap':>9}  status")
    for p in points:
        gap = "-" if p["gap"] is None else f"{p['gap']:.2%}"
        cells = [f"{p[k]:>11.4f}" if p[k] is not None else f"{'-':>11}"
                 for k in ("latency_s", "energy_j", "access_energy_j", "bound_j")]
        print("".join(cells) + f"{gap:>9}  {p['status']}")
    print(f"\n{'heuristic':<18}{'latency s':>11}{'energy J':>11}{'front J':>11}  dominated")
    for c in checks:
        front_j = "-" if c["front_energy_j"] is None else f"{c['front_energy_j']:.4f}"
        print(f"{c['scheduler']:<18}{c['latency_s']:>11.4f}{c['energy_j']:>11.4f}{front_j:>11}  "
              f"{'yes' if c['dominated'] else 'NO'} ({c['problem']})")
    if args.out:
        print(f"written to {args.out}/ (front.csv, heuristics.csv, pareto.png)")
    return 0


def add_commands(sub) -> None:
    """Add ``pareto`` to the ``hffm-opt`` subparsers."""
    p = sub.add_parser("pareto", help="F4's latency-energy front (epsilon-constraint) and the heuristics beside it")
    p.add_argument("--scenario", default="paper",
                   help="embedded name, file, generator .toml or 'paper-random' (drawn with --seed; default paper)")
    p.add_argument("--e-agg", type=count(1, MAX_E_AGG), default=8, help="edge rounds per global round (default 8)")
    p.add_argument("--points", type=count(2, 1000), default=12, help="front points, both ends included (default 12)")
    p.add_argument("--schedulers", type=names(_heuristics), default=None,
                   help="comma-separated heuristics to place (default: every registered scheduler that is not an "
                        "optimiser)")
    p.add_argument("--max-latency", type=real(0.0, 1e9), default=None,
                   help="far end of the front (s per edge round, above the least latency; default: the slowest "
                        "heuristic's latency, at least twice the least latency)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the schedulers (and of a paper-random draw)")
    p.add_argument("--json", action="store_true", help='print {"front": [...], "heuristics": [...]} only')
    p.add_argument("--out", type=out_path("folder"),
                   help="folder for front.csv, heuristics.csv and pareto.png; finished cells are kept in OUT/cells/, "
                        "so the same command re-run after an interruption only computes what is missing")
    add_sweep_flags(p)
    p.set_defaults(func=_cmd_pareto)
