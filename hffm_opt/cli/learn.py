"""The learning commands of ``hffm-opt``: ``train`` (one plan) and ``run`` (the main job: the paper's schemes,
``greedy`` and ``optimal`` trained on the default experiment over seeds, one table with 95 % CIs and plots).
Registered by :func:`add_commands`; the library work is :mod:`hffm_opt.analysis.closed_loop`.

Units in the outputs: latency per edge round (s) and energy per edge round (J) from ``evaluate`` (consistent
accounting of the priced model), accuracies in percent, simulated time (s) and energy (J) to a target served
accuracy.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hffm_opt._io import dumps_json
from hffm_opt.errors import ConfigError
from hffm_opt.network.generators import PAPER_LAYOUT

from .args import SEED_MAX, TRAINING_WORKER, processes, scheduler_e_agg

TRAIN_E_AGG = 2  # train's E_agg without --e-agg
DEFAULT_ROUNDS = 32  # edge rounds per method (4 cloud aggregations at E_agg 8; `run` stays under 10 minutes on 2 cores)
RUN_WORKERS = 2  # run's local processes without --workers (fewer where there are fewer cores)
RUN_EVAL_ROWS = 2500  # test rows `run` scores before the last round (easy-VQA's test set has about 10,600)


def _setup(args, seed: int | None = None):
    import torch

    from ..learners.device import keep_freed_memory, resolve_device
    from ..learners.setup import learning_setup

    resolve_device(args.torch_device)  # CUDA asked for where there is none: ConfigError before any work
    keep_freed_memory()  # no page faults for every large temporary tensor of training
    torch.set_num_threads(_threads(args))
    return learning_setup(**_setup_kwargs(args), seed=args.seed if seed is None else seed, progress=not args.json)


def _threads(args) -> int:
    """Torch threads of this process: ``--threads``, else every core it may use, or one per process when ``run``
    spreads its cells over ``--workers`` processes (on a CPU, local training runs one call per thread at once)."""
    from .._cores import cpu_cores

    if args.threads is not None:
        return args.threads
    return 1 if getattr(args, "workers", 1) > 1 else cpu_cores()


def _setup_kwargs(args) -> dict:
    """The :func:`~hffm_opt.learners.setup.learning_setup` keywords the flags give (all but the seed); the layout
    flags belong to the 'clustered' scenario (any other has its own network: they are refused there, not ignored)."""
    layout = {"n_edges": args.n_edges, "devices_per_edge": args.devices_per_edge}
    if args.scenario != "clustered":
        given = [f"--{k.replace('_', '-')} = {v}" for k, v in layout.items() if v is not None]
        if given:
            raise ConfigError(f"{given[0]}: applies to --scenario clustered only (the scenario {args.scenario!r} has "
                              "its own network)")
    layout = {k: PAPER_LAYOUT[k] if v is None else v for k, v in layout.items()}
    return {"benchmark": args.benchmark, "scenario": args.scenario, **layout, "pricing": args.pricing,
            "validation_fraction": args.validation_fraction}


def _config(args):
    """The TrainConfig of the flags; an availability trace is read at once (its device indices are checked against
    the network by :func:`_check_trace` once the network is built)."""
    from ..learners.trainer import TrainConfig

    if args.server_lr is not None and args.edge_optimizer == args.cloud_optimizer == "fedavg":
        raise ConfigError(f"--server-lr = {args.server_lr}: FedAvg at both tiers has no server learning rate; choose "
                          "--edge-optimizer or --cloud-optimizer fedavgm or fedadam")
    if getattr(args, "restart", False) and not args.out:
        raise ConfigError("--restart: discards the checkpoint in --out, so it needs --out (without it nothing is "
                          "resumed anyway)")
    _check_trace(args, None)
    return TrainConfig(rounds=args.rounds, lr=args.lr, local_steps=args.local_steps, batch_size=args.batch_size,
                       seed=args.seed, eval_every=args.eval_every, eval_rows=args.eval_rows, device=args.torch_device,
                       prox_mu=args.prox_mu, edge_optimizer=args.edge_optimizer, cloud_optimizer=args.cloud_optimizer,
                       server_lr=args.server_lr, fading=args.fading, availability=args.availability,
                       availability_trace=args.availability_trace, participation=args.participation)


def _check_trace(args, n_devices: int | None) -> None:
    """ConfigError for an unreadable or malformed ``--availability-trace``, one naming a device the network of
    ``n_devices`` lacks, or one under which no device is available in any round trained, before any training."""
    if args.availability_trace is not None:
        from ..learners.participation import read_trace

        rows = read_trace(args.availability_trace, n_devices)
        if not (rows[:, 1] <= args.rounds).any():
            raise ConfigError(f"--availability-trace = {args.availability_trace!r}: no device is available in any of "
                              f"the {args.rounds} edge rounds trained (no interval starts by round {args.rounds}); "
                              "nothing would be trained")


def _bar(enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return lambda it: tqdm(it, desc=desc, file=sys.stderr, leave=False)


def _out_dir(arg: str | None) -> Path:
    return Path(arg) if arg else Path("runs") / time.strftime("%Y%m%d-%H%M%S")


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _last_evaluated(history) -> dict:
    """The last evaluated record (all accuracy fields None when nothing was evaluated)."""
    return next((x for x in reversed(history.records) if x["accuracy"] is not None),
                {"accuracy_by_task": None, "personalised_accuracy": None})


def print_table(rows: list[dict], target_pct: float, reference: dict) -> None:
    """The human-readable table of ``run`` (means over seeds, +- the 95 % CI half-width)."""
    def pm(row, key, spec):
        mean, half = row[key], row.get(f"{key}_ci95")
        return _fmt(mean, spec) + ("" if half is None or mean is None else f" +-{format(half, spec)}")

    print(f"{'method':<24}{'E_agg':>6}{'lat s/rnd':>11}{'J/rnd':>10}{'global %':>10}{'served %':>15}"
          f"{'t->target s':>18}{'E->target J':>20}{'reached':>9}")
    for r in rows:
        print(f"{r['label']:<24}{r['e_agg']:>6}{r['latency_s']:>11.3f}{r['energy_j']:>10.3f}"
              f"{_fmt(r['accuracy'], '.1f'):>10}{pm(r, 'served_accuracy', '.1f'):>15}"
              f"{pm(r, 'time_to_target_s', '.1f'):>18}{pm(r, 'energy_to_target_j', '.1f'):>20}"
              f"{r['n_reached']:>5}/{r['n_seeds']}")
    print(f"(latency and energy per edge round, consistent accounting of the priced model; accuracies in % after "
          f"the last round, served = each device's tasks scored by the model serving it; target {target_pct:.1f} % "
          f"served accuracy; central training {_fmt(reference['central_accuracy'], '.1f')} %, linear probe on the "
          f"frozen features {_fmt(reference['linear_probe_accuracy'], '.1f')} %; time and energy to the target are "
          f"simulated, means over the seeds that reached it)")


def _cmd_train(args) -> int:
    from hffm_opt.schedulers import schedule

    from ..learners.trainer import CHECKPOINT, train

    config, e_agg = _config(args), scheduler_e_agg(args, TRAIN_E_AGG)  # every option checked before any work
    setup = _setup(args)
    _check_trace(args, setup.scenario.n_devices)
    plan = schedule(setup.scenario, args.scheduler, e_agg=e_agg, seed=args.seed, local_steps=args.local_steps,
                    batch_size=args.batch_size)  # planned for the workload it trains
    if args.restart and args.out:  # a checkpoint of --out is never resumed: train from round 0
        (Path(args.out) / "checkpoint" / CHECKPOINT).unlink(missing_ok=True)
    hist = train(setup.scenario, plan, setup.data, config, progress=_bar(not args.json, args.scheduler),
                 checkpoint_dir=Path(args.out) / "checkpoint" if args.out else None)
    if args.out:
        hist.save(args.out)
    last = _last_evaluated(hist)
    out = {"scheduler": args.scheduler, "e_agg": int(plan.e_agg), "rounds": args.rounds,
           "latency_s": hist.meta["latency_s"], "energy_j": hist.meta["energy_j"], "accuracy": hist.final_accuracy,
           "served_accuracy": hist.final("served_accuracy"), "accuracy_by_task": last["accuracy_by_task"],
           "personalised_accuracy": last["personalised_accuracy"],
           "time_s": hist.records[-1]["time_s"], "total_energy_j": hist.records[-1]["energy_j"]}
    if args.json:
        print(dumps_json(out))
    else:
        print(dumps_json(out, indent=1))
    return 0


def _run_workers(asked: int | None) -> int:
    """``run``'s local processes: ``--workers`` (at most the cores, checked when parsed), else
    :data:`RUN_WORKERS` or the cores when fewer."""
    from .._cores import cpu_cores

    return min(RUN_WORKERS, cpu_cores()) if asked is None else asked


def _cmd_run(args) -> int:
    from dataclasses import asdict, replace

    from ..analysis import closed_loop

    start = time.perf_counter()
    args.workers = _run_workers(args.workers)
    out = _out_dir(args.out)
    config = _config(args)
    if args.seed + args.seeds - 1 > SEED_MAX:
        raise ConfigError(f"--seed = {args.seed}: with --seeds {args.seeds} the last seed, {args.seed + args.seeds - 1}"
                          f", would exceed {SEED_MAX} (the largest seed)")
    seeds = list(range(args.seed, args.seed + args.seeds))
    setup = _setup(args, seeds[0])  # pre-trains the foundation model (cached) before any worker starts
    _check_trace(args, setup.scenario.n_devices)
    if args.workers > 1:  # the plans, then the reference and each seed's methods in shares, on local processes
        from tqdm import tqdm

        from ..analysis.sweep import run_cells

        common = {"setup": _setup_kwargs(args), "threads": _threads(args), "config": asdict(config)}

        def bar(desc):  # a progress callback for run_cells, none with --json
            return None if args.json else lambda n: tqdm(total=n, desc=desc, file=sys.stderr, leave=False).update

        done, _ = run_cells(closed_loop.plans_cell, [{"seed": s, **common} for s in seeds], workers=args.workers,
                            progress=bar("plans"))  # each seed's plans, made once
        plans = dict(zip(seeds, (d["plans"] for d in done)))
        cells = [{"seed": seeds[0], "central_epochs": args.central_epochs, **common}]
        n_shares = 2 * args.workers  # smaller cells: the processes end closer together
        cells += [{"seed": s, "part": [i, n_shares], "plans": plans[s], **common}
                  for s in seeds for i in range(n_shares)]
        done, _ = run_cells(closed_loop.train_cell, cells, workers=args.workers, progress=bar("reference, shares"))
        reference, shares = done[0], list(zip(cells[1:], done[1:]))
        runs = [run for s in seeds
                for run in closed_loop.seed_runs(s, [d for c, d in shares if c["seed"] == s])]
    else:
        reference = closed_loop.reference(setup, args.central_epochs, args.seed)
        runs, bar = [], None if args.json else (lambda label: _bar(True, label))
        for seed in seeds:
            setup = setup if seed == seeds[0] else _setup(args, seed)
            runs += closed_loop.train_methods(setup, closed_loop.DEFAULT_METHODS, replace(config, seed=seed),
                                              seed=seed, progress=bar)
    target = args.target if args.target is not None else round(0.95 * reference["central_accuracy"], 1)
    rows = closed_loop.summarise(runs, target)
    document = {"results": rows, "target_accuracy": target, "reference": reference}
    closed_loop.write(runs, document, out)
    if args.json:
        print(dumps_json(document))
        return 0
    print_table(rows, target, reference)
    print(f"written to {out}/ (history_*.csv/json, results.json, served_accuracy_vs_time.png, "
          f"served_accuracy_vs_energy.png); wall time {time.perf_counter() - start:.0f} s")
    return 0


def _common(p: argparse.ArgumentParser, rounds: int, eval_rows: int) -> None:
    p.add_argument("--scenario", default="paper",
                   help="'paper' (embedded), 'clustered' (with --n-edges/--devices-per-edge) or a scenario file")
    p.add_argument("--benchmark", default="easy_vqa", choices=("easy_vqa", "digits", "synthetic"))
    p.add_argument("--n-edges", type=int, default=None,
                   help=f"edge servers of a 'clustered' scenario (default: {PAPER_LAYOUT['n_edges']})")
    p.add_argument("--devices-per-edge", type=int, default=None,
                   help=f"devices per edge of a 'clustered' scenario (default: {PAPER_LAYOUT['devices_per_edge']})")
    p.add_argument("--rounds", type=int, default=rounds, help="edge rounds to train (default: %(default)s)")
    p.add_argument("--lr", type=float, default=1e-2, help="local Adam learning rate (default: %(default)s)")
    p.add_argument("--local-steps", type=int, default=5, help="tau, local steps per edge round (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=16, help="samples per local step (default: %(default)s)")
    p.add_argument("--eval-every", type=int, default=4, help="evaluate every N edge rounds (default: %(default)s)")
    p.add_argument("--eval-rows", type=int, default=eval_rows,
                   help="evaluations before the last round score a seeded subset of this many test rows, the last "
                        "round all of them (0 = all every time; default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads; on a CPU local training runs one vectorised call per thread at once, in "
                        "forked worker processes (default: every core, or 1 per process when run uses --workers > 1)")
    p.add_argument("--torch-device", default="cpu", choices=("cpu", "cuda", "auto"),
                   help="torch device of training and evaluation (auto = cuda if available; default: %(default)s)")
    p.add_argument("--pricing", default="foundation", choices=("foundation", "proxy"),
                   help="what the network prices: the simulated foundation model (ViLT-B/32 class, the scenario's "
                        "model_bits per update; default) or the small proxy that actually trains")
    p.add_argument("--validation-fraction", type=float, default=0.1,
                   help="share of the training pool's items held out for validation (default: %(default)s)")
    p.add_argument("--prox-mu", type=float, default=0.0, help="FedProx coefficient of the proximal term (default: 0)")
    for tier in ("edge", "cloud"):
        p.add_argument(f"--{tier}-optimizer", default="fedavg", choices=("fedavg", "fedavgm", "fedadam"),
                       help=f"server optimiser of the {tier} aggregation (default: %(default)s)")
    p.add_argument("--server-lr", type=float, help="server learning rate (default: 1 for FedAvgM, 0.01 for FedAdam)")
    p.add_argument("--fading", default="static", choices=("static", "block"),
                   help="'block': redraw the channel and re-solve the plan's continuous part every edge round")
    p.add_argument("--availability", type=float, default=1.0,
                   help="probability that a device is available in a round (default: 1)")
    p.add_argument("--availability-trace", help="CSV device,start_round,end_round of available intervals")
    p.add_argument("--participation", type=float, default=1.0,
                   help="fraction of the available devices sampled each round (default: 1)")
    p.add_argument("--json", action="store_true", help="print JSON only (no progress bars)")
    p.add_argument("--out", help="output directory")


def add_commands(sub) -> None:
    """Add ``train`` and ``run`` to the ``hffm-opt`` subparsers."""
    from hffm_opt.schedulers import available

    p = sub.add_parser("train", help="train the M3T model federatedly under one scheduler's plan")
    _common(p, rounds=DEFAULT_ROUNDS, eval_rows=0)
    p.add_argument("--scheduler", default="hierarchical", choices=available())
    p.add_argument("--e-agg", type=int, default=None,
                   help=f"edge rounds per global round (default: {TRAIN_E_AGG}; star: 1, not settable)")
    p.add_argument("--restart", action="store_true", help="discard the checkpoint in --out and train from round 0 "
                   "(without it, an unreadable or foreign checkpoint is an error, never silently replaced)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("run", help="the main job: paper schedulers and 'optimal' trained on easy-VQA, one table "
                                   "and plots")
    _common(p, rounds=DEFAULT_ROUNDS, eval_rows=RUN_EVAL_ROWS)
    p.add_argument("--target", type=float, help="target served accuracy (%%) for time/energy-to-accuracy "
                                                "(default: 95%% of central training's accuracy)")
    p.add_argument("--seeds", type=int, default=3, help="seeds --seed, --seed+1, ... (default: %(default)s); "
                   "each seed draws the network, the data partition and the model's trainable modules")
    p.add_argument("--workers", type=processes(TRAINING_WORKER), default=None, help="local processes, at most the "
                   "cores; each seed's methods are split in twice this many shares (methods that learn identically "
                   f"stay together) trained in parallel (default: {RUN_WORKERS}, or the cores when fewer)")
    p.add_argument("--central-epochs", type=float, default=1.0,
                   help="epochs of the central-training reference (default: %(default)s)")
    p.set_defaults(func=_cmd_run)
