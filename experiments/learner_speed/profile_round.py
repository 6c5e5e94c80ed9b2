"""Where one global round of the trainer spends its time: the setup of ``hffm-opt bench --learner`` at N devices
(default 1,000), a warm-up edge round, then one global round (2 edge rounds) under cProfile (phases) and
torch.profiler (the heaviest operators), printed as two Markdown tables.

    PYTHONPATH=. python experiments/learner_speed/profile_round.py [N] [--device cpu|cuda] [--threads T]

Units: seconds of wall time (cProfile's cumulative times) and of operator self time (torch.profiler; on CUDA the
GPU's time per operator and kernel, and the phases only say where the host waits).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import torch

from hffm_opt.analysis.bench import size_layout
from hffm_opt.analysis.learner_bench import _benchmark_for
from hffm_opt.learners import local
from hffm_opt.learners.device import keep_freed_memory
from hffm_opt.learners.layers import Attention, MoE
from hffm_opt.learners.model import M3TModel
from hffm_opt.learners.packed import PackedTables
from hffm_opt.learners.setup import learning_setup
from hffm_opt.learners.trainer import TrainConfig, _Run, train
from hffm_opt.schedulers import schedule

PHASES = (  # (label, the function whose cumulative time it is)
    ("edge rounds (all of it)", _Run._train_and_aggregate),
    ("draw the minibatch rows (numpy, all devices at once)", PackedTables.sample),
    ("gather the minibatches (contiguous tensors)", PackedTables.gather),
    ("local training (vmapped calls)", local.local_train),
    ("- forward (the model under vmap)", M3TModel.forward),
    ("  - attention (2 layers)", Attention.forward),
    ("  - sparse MoE (routing, dispatch, experts)", MoE.forward),
    ("- optimiser (fused Adam over the devices' copies)", local._Optim.step),
    ("- grouping (one host transfer per call)", local._groups),
)


def _cumulative(stats: dict, func) -> float:
    """Seconds cProfile accounts to ``func`` (by its file and first line), callees included."""
    code = func.__code__
    return sum(v[3] for (file, line, _), v in stats.items() if file == code.co_filename and line == code.co_firstlineno)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int, nargs="?", default=1000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as the commands do
    name, kwargs, pre = _benchmark_for(args.n, None)
    n_edges, per = size_layout(args.n)
    setup = learning_setup(name, scenario="clustered", n_edges=n_edges, devices_per_edge=per,
                           heterogeneity="none", alpha=1.0, min_rows=1, seed=0, benchmark_kwargs=kwargs,
                           pretrain_kwargs=pre)
    plan = schedule(setup.scenario, "hierarchical", e_agg=2, seed=0)
    config = TrainConfig(rounds=2, local_steps=5, batch_size=16, eval_every=0, device=args.device)
    train(setup.scenario, plan, setup.data, TrainConfig(rounds=1, local_steps=5, batch_size=16, eval_every=0,
                                                        device=args.device))  # warm-up
    cuda = args.device != "cpu" and torch.cuda.is_available()
    prof = cProfile.Profile()
    start = time.perf_counter()
    prof.enable()
    train(setup.scenario, plan, setup.data, config)
    if cuda:
        torch.cuda.synchronize()
    prof.disable()
    wall = time.perf_counter() - start
    stats = pstats.Stats(prof).stats
    print(f"{setup.scenario.n_devices} devices, {name}, device {args.device}, {args.threads} torch thread(s): "
          f"one global round {wall:.1f} s wall\n")
    print("| phase | s | share |\n|---|---:|---:|")
    for label, func in PHASES:
        cum = _cumulative(stats, func)
        print(f"| {label} | {cum:.2f} | {cum / wall:.0%} |")
    backward = sum(v[3] for (_, _, fn), v in stats.items() if fn.startswith("<method 'run_backward'"))
    print(f"| - backward (autograd of the vmapped forward) | {backward:.2f} | {backward / wall:.0%} |")
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    with torch.profiler.profile(activities=activities) as tp:
        train(setup.scenario, plan, setup.data, config)
        if cuda:
            torch.cuda.synchronize()

    def self_time(e) -> float:  # microseconds: on the GPU when there is one, else on the CPU
        if cuda:
            return getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0.0)
        return e.self_cpu_time_total

    events = tp.key_averages()
    total = sum(self_time(e) for e in events) or 1.0
    where = "GPU" if cuda else "CPU"
    print(f"\n| operator (torch.profiler, {where} self time) | s | share | calls |\n|---|---:|---:|---:|")
    for e in sorted(events, key=lambda e: -self_time(e))[:15]:
        print(f"| `{e.key[:60]}` | {self_time(e) / 1e6:.2f} | {self_time(e) / total:.0%} | {e.count} |")


if __name__ == "__main__":
    main()
