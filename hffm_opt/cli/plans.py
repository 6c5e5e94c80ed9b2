"""The planning commands of ``hffm-opt``: ``paper``, ``schedule``, ``evaluate``, ``optimize``, ``compare`` and
``bench``. Each is a thin shell over the library; every flag has its rule (:mod:`.args`), every input is read and
checked before any work, and every JSON text is strict (:func:`hffm_opt._io.dumps_json`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .._io import dumps_json
from ..analysis.paper_table import PAPER_ROWS, paper_table
from ..errors import ConfigError, PlanError
from ..evaluate import evaluate
from ..formulations.joint import OBJECTIVE_DATA
from ..network.documents import as_bool, as_table, check_keys, hint, read_document, short
from ..network.io import load_scenario
from ..network.limits import MAX_E_AGG
from ..plan import Plan
from ..schedulers import available, get_scheduler, schedule
from ..schedulers.optimising import TARGET_FROM
from .args import add_sweep_flags, count, counts, names, out_path, real, scheduler_e_agg, seed

MAX_BENCH_DEVICES = 100_000  # the largest size `bench` builds (a clustered scenario, analysis.bench.size_layout)

_PARSERS: dict[str, argparse.ArgumentParser] = {}  # each command's parser (its defaults), for --config
SCHEDULE_E_AGG = 2  # schedule's E_agg without --e-agg
CONFIG_SECTIONS = ("compare", "bench")  # the tables an experiment config (--config of compare and bench) may hold

def _cmd_paper(args) -> int:
    rows = paper_table(load_scenario(args.scenario), seed=args.seed)
    if args.json:
        print(dumps_json(rows, indent=1))
        return 0
    print(f"{'method':<15}{'E_agg':>6} | {'paper: latency s':>17}{'energy J':>10} | {'consistent: latency s':>22}{'energy J':>10}")
    for (_, label, _, _), r in zip(PAPER_ROWS, rows):
        print(f"{label:<15}{r['e_agg']:>6} | {r['latency_s']:>17.2f}{r['energy_j']:>10.2f} | "
              f"{r['latency_s_consistent']:>22.2f}{r['energy_j_consistent']:>10.2f}")
    print("(per edge round; 'paper' = the prototype's accounting, 'consistent' = one power per link, compute included)")
    return 0


def _cmd_schedule(args) -> int:
    scenario = load_scenario(args.scenario)
    plan = schedule(scenario, args.scheduler, e_agg=scheduler_e_agg(args, SCHEDULE_E_AGG), seed=args.seed)
    metrics = evaluate(scenario, plan)
    text = dumps_json({"scheduler": args.scheduler, **metrics.summary()}, indent=1)
    if args.out:
        plan.save(args.out)
    print(text)
    return 0


def _cmd_evaluate(args) -> int:
    scenario = load_scenario(args.scenario)
    plan = Plan.load(args.plan)
    try:
        out = {acc: evaluate(scenario, plan, acc).summary() for acc in ("consistent", "paper")}
    except PlanError as exc:
        raise PlanError(f"plan file {args.plan!r}: {exc}") from None
    print(dumps_json(out, indent=1))
    return 0


def _progress(enabled: bool):
    """tqdm on stderr when enabled (kept off in --json mode so stdout stays clean)."""
    if not enabled:
        return None
    from tqdm import tqdm

    return lambda it: tqdm(it, file=sys.stderr, leave=False)


def _cell_counter(enabled: bool):
    """For :func:`~hffm_opt.analysis.sweep.run_cells`: a tqdm bar of the cells to compute (stderr), or None."""
    if not enabled:
        return None
    from tqdm import tqdm

    return lambda total: tqdm(total=total, desc="cells", unit="cell", file=sys.stderr, leave=False).update


OBJECTIVE_LABELS = {"energy": ("energy per edge round", " J"), "latency": ("latency per edge round", " s"),
                    "weighted": ("w_latency x latency + w_energy x energy per edge round", "")}


OPTIMIZE_FLAG_USE = {  # flag destination -> (the objectives it applies to, the solvers it applies to)
    **{flag: (OBJECTIVE_DATA[datum], None) for flag, datum in (("target_latency", "target_latency_s"),
                                                                ("energy_budget", "energy_budget_j"),
                                                                ("w_latency", "w_latency"), ("w_energy", "w_energy"))},
    "target_from": (("energy",), None), "w_u": (("energy",), None),  # the reference latency; w_U (joint_model)
    "time_limit": (None, ("highs", "gurobi")),  # of each F2 MILP
}


def _check_optimize_flags(args) -> None:
    """Refuse, before any work, a flag of ``optimize`` that the chosen objective or solver would ignore, a missing
    weight of ``--objective weighted`` and ``--exact`` beside another ``--solver``."""
    solver = "exact" if args.exact else args.solver
    if args.exact and "solver" in args.given and args.solver != "exact":
        raise ConfigError(f"--exact: the same as --solver exact, so it cannot go with --solver {args.solver}")
    for dest, (objectives, solvers) in OPTIMIZE_FLAG_USE.items():
        if dest not in args.given:
            continue
        flag = "--" + dest.replace("_", "-")
        if objectives is not None and args.objective not in objectives:
            raise ConfigError(f"{flag} = {getattr(args, dest)!r}: only with --objective {' or '.join(objectives)} "
                              f"(--objective {args.objective} would ignore it)")
        if solvers is not None and solver not in solvers:
            raise ConfigError(f"{flag} = {getattr(args, dest)!r}: only with --solver {' or '.join(solvers)} (the MILPs"
                              f" it limits; --solver {solver} solves none)")
    if "target_latency" in args.given and "target_from" in args.given:
        raise ConfigError(f"--target-from = {args.target_from!r}: only without --target-latency (the target is given)")
    if args.objective == "weighted":
        missing = [f for f, d in (("--w-latency", "w_latency"), ("--w-energy", "w_energy")) if getattr(args, d) is None]
        if missing:
            raise ConfigError(f"{missing[0]}: required with --objective weighted (the objective is --w-latency x "
                              "latency + --w-energy x energy)")


def _cmd_optimize(args) -> int:
    from ..schedulers.optimising import joint_model
    from ..solvers import solve

    _check_optimize_flags(args)
    model = joint_model(load_scenario(args.scenario), e_agg=args.e_agg, target_latency_s=args.target_latency,
                        seed=args.seed, target_from=args.target_from, objective=args.objective,
                        energy_budget_j=args.energy_budget, w_latency=args.w_latency, w_energy=args.w_energy,
                        coverage=args.coverage, w_U=args.w_u, edge_tiers=args.edge_tiers,
                        association=args.association)
    res = solve(model, "exact" if args.exact else args.solver, time_limit=args.time_limit,
                progress=_progress(not args.json))
    out = {**res.summary(), "solve_s": res.runtime_s}  # the Result at top level, then the plan's metrics
    if res.ok:
        out["metrics"] = res.metrics.summary()
        if args.out:
            res.plan.for_scenario(model.scenario).save(args.out)
    if args.json:
        print(dumps_json(out, indent=1))
    else:
        gap = "-" if res.gap is None else f"{res.gap:.3%}"
        what, unit = OBJECTIVE_LABELS[args.objective]
        bound = "none" if res.bound is None else f"{res.bound}{unit}"
        value = "none" if res.objective is None else f"{res.objective}{unit}"
        print(f"{res.status} ({res.backend}, {res.runtime_s:.2f} s): {what} {value}, proven "
              f"bound {bound}, gap {gap}" + (f"; {res.message}" if res.message else ""))
        if res.ok:
            m = out["metrics"]
            print(f"latency {m['latency_s']:.6g} s, access energy {m['access_energy_j']:.6g} J, backhaul energy "
                  f"{m['backhaul_energy_j']:.6g} J per edge round")
    return 0 if res.ok else (1 if res.status == "infeasible" else 2)


def _config_value(parser: argparse.ArgumentParser, dest: str, value, where: str, folder: Path):
    """A value of an experiment config converted and checked as its command-line flag would be (same rule)."""
    action = next(a for a in parser._actions if a.dest == dest)
    if isinstance(action, argparse._StoreTrueAction):
        return as_bool(value, where, ConfigError)
    if dest == "scenario":  # repeatable: a name or a list of names; a relative file resolves next to the config
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(v, str) and v for v in items):
            raise ConfigError(f"{where} = {short(value)}: must be a scenario name or path, or a list of them")
        return [str(folder / v) if (folder / v).is_file() else v for v in items]
    kind = getattr(action.type, "__name__", "string")
    wanted = {"list": "a non-empty list", "count": "an integer", "seed": "an integer", "number": "a number"}.get(
        kind, "a string")
    given_kind = "list" if isinstance(value, list) else "number" if isinstance(value, (int, float)) else "string"
    if (isinstance(value, (bool, dict)) or (kind == "list") != isinstance(value, list) or not value and kind == "list"
            or kind in ("count", "seed", "number") and given_kind == "string"):
        raise ConfigError(f"{where} = {short(value)}: must be {wanted}, as the flag --{dest.replace('_', '-')} takes")
    text = ",".join(str(v) for v in value) if isinstance(value, list) else str(value)
    if action.type is None:
        return text
    try:
        return action.type(text)
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(f"{where} = {exc}") from None


def _apply_config(args, section: str) -> None:
    """Fill the options not given on the command line from the ``[section]`` table of ``--config FILE.toml`` (a flag
    given wins, even at its default value; lists are joined with commas; a relative scenario path that exists next
    to the file resolves against the file's folder). Every key and value is checked as its flag would be, before
    any work."""
    if not args.config:
        return
    parser = _PARSERS[section]
    label = f"config file {args.config!r}"
    doc = read_document(args.config, "config", ConfigError)
    try:
        check_keys(doc, "", CONFIG_SECTIONS, ConfigError)
        if section not in doc:
            raise ConfigError(f"[{section}] = <missing>: the config has no [{section}] table (it has "
                              f"{', '.join(f'[{k}]' for k in doc) or 'none'})")
        options = {a.dest for a in parser._actions if a.option_strings and a.dest not in ("help", "config")}
        table = as_table(doc[section], f"[{section}]", ConfigError)
        for key in table:
            if key.replace("-", "_") not in options:
                raise ConfigError(f"[{section}].{key} = {short(table[key])}: not an option of '{section}'"
                                  f"{hint(key.replace('-', '_'), options)}; options: {sorted(options)}")
        spelled = {}
        for key, value in table.items():
            name = key.replace("-", "_")
            if name in spelled:
                raise ConfigError(f"[{section}].{key} = {short(value)}: the same option as [{section}].{spelled[name]}"
                                  " (give it once)")
            spelled[name] = key
            value = _config_value(parser, name, value, f"[{section}].{key}", Path(args.config).parent)
            if name not in args.given:
                setattr(args, name, value)
    except ConfigError as exc:
        raise ConfigError(f"{label}: {exc}") from None


def _cmd_compare(args) -> int:
    from ..analysis import compare

    _apply_config(args, "compare")
    args.scenario = args.scenario or ["paper"]
    for name in args.schedulers:
        get_scheduler(name)
    if args.reference not in args.schedulers and args.reference != _PARSERS["compare"].get_default("reference"):
        raise ConfigError(f"--reference = {args.reference!r}: must be one of the compared --schedulers "
                          f"{list(args.schedulers)} (the ratios are to it; without the default one they are empty)")
    seen = {}
    for spec in args.scenario:  # read and check every scenario before any work
        key = str(Path(spec).resolve()) if Path(spec).is_file() else spec
        if key in seen:  # its cells would be computed twice and counted twice in every mean and CI
            raise ConfigError(f"--scenario = {spec!r}: the same scenario as {seen[key]!r}, given twice (each once)")
        seen[key] = spec
        if spec != "paper-random":
            load_scenario(spec)
    rows = compare.run(args.scenario, list(args.schedulers), list(range(args.seeds)), list(args.e_agg),
                       progress=_cell_counter(not args.json), workers=args.workers, cluster=args.cluster,
                       store=Path(args.out) / "cells" if args.out else None)
    summary = compare.summarise(rows, args.reference)
    if args.out:
        compare.write(rows, summary, args.out)
    if args.json:
        print(dumps_json(compare.to_json(rows, summary)))
        return 0
    cols = ["scheduler", "e_agg", "n", "latency_s_mean", "latency_s_ci95", "energy_j_mean", "energy_j_ci95",
            "access_energy_j_mean", "latency_ratio", "access_energy_ratio"]
    with __import__("pandas").option_context("display.width", 200, "display.max_columns", 20):
        print(summary[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-"))
    if args.out:
        print(f"written to {args.out}/ (rows.csv, summary.csv, compare.json, pareto.png)")
    return 0


def _cmd_bench(args) -> int:
    if args.learner:  # the options of the other benchmarks would be ignored: refused
        other = [flag for flag, dest in (("--schedulers", "schedulers"), ("--workers", "workers"),
                                         ("--cluster", "cluster"), ("--config", "config")) if dest in args.given]
        if other:
            raise ConfigError(f"{other[0]}: an option of the scheduler benchmarks, not of bench --learner")
    else:
        other = [flag for flag, dest in (("--threads", "threads"), ("--torch-device", "torch_device"))
                 if dest in args.given]
        if other:
            raise ConfigError(f"{other[0]}: an option of bench --learner only (the scheduler benchmarks run no torch)")
    if args.learner:
        from ..analysis.learner_bench import cmd_bench_learner, default_sizes

        return cmd_bench_learner(args, default_sizes(args, _PARSERS["bench"].get_default("sizes")))
    from ..analysis import bench
    from ..analysis.allocation_bench import bench_allocation

    _apply_config(args, "bench")
    sizes = list(args.sizes)
    for n in sizes:  # every size checked before any is run
        bench.size_layout(n)
    out = {"schedulers": bench.bench_schedulers(sizes, args.schedulers, progress=_cell_counter(not args.json),
                                                workers=args.workers, cluster=args.cluster)}
    out["allocation"] = bench_allocation(sizes=tuple(sorted(set(sizes) | {1000})))
    out["dynamic"] = bench.bench_dynamic()
    if args.json:
        print(dumps_json(out))
        return 0
    print(f"{'devices':>8}{'edges':>6}  {'scheduler':<10}{'solver':<8}{'build s':>9}{'solve s':>9}{'latency s':>11}"
          f"{'energy J':>11}{'peak MiB':>10}  gap (controllable)")
    for r in out["schedulers"]:
        gap = "-" if r["gap"] is None else f"{r['gap']:.2%}" + (
            "" if r["gap_controllable"] is None else f" ({r['gap_controllable']:.2%})")
        print(f"{r['n_devices']:>8}{r['n_edges']:>6}  {r['scheduler']:<10}{r['solver']:<8}{r['build_s']:>9.3f}{r['solve_s']:>9.3f}"
              f"{r['latency_s']:>11.3f}{r['energy_j']:>11.3f}{r['peak_rss_mb']:>10.0f}  {gap}")
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
    p.add_argument("--seed", type=seed, default=0, help="seed of the random D2D aggregator when none is recorded")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(func=_cmd_paper)

    p = sub.add_parser("schedule", help="run one scheduler, print its metrics, optionally save the plan")
    p.add_argument("--scenario", default="paper")
    p.add_argument("--scheduler", default="hierarchical", choices=available())
    p.add_argument("--e-agg", type=count(1, MAX_E_AGG), default=None,
                   help=f"edge rounds per global round (default: {SCHEDULE_E_AGG}; star: 1, not settable)")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--out", type=out_path("file"), help="write the plan as JSON here")
    p.set_defaults(func=_cmd_schedule)

    p = sub.add_parser("optimize", help="F4: least energy per edge round within a latency target; save the plan")
    p.add_argument("--scenario", default="paper")
    p.add_argument("--e-agg", type=count(1, MAX_E_AGG), default=8)
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--target-latency", type=real(0.0, 1e9), help="latency per edge round (s) not to exceed")
    p.add_argument("--target-from", default="hierarchical-d2d", choices=TARGET_FROM,
                   help="without --target-latency: match this heuristic's latency, or 'fastest' (default: %(default)s)")
    p.add_argument("--solver", default="highs", choices=["highs", "gurobi", "fast", "exact"],
                   help="F4 with F2 MILPs on HiGHS/Gurobi in small clusters, F4 without MILPs, or exact enumeration")
    p.add_argument("--time-limit", type=real(0.0, 1e7), default=60.0, help="time limit of each MILP solve (s)")
    p.add_argument("--exact", action="store_true", help="same as --solver exact (small instances only)")
    p.add_argument("--objective", default="energy", choices=["energy", "latency", "weighted"],
                   help="least energy per edge round at the target (default), least latency per edge round "
                        "(within --energy-budget if given) or --w-latency x latency + --w-energy x energy")
    p.add_argument("--energy-budget", type=real(0.0, 1e12), help="J per edge round not to exceed (latency only)")
    p.add_argument("--w-latency", type=real(0.0, 1e12), help="weight per s of latency (weighted only)")
    p.add_argument("--w-energy", type=real(0.0, 1e12), help="weight per J of energy (weighted only)")
    p.add_argument("--coverage", default="full", choices=["full", "cluster"],
                   help="full F4: every module a device needs is trained (default) or each cluster's modules by at "
                        "least one of its devices")
    p.add_argument("--w-u", type=real(0.0, 1e12, open_low=False), default=0.0,
                   help="J per unit of training utility (energy objective, --coverage cluster; default 0)")
    p.add_argument("--edge-tiers", action="store_true",
                   help="full F4: any module may stay in its cluster (edge or D2D aggregator tier)")
    p.add_argument("--association", default="fixed", choices=["fixed", "optimise"],
                   help="full F4: keep the start's device-edge association (default) or optimise it")
    p.add_argument("--json", action="store_true", help="print the SolveResult and the metrics as JSON")
    p.add_argument("--out", type=out_path("file"), help="write the plan as JSON here")
    p.set_defaults(func=_cmd_optimize)

    p = sub.add_parser("compare", help="schedulers x scenarios x seeds into one table with 95%% CIs")
    p.add_argument("--scenario", action="append", default=None,
                   help="embedded name, file, generator .toml or 'paper-random' (repeatable; default paper)")
    p.add_argument("--schedulers", type=names(available),
                   default=("hierarchical", "hierarchical-d2d", "greedy", "optimal"),
                   help="comma-separated scheduler names (default: hierarchical,hierarchical-d2d,greedy,optimal)")
    p.add_argument("--seeds", type=count(1, 10_000), default=3, help="number of seeds (0..N-1)")
    p.add_argument("--e-agg", type=counts(1, MAX_E_AGG), default=(2, 8), help="comma-separated E_agg values "
                   "(default: 2,8)")
    p.add_argument("--reference", default="hierarchical-d2d", help="the scheduler the ratios are to (one of "
                   "--schedulers)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", type=out_path("folder"), help="directory for CSV, JSON and the Pareto plot; finished "
                   "cells are kept in OUT/cells/, so the same command re-run after an interruption only computes "
                   "the missing ones")
    add_sweep_flags(p)
    p.add_argument("--config", help="TOML file whose [compare] table replaces these options")
    p.set_defaults(func=_cmd_compare)
    _PARSERS["compare"] = p

    p = sub.add_parser("bench", help="scheduler, allocation and dynamic re-solve benchmarks across sizes")
    p.add_argument("--sizes", type=counts(1, MAX_BENCH_DEVICES), default=(40, 400, 4000, 10000),
                   help="comma-separated device counts (default: 40,400,4000,10000)")
    p.add_argument("--schedulers", type=names(available), default=("greedy", "optimal"),
                   help="comma-separated schedulers to benchmark (default: greedy,optimal)")
    p.add_argument("--learner", action="store_true", help="only the learner benchmark (trainer vs central and the "
                   "per-device loop, round time); without --sizes its sizes are 40,400,1000")
    p.add_argument("--torch-device", default="cpu", choices=("cpu", "cuda", "auto"),
                   help="torch device of --learner (auto = cuda if available; default: %(default)s)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads of --learner on a CPU: the trainer runs one call per thread at once in forked "
                        "worker processes, central training uses them intra-op (default: every core this process may "
                        "use)")
    p.add_argument("--json", action="store_true")
    add_sweep_flags(p)
    p.add_argument("--config", help="TOML file whose [bench] table replaces these options")
    p.set_defaults(func=_cmd_bench)
    _PARSERS["bench"] = p

    p = sub.add_parser("evaluate", help="check a saved plan and price it in both accountings")
    p.add_argument("--scenario", default="paper")
    p.add_argument("--plan", required=True, help="plan JSON written by 'schedule --out' or 'optimize --out'")
    p.set_defaults(func=_cmd_evaluate)
