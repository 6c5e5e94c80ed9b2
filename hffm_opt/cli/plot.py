"""``hffm-opt plot``: draw a plan on its network (edge servers, clusters, D2D aggregators, relay trees, uplinks)."""

from __future__ import annotations

from contextlib import nullcontext

from .._io import dumps_json
from ..errors import ConfigError
from ..network.io import load_scenario
from ..plan import Plan, plan_file
from ..schedulers import available, schedule
from .args import scheduler_e_agg

PLOT_SCHEDULER, PLOT_E_AGG = "hierarchical-d2d", 8  # the plan drawn without --plan


def _cmd_plot(args) -> int:
    from ..analysis.network_map import draw_network

    given = [f for f, v in (("--scheduler", args.scheduler), ("--e-agg", args.e_agg), ("--seed", args.seed))
             if v is not None]
    if args.plan and given:
        raise ConfigError(f"{given[0]}: makes a plan when no --plan is given; the plan file is drawn as it is")
    scenario = load_scenario(args.scenario)
    args.scheduler = args.scheduler or PLOT_SCHEDULER
    plan = Plan.load(args.plan) if args.plan else schedule(scenario, args.scheduler,
                                                           e_agg=scheduler_e_agg(args, PLOT_E_AGG), seed=args.seed or 0)
    with plan_file(args.plan) if args.plan else nullcontext():  # a plan file's faults name the file, as in evaluate
        counts = draw_network(scenario, plan, args.out)
    print(dumps_json({"out": str(args.out), **counts}))
    return 0


def add_commands(sub) -> None:
    """Add ``plot`` to the ``hffm-opt`` subparsers."""
    p = sub.add_parser("plot", help="draw a plan on its network map (PNG): clusters, aggregators, relay trees, uplinks")
    p.add_argument("--scenario", default="paper", help="embedded scenario name or path (default: paper)")
    p.add_argument("--plan", help="plan JSON to draw (default: run --scheduler)")
    p.add_argument("--scheduler", default=None, choices=available(),
                   help=f"scheduler whose plan is drawn when no --plan is given (default: {PLOT_SCHEDULER})")
    p.add_argument("--e-agg", type=int, default=None,
                   help=f"edge rounds per global round for --scheduler (default: {PLOT_E_AGG})")
    p.add_argument("--seed", type=int, default=None, help="seed of --scheduler (default: 0)")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.set_defaults(func=_cmd_plot)
