"""``hffm-opt plot``: draw a plan on its network (edge servers, clusters, D2D aggregators, relay trees, uplinks)."""

from __future__ import annotations

from .._io import dumps_json
from ..network.io import load_scenario
from ..plan import Plan
from ..schedulers import available, schedule


def _cmd_plot(args) -> int:
    from ..analysis.network_map import draw_network

    scenario = load_scenario(args.scenario)
    plan = Plan.load(args.plan) if args.plan else schedule(scenario, args.scheduler, e_agg=args.e_agg, seed=args.seed)
    counts = draw_network(scenario, plan, args.out)
    print(dumps_json({"out": str(args.out), **counts}))
    return 0


def add_commands(sub) -> None:
    """Add ``plot`` to the ``hffm-opt`` subparsers."""
    p = sub.add_parser("plot", help="draw a plan on its network map (PNG): clusters, aggregators, relay trees, uplinks")
    p.add_argument("--scenario", default="paper", help="embedded scenario name or path (default: paper)")
    p.add_argument("--plan", help="plan JSON to draw (default: run --scheduler)")
    p.add_argument("--scheduler", default="hierarchical-d2d", choices=available(),
                   help="scheduler whose plan is drawn when no --plan is given (default: %(default)s)")
    p.add_argument("--e-agg", type=int, default=8, help="edge rounds per global round for --scheduler")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="PNG file to write")
    p.set_defaults(func=_cmd_plot)
