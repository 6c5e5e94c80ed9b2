"""The learning commands of ``hffm-opt``: ``train`` (one plan) and ``run`` (the main job: every paper scheduler
and ``optimal``, trained on the default experiment, in one table with plots). Registered by
:func:`add_commands`; the library work is :func:`run_methods`.

Units in the outputs: latency per edge round (s) and energy per edge round (J) from ``evaluate`` (consistent
accounting), accuracy in percent (mean over tasks, global test set), simulated time (s) and energy (J) to a
target accuracy.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from hffm_opt._io import atomic_path, atomic_write, dumps_json

DEFAULT_ROUNDS = 16  # edge rounds per method in `run` (keeps the whole job under 10 minutes on 2 cores)
OPTIMAL = ("optimal", "Optimal (F4)", "optimal", 2)  # (JSON key, label, scheduler, e_agg), as cli.PAPER_ROWS


@dataclass(frozen=True)
class MethodResult:
    """One trained plan: the row of the table and its history."""

    method: str
    label: str
    e_agg: int
    history: object  # hffm_opt.learners.trainer.History

    def row(self, target_pct: float) -> dict:
        """The JSON row of ``run --json``."""
        h = self.history
        return {"method": self.method, "e_agg": self.e_agg, "latency_s": h.meta["latency_s"],
                "energy_j": h.meta["energy_j"], "accuracy": h.final_accuracy,
                "time_to_target_s": h.time_to(target_pct), "energy_to_target_j": h.energy_to(target_pct)}


def _setup(args):
    import torch

    from ..learners.device import keep_freed_memory, resolve_device
    from ..learners.setup import learning_setup

    resolve_device(args.torch_device)  # CUDA asked for where there is none: ConfigError before any work
    keep_freed_memory()  # no page faults for every large temporary tensor of training
    torch.set_num_threads(args.threads)
    return learning_setup(args.benchmark, scenario=args.scenario, n_edges=args.n_edges,
                          devices_per_edge=args.devices_per_edge, seed=args.seed, progress=not args.json)


def _config(args):
    from ..learners.trainer import TrainConfig

    return TrainConfig(rounds=args.rounds, lr=args.lr, local_steps=args.local_steps, batch_size=args.batch_size,
                       seed=args.seed, eval_every=args.eval_every, device=args.torch_device)


def _bar(enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return lambda it: tqdm(it, desc=desc, file=sys.stderr, leave=False)


def run_methods(setup, rows, config, *, seed: int = 0, show_progress: bool = False) -> list[MethodResult]:
    """Plan each ``(method key, label, scheduler, e_agg)`` of ``rows`` on ``setup.scenario`` and train it."""
    from hffm_opt.schedulers import schedule

    from ..learners.trainer import train

    out = []
    for key, label, name, e_agg in rows:
        plan = schedule(setup.scenario, name, e_agg=e_agg, seed=seed)
        hist = train(setup.scenario, plan, setup.data, config, progress=_bar(show_progress, f"{label} E={e_agg}"))
        out.append(MethodResult(key, label, e_agg, hist))
    return out


def default_target(results: list[MethodResult]) -> float:
    """95% of the best final accuracy (percent, one decimal): the target of time/energy-to-accuracy."""
    best = max((r.history.final_accuracy or 0.0) for r in results)
    return round(0.95 * best, 1)


def _out_dir(arg: str | None) -> Path:
    return Path(arg) if arg else Path("runs") / time.strftime("%Y%m%d-%H%M%S")


def write_results(results: list[MethodResult], target_pct: float, out: Path) -> list[Path]:
    """Histories (CSV + JSON per method), the results table (JSON) and the two plots, into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for r in results:
        written += list(r.history.save(out, f"history_{r.method}_E{r.e_agg}"))
    table = {"target_accuracy": target_pct, "results": [r.row(target_pct) for r in results]}
    atomic_write(out / "results.json", dumps_json(table, indent=1))
    written.append(out / "results.json")
    for key, xlabel, fname in (("time_s", "simulated time (s)", "accuracy_vs_time.png"),
                               ("energy_j", "energy (J)", "accuracy_vs_energy.png")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for r in results:
            ev = [x for x in r.history.records if x["accuracy"] is not None]
            ax.plot([x[key] for x in ev], [x["accuracy"] for x in ev], marker=".", label=f"{r.label} E={r.e_agg}")
        ax.axhline(target_pct, color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy, mean over tasks (%)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        try:
            with atomic_path(out / fname, ".png") as tmp:  # savefig picks the format by the extension
                fig.savefig(tmp, dpi=120)
        finally:
            plt.close(fig)
        written.append(out / fname)
    return written


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _last_evaluated(history) -> dict:
    """The last evaluated record (all accuracy fields None when nothing was evaluated)."""
    return next((x for x in reversed(history.records) if x["accuracy"] is not None),
                {"accuracy_by_task": None, "personalised_accuracy": None})


def print_table(results: list[MethodResult], target_pct: float, tasks) -> None:
    """The human-readable table of ``run``."""
    head = f"{'method':<15}{'E_agg':>6}{'lat s/rnd':>11}{'J/rnd':>10}" + "".join(f"{t[:8]:>9}" for t in tasks)
    print(head + f"{'mean %':>8}{'t->' + format(target_pct, '.1f') + '% s':>14}{'E->target J':>13}")
    for r in results:
        h = r.history
        by_task = _last_evaluated(h)["accuracy_by_task"] or {}
        accs = "".join(f"{_fmt(by_task.get(t), '.1f'):>9}" for t in tasks)
        print(f"{r.label:<15}{r.e_agg:>6}{h.meta['latency_s']:>11.3f}{h.meta['energy_j']:>10.3f}{accs}"
              f"{_fmt(h.final_accuracy, '.1f'):>8}{_fmt(h.time_to(target_pct), '.2f'):>14}"
              f"{_fmt(h.energy_to(target_pct), '.2f'):>13}")
    print("(latency and energy per edge round, consistent accounting; accuracy in % on the global test set after "
          "the last round; time/energy to target are simulated, '-' = not reached)")


def _cmd_train(args) -> int:
    from hffm_opt.schedulers import schedule

    from ..learners.trainer import CHECKPOINT, train

    setup = _setup(args)
    plan = schedule(setup.scenario, args.scheduler, e_agg=args.e_agg, seed=args.seed)
    if args.restart and args.out:  # a checkpoint of --out is never resumed: train from round 0
        (Path(args.out) / "checkpoint" / CHECKPOINT).unlink(missing_ok=True)
    hist = train(setup.scenario, plan, setup.data, _config(args), progress=_bar(not args.json, args.scheduler),
                 checkpoint_dir=Path(args.out) / "checkpoint" if args.out else None)
    if args.out:
        hist.save(args.out)
    last = _last_evaluated(hist)
    out = {"scheduler": args.scheduler, "e_agg": int(plan.e_agg), "rounds": args.rounds,
           "latency_s": hist.meta["latency_s"], "energy_j": hist.meta["energy_j"], "accuracy": hist.final_accuracy,
           "accuracy_by_task": last["accuracy_by_task"], "personalised_accuracy": last["personalised_accuracy"],
           "time_s": hist.records[-1]["time_s"], "total_energy_j": hist.records[-1]["energy_j"]}
    if args.json:
        print(dumps_json(out))
    else:
        print(dumps_json(out, indent=1))
    return 0


def _cmd_run(args) -> int:
    from hffm_opt.analysis.paper_table import PAPER_ROWS

    start = time.perf_counter()
    setup = _setup(args)
    results = run_methods(setup, list(PAPER_ROWS) + [OPTIMAL], _config(args), seed=args.seed,
                          show_progress=not args.json)
    target = args.target if args.target is not None else default_target(results)
    out = _out_dir(args.out)
    write_results(results, target, out)
    if args.json:
        print(dumps_json({"results": [r.row(target) for r in results]}))
        return 0
    print_table(results, target, setup.data.model.task_names)
    print(f"written to {out}/ (history_*.csv/json, results.json, accuracy_vs_time.png, accuracy_vs_energy.png); "
          f"wall time {time.perf_counter() - start:.0f} s")
    return 0


def _common(p: argparse.ArgumentParser, rounds: int) -> None:
    p.add_argument("--scenario", default="paper",
                   help="'paper' (embedded), 'clustered' (with --n-edges/--devices-per-edge) or a scenario file")
    p.add_argument("--benchmark", default="easy_vqa", choices=("easy_vqa", "digits", "synthetic"))
    p.add_argument("--n-edges", type=int, default=10, help="edge servers of a 'clustered' scenario")
    p.add_argument("--devices-per-edge", type=int, default=4, help="devices per edge of a 'clustered' scenario")
    p.add_argument("--rounds", type=int, default=rounds, help="edge rounds to train (default: %(default)s)")
    p.add_argument("--lr", type=float, default=1e-2, help="local Adam learning rate (default: %(default)s)")
    p.add_argument("--local-steps", type=int, default=5, help="tau, local steps per edge round (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=16, help="samples per local step (default: %(default)s)")
    p.add_argument("--eval-every", type=int, default=4, help="evaluate every N edge rounds (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default %(default)s: the model's operations are small, more threads "
                        "rarely help and slow down a shared machine)")
    p.add_argument("--torch-device", default="cpu", choices=("cpu", "cuda", "auto"),
                   help="torch device of training and evaluation (auto = cuda if available; default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print JSON only (no progress bars)")
    p.add_argument("--out", help="output directory")


def add_commands(sub) -> None:
    """Add ``train`` and ``run`` to the ``hffm-opt`` subparsers."""
    from hffm_opt.schedulers import available

    p = sub.add_parser("train", help="train the M3T model federatedly under one scheduler's plan")
    _common(p, rounds=DEFAULT_ROUNDS)
    p.add_argument("--scheduler", default="hierarchical", choices=available())
    p.add_argument("--e-agg", type=int, default=2, help="edge rounds per global round (default: %(default)s)")
    p.add_argument("--restart", action="store_true", help="discard the checkpoint in --out and train from round 0 "
                   "(without it, an unreadable or foreign checkpoint is an error, never silently replaced)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("run", help="the main job: paper schedulers and 'optimal' trained on easy-VQA, one table "
                                   "and plots")
    _common(p, rounds=DEFAULT_ROUNDS)
    p.add_argument("--target", type=float, help="target accuracy (%%) for time/energy-to-accuracy "
                                                "(default: 95%% of the best final accuracy)")
    p.set_defaults(func=_cmd_run)
