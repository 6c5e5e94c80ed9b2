"""The ``hffm-opt`` command line. Each subcommand is a thin shell over the library; errors in the user's input
(missing file, invalid scenario or plan) print one clear line to stderr and exit with code 2."""

from __future__ import annotations

import argparse
import json
import sys

from .evaluate import evaluate
from .plan import Plan, PlanError
from .scenario import ScenarioError
from .scenario_io import load_scenario
from .schedulers import available, schedule

# (method key of the JSON output, display name, scheduler, e_agg) of the paper's Table I
PAPER_ROWS = (("star", "Star", "star", 1), ("hier", "HF-FM", "hierarchical", 2), ("hier", "HF-FM", "hierarchical", 8),
              ("edge", "Edge only", "edge-only", 200), ("hier-d2d", "HF-FM+D2D", "hierarchical-d2d", 2),
              ("hier-d2d", "HF-FM+D2D", "hierarchical-d2d", 8), ("edge-d2d", "Edge only+D2D", "edge-only-d2d", 200))


def paper_table(scenario, seed: int = 0) -> list[dict]:
    """The paper's Table I rows: latency (s) and energy (J) per edge round, paper and consistent accounting."""
    rows = []
    for key, _, name, e_agg in PAPER_ROWS:
        plan = schedule(scenario, name, e_agg=e_agg, seed=seed)
        p, c = evaluate(scenario, plan, "paper"), evaluate(scenario, plan)
        rows.append({"method": key, "e_agg": e_agg, "latency_s": p.latency_s, "energy_j": p.energy_j,
                     "latency_s_consistent": c.latency_s, "energy_j_consistent": c.energy_j})
    return rows


def _cmd_paper(args) -> int:
    rows = paper_table(load_scenario(args.scenario), seed=args.seed)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'method':<15}{'E_agg':>6} | {'paper: latency s':>17}{'energy J':>10} | {'consistent: latency s':>22}{'energy J':>10}")
    for (_, label, _, _), r in zip(PAPER_ROWS, rows):
        print(f"{label:<15}{r['e_agg']:>6} | {r['latency_s']:>17.2f}{r['energy_j']:>10.2f} | "
              f"{r['latency_s_consistent']:>22.2f}{r['energy_j_consistent']:>10.2f}")
    print("(per edge round; 'paper' = the prototype's accounting, 'consistent' = one power per link, compute included)")
    return 0


def _cmd_schedule(args) -> int:
    scenario = load_scenario(args.scenario)
    plan = schedule(scenario, args.scheduler, e_agg=args.e_agg, seed=args.seed)
    metrics = evaluate(scenario, plan)
    if args.out:
        plan.save(args.out)
    print(json.dumps({"scheduler": args.scheduler, **metrics.summary()}, indent=1))
    return 0


def _cmd_evaluate(args) -> int:
    scenario = load_scenario(args.scenario)
    try:
        plan = Plan.load(args.plan)
    except FileNotFoundError:
        raise PlanError(f"plan = {args.plan!r}: no such file") from None
    except (ValueError, TypeError) as exc:
        raise PlanError(f"plan file {args.plan!r} = <unreadable>: {exc}") from None
    out = {acc: evaluate(scenario, plan, acc).summary() for acc in ("consistent", "paper")}
    print(json.dumps(out, indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hffm-opt", description="Plan and compare hierarchical federated "
                                     "foundation-model training over wireless fog/edge networks.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("paper", help="the paper's Table I (latency and energy per edge round) in both accountings")
    p.add_argument("--scenario", default="paper", help="embedded scenario name or path (default: paper)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random D2D aggregator when none is recorded")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(func=_cmd_paper)

    p = sub.add_parser("schedule", help="run one scheduler, print its metrics, optionally save the plan")
    p.add_argument("--scenario", default="paper")
    p.add_argument("--scheduler", default="hierarchical", choices=available())
    p.add_argument("--e-agg", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the plan as JSON here")
    p.set_defaults(func=_cmd_schedule)

    p = sub.add_parser("evaluate", help="check a saved plan and price it in both accountings")
    p.add_argument("--scenario", default="paper")
    p.add_argument("--plan", required=True, help="plan JSON written by 'schedule --out' or 'optimize --out'")
    p.set_defaults(func=_cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ScenarioError, PlanError) as exc:
        print(f"hffm-opt {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
