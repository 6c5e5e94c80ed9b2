"""``hffm-opt tune``: run (or resume, or join) an Optuna study of :mod:`hffm_opt.tuning` and report it.

One process is one worker; ``--workers W`` starts W worker processes (at most the cores) on the same storage and
reports when they are done. Another machine joins the same study with the same command, ``--storage`` set to the
shared database URL and ``--workers`` up to its own cores. Progress goes to stderr; ``--json`` prints only the
summary on stdout.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import warnings
from pathlib import Path

from .._io import dumps_json
from .args import TRAINING_WORKER, count, out_path, processes, real

WORKER_STOP_S = 30.0  # seconds an interrupted worker has to record its trial and exit before it is killed


def add_commands(sub) -> None:
    """Register ``tune`` on the ``hffm-opt`` subparsers ``sub``."""
    p = sub.add_parser("tune", help="close the loop: Optuna searches E_agg, deadline, lr, tau and scheduler options "
                       "by the accuracy trained within a simulated budget")
    p.add_argument("--study", required=True, type=_study_name, help="study name (re-running the command resumes it)")
    p.add_argument("--storage", help="SQLAlchemy URL shared by all workers, e.g. postgresql+psycopg2://user@host/db "
                   "(default: SQLite file study.db in --out)")
    p.add_argument("--trials", type=count(1, 1_000_000), default=8, help="finished trials (complete, pruned or failed) "
                   "the study should hold (default: %(default)s)")
    p.add_argument("--workers", type=processes(TRAINING_WORKER), default=1,
                   help="local worker processes, at most the cores (default: %(default)s)")
    p.add_argument("--timeout", type=real(0.0, 1e9), help="no new trial starts after this many seconds")
    p.add_argument("--objective", choices=("accuracy", "pareto"), default="accuracy",
                   help="accuracy within the budget (TPE + pruner), or accuracy up / energy down (Pareto front)")
    p.add_argument("--config", help="TOML file: learning setup, budget, search space, defaults, study options")
    p.add_argument("--torch-device", choices=("cpu", "cuda", "auto"), help="torch device of the trials' training "
                   "(auto = cuda if available; default: the config's train.device, else cpu)")
    p.add_argument("--json", action="store_true", help="print only the JSON summary on stdout")
    p.add_argument("--out", type=out_path("folder"), help="directory for the SQLite study, trials.csv, summary.json "
                   "and plots (default: runs/tune-<study>)")
    p.add_argument("--worker-only", action="store_true", help=argparse.SUPPRESS)  # a child of --workers
    p.set_defaults(func=_cmd_tune)


def _study_name(text: str) -> str:
    """A study name: non-empty, printable, at most 200 characters, no path separator (it names a row of the storage
    and the default folder runs/tune-<study>)."""
    if not text.strip() or len(text) > 200 or not text.isprintable() or "/" in text or "\\" in text:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a non-empty printable name of at most 200 characters, "
                                         "without / or \\")
    return text


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _cmd_tune(args) -> int:
    import optuna
    import sqlalchemy

    from .. import tuning

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage")  # we run trials by ask/tell with heartbeats
    out = Path(args.out or f"runs/tune-{args.study}")
    url = args.storage or f"sqlite:///{(out / 'study.db').resolve()}"
    try:
        settings = tuning.load_settings(args.config)
        if args.torch_device:
            from ..learners.device import resolve_device

            resolve_device(args.torch_device)  # CUDA asked for where there is none: exit 2 before any trial
        out.mkdir(parents=True, exist_ok=True)
        if args.workers == 1:
            study = tuning.run_worker(args.study, url, settings, args.objective, args.trials, timeout_s=args.timeout,
                                      log=_log, device=args.torch_device)
        else:
            tuning.prepare(args.study, url, settings, args.objective, device=args.torch_device)
            _spawn(args, url)
            study = optuna.load_study(study_name=args.study, storage=tuning.storage_for(url, settings))
    except ValueError as exc:  # bad configuration or setup
        print(f"hffm-opt tune: error: {' '.join(tuning.mask_text(exc, url).split())}", file=sys.stderr)
        return 2
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
        reason = tuning.mask_text(f"{type(exc).__name__}: {exc}", url).splitlines()[0]
        print(f"hffm-opt tune: error: --storage = {tuning.mask_url(url)!r}: {reason}", file=sys.stderr)
        return 2
    if args.worker_only:
        return 0
    result = tuning.summary(study, args.objective)
    failed = tuning.all_failed(study)
    if args.objective == "pareto" and failed is None:  # the schedulers at the default configuration, on the plane
        if not args.json:
            _log("scoring each searched scheduler at the default configuration ...")
        result["schedulers"] = tuning.default_points(settings, result["pareto"], args.torch_device)
    tuning.write_results(out, study, result)
    plots = tuning.save_plots(study, out, args.objective, result.get("schedulers"))
    if not args.json:
        _print(result, args.objective, out, [p.name for p in plots], study)
    elif failed is None:  # an error leaves stdout empty with --json (the summary is in summary.json still)
        print(dumps_json(result))
    if failed is not None:
        print(f"hffm-opt tune: error: {failed}", file=sys.stderr)
        return 2
    return 0


def _spawn(args, url: str) -> None:
    """Run ``args.workers`` worker processes of this command on ``url`` and wait for them (they log to stderr)."""
    cmd = [sys.executable, "-m", "hffm_opt.cli", "tune", "--study", args.study, "--storage", url, "--trials",
           str(args.trials), "--objective", args.objective, "--worker-only"]
    for flag, value in (("--timeout", args.timeout), ("--config", args.config), ("--out", args.out),
                        ("--torch-device", args.torch_device)):
        if value is not None:
            cmd += [flag, str(value)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL) for _ in range(args.workers)]
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:  # Ctrl-C reaches the workers too; passed on where only this process got it
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(WORKER_STOP_S)
            except subprocess.TimeoutExpired:
                p.kill()
        raise
    if any(codes):
        raise ValueError(f"worker exit codes = {codes}: every worker must exit with 0 (see stderr)")


def _print(result: dict, kind: str, out: Path, plots: list[str], study) -> None:
    print(f"study {result['study']}: {result['n_complete']} complete, {result['n_pruned']} pruned, "
          f"{result['n_failed']} failed")
    for t in study.get_trials(deepcopy=False):
        if "fail_reason" in t.user_attrs:
            print(f"  trial {t.number} failed: {t.user_attrs['fail_reason']}")
    if kind == "accuracy":
        b = result["best"]
        if b is None:
            print("no complete trial")
        else:
            print(f"best trial {b['number']}: accuracy {b['accuracy_pct']:.2f} % within the budget "
                  f"({b['rounds']} edge rounds, {b['time_s']:.4g} s, {b['energy_j']:.4g} J), params {b['params']}")
            if b["default_accuracy_pct"] is None:
                print("the default configuration did not complete: no comparison")
            else:
                verdict = "beats" if b["beats_default"] else "does NOT beat"
                print(f"the best trial {verdict} the default configuration (trial {b['default_number']}): "
                      f"{b['accuracy_pct']:.2f} % vs {b['default_accuracy_pct']:.2f} %")
    else:
        import pandas as pd

        print("Pareto front (accuracy % up, energy J down):")
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            print(pd.DataFrame(result["pareto"]).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
            if "schedulers" in result:  # not when every trial failed (no front to compare them with)
                print("the searched schedulers at the default configuration (dominated: a front trial is at least as "
                      "accurate for no more energy):")
                print(pd.DataFrame(result["schedulers"]).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"written to {out}/ (trials.csv, summary.json{''.join(', ' + p for p in plots)})")
