"""The planning commands of ``hffm-opt``: ``paper``, ``schedule``, ``evaluate``, ``optimize``, ``compare`` and
``bench``. Each is a thin shell over the library."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..analysis.paper_table import PAPER_ROWS, paper_table
from ..errors import ConfigError, PlanError
from ..evaluate import evaluate
from ..network.io import load_scenario, tomllib
from ..plan import Plan
from ..schedulers import available, schedule

_PARSERS: dict[str, argparse.ArgumentParser] = {}  # each command's parser (its defaults), for --config

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


def _progress(enabled: bool):
    """tqdm on stderr when enabled (kept off in --json mode so stdout stays clean)."""
    if not enabled:
        return None
    from tqdm import tqdm

    return lambda it: tqdm(it, file=sys.stderr, leave=False)


def _cmd_optimize(args) -> int:
    from ..schedulers.optimising import joint_model
    from ..solvers import solve

    model = joint_model(load_scenario(args.scenario), e_agg=args.e_agg, target_latency_s=args.target_latency,
                        seed=args.seed, target_from=args.target_from)
    res = solve(model, "exact" if args.exact else args.solver, time_limit=args.time_limit,
                progress=_progress(not args.json))
    out = {"solve": res.summary()}
    if res.ok:
        if args.out:
            res.plan.save(args.out)
        out["metrics"] = res.metrics.summary()
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        gap = "-" if res.gap is None else f"{res.gap:.3%}"
        print(f"{res.status} ({res.backend}, {res.runtime_s:.2f} s): energy per edge round {res.objective} J, proven "
              f"bound {res.bound} J, gap {gap}" + (f"; {res.message}" if res.message else ""))
        if res.ok:
            m = out["metrics"]
            print(f"latency {m['latency_s']:.6g} s, access energy {m['access_energy_j']:.6g} J, backhaul energy "
                  f"{m['backhaul_energy_j']:.6g} J per edge round")
    return 0 if res.ok else (1 if res.status == "infeasible" else 2)


def _apply_config(args, section: str) -> None:
    """Fill the options left at their defaults from the ``[section]`` table of ``--config FILE.toml`` (options given
    on the command line win; lists are joined with commas; a relative scenario path that exists next to the file
    resolves against the file's folder)."""
    if not args.config:
        return
    parser = _PARSERS[section]
    path = Path(args.config)
    try:
        table = tomllib.loads(path.read_text())[section]
    except FileNotFoundError:
        raise ConfigError(f"config = {args.config!r}: no such file") from None
    except KeyError:
        raise ConfigError(f"config = {args.config!r}: has no [{section}] table") from None
    for key, value in table.items():
        name = key.replace("-", "_")
        if name in ("config", "func") or not hasattr(args, name):
            raise ConfigError(f"config [{section}].{key} = {value!r}: not an option of '{section}'")
        if name == "scenario":
            value = [str(path.parent / v) if (path.parent / v).is_file() else v for v in value]
        elif isinstance(value, list):
            value = ",".join(str(v) for v in value)
        if getattr(args, name) == parser.get_default(name):
            setattr(args, name, value)


def _cmd_compare(args) -> int:
    from ..analysis import compare

    _apply_config(args, "compare")
    args.scenario = args.scenario or ["paper"]
    rows = compare.run(args.scenario, args.schedulers.split(","), list(range(args.seeds)),
                       [int(v) for v in args.e_agg.split(",")], progress=_progress(not args.json))
    summary = compare.summarise(rows, args.reference)
    if args.out:
        compare.write(rows, summary, args.out)
    if args.json:
        print(json.dumps(compare.to_json(rows, summary)))
        return 0
    cols = ["scheduler", "e_agg", "n", "latency_s_mean", "latency_s_ci95", "energy_j_mean", "energy_j_ci95",
            "access_energy_j_mean", "latency_ratio", "access_energy_ratio"]
    with __import__("pandas").option_context("display.width", 200, "display.max_columns", 20):
        print(summary[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if args.out:
        print(f"written to {args.out}/ (rows.csv, summary.csv, compare.json, pareto.png)")
    return 0


def _cmd_bench(args) -> int:
    if args.learner:
        from ..analysis.learner_bench import cmd_bench_learner

        return cmd_bench_learner(args)
    from ..analysis import bench
    from ..analysis.allocation_bench import bench_allocation

    _apply_config(args, "bench")
    sizes = [int(v) for v in args.sizes.split(",")]
    out = {"schedulers": bench.bench_schedulers(sizes, progress=_progress(not args.json))}
    out["allocation"] = bench_allocation(sizes=tuple(sorted(set(sizes) | {1000})))
    out["dynamic"] = bench.bench_dynamic()
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"{'devices':>8}{'edges':>6}  {'scheduler':<10}{'solver':<8}{'build s':>9}{'solve s':>9}{'latency s':>11}"
          f"{'energy J':>11}  gap")
    for r in out["schedulers"]:
        gap = "-" if r["gap"] is None else f"{r['gap']:.2%}"
        print(f"{r['n_devices']:>8}{r['n_edges']:>6}  {r['scheduler']:<10}{r['solver']:<8}{r['build_s']:>9.3f}{r['solve_s']:>9.3f}"
              f"{r['latency_s']:>11.3f}{r['energy_j']:>11.3f}  {gap}")
    for r in out["allocation"]:
        cvx = f"skipped ({r['cvxpy_skipped']})" if r["max_rel_diff"] is None else (
            f"{r['cvxpy_s']:.3f} s, {r['speedup']:.0f}x, max relative difference {r['max_rel_diff']:.2g}")
        print(f"F3 allocation, {r['n_devices']} devices: fast {r['fast_s']:.4f} s, cvxpy:CLARABEL {cvx}")
    d = out["dynamic"]
    print(f"dynamic channels, {d['n_devices']} devices: re-solve {d['resolve_s_mean']:.3f} s per round (max "
          f"{d['resolve_s_max']:.3f}) against a round latency of {d['round_latency_s_mean']:.3f} s")
    return 0


def add_commands(sub) -> None:
    """Add ``paper``, ``schedule``, ``optimize``, ``compare``, ``bench`` and ``evaluate`` to the subparsers."""

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

    p = sub.add_parser("optimize", help="F4: least energy per edge round within a latency target; save the plan")
    p.add_argument("--scenario", default="paper")
    p.add_argument("--e-agg", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target-latency", type=float, help="latency per edge round (s) not to exceed")
    p.add_argument("--target-from", default="hierarchical-d2d",
                   help="without --target-latency: match this heuristic's latency, or 'fastest' (default: %(default)s)")
    p.add_argument("--solver", default="highs", choices=["highs", "gurobi", "fast", "exact"],
                   help="F4 with F2 MILPs on HiGHS/Gurobi in small clusters, F4 without MILPs, or exact enumeration")
    p.add_argument("--time-limit", type=float, default=60.0, help="time limit of each MILP solve (s)")
    p.add_argument("--exact", action="store_true", help="same as --solver exact (small instances only)")
    p.add_argument("--json", action="store_true", help="print the SolveResult and the metrics as JSON")
    p.add_argument("--out", help="write the plan as JSON here")
    p.set_defaults(func=_cmd_optimize)

    p = sub.add_parser("compare", help="schedulers x scenarios x seeds into one table with 95%% CIs")
    p.add_argument("--scenario", action="append", default=None,
                   help="embedded name, file, generator .toml or 'paper-random' (repeatable; default paper)")
    p.add_argument("--schedulers", default="hierarchical,hierarchical-d2d,greedy,optimal")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (0..N-1)")
    p.add_argument("--e-agg", default="2,8", help="comma-separated E_agg values")
    p.add_argument("--reference", default="hierarchical-d2d")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", help="directory for CSV, JSON and the Pareto plot")
    p.add_argument("--config", help="TOML file whose [compare] table replaces these options")
    p.set_defaults(func=_cmd_compare)
    _PARSERS["compare"] = p

    p = sub.add_parser("bench", help="scheduler, allocation and dynamic re-solve benchmarks across sizes")
    p.add_argument("--sizes", default="40,400,4000,10000", help="comma-separated device counts")
    p.add_argument("--learner", action="store_true", help="only the learner benchmark (trainer vs central, round time)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--config", help="TOML file whose [bench] table replaces these options")
    p.set_defaults(func=_cmd_bench)
    _PARSERS["bench"] = p

    p = sub.add_parser("evaluate", help="check a saved plan and price it in both accountings")
    p.add_argument("--scenario", default="paper")
    p.add_argument("--plan", required=True, help="plan JSON written by 'schedule --out' or 'optimize --out'")
    p.set_defaults(func=_cmd_evaluate)
