"""``hffm-opt bench --learner``: speed of the hierarchical trainer against like-for-like central training and the
per-device reference loop.

For each device count ``n`` (default :data:`DEFAULT_SIZES`; a ``clustered`` scenario of equal clusters,
:func:`.bench.size_layout`, every device with every modality and task; easy-VQA up to
:data:`EASY_VQA_MAX` devices when it is installed, else the ``synthetic`` benchmark, large enough for about 16
training rows per device), all in one process and on one torch device (``cpu``, ``cuda`` or ``auto``):

- ``round_s``: wall time of one global round of the hierarchical plan (``e_agg`` = 2 edge rounds of ``tau``
  local steps of ``batch`` samples per device, no evaluation), measured after a warm-up edge round of the same
  run, the fastest of ``repeats`` (2) global rounds; ``fl_samples_per_s`` = the samples of that round / ``round_s``;
- ``central_samples_per_s``: one model (Adam, the same learning rate) trained on the same samples with the
  same number of optimiser steps at the same compute batch (the samples of a step of one wave of the trainer's
  calls: on a CPU one call per torch thread runs at once, each on one thread; central training runs each step on
  all those samples with every thread), after a warm-up step, the fastest of ``repeats`` passes over those steps;
  at most ``central_budget_s`` wall seconds a pass (``central_steps`` says how many steps); ``ratio`` = FL /
  central (both the best of their repeats: the least disturbed by other work on the machine);
- ``reference_samples_per_s``: :func:`~hffm_opt.learners.local.local_train_reference` (one device after the
  other, plain autograd) on the first ``reference_devices`` participants (a subset for large ``n``),
  ``speedup_vs_reference`` = FL / reference;
- ``peak_mem_mb``: on the CPU the process's peak resident memory plus its training workers' (the forked processes
  that run the calls of a wave at once, :mod:`hffm_opt.learners.workers`; pages they share with the process are
  counted in each, so this is an upper bound), the peak allocated GPU memory on CUDA;
- ``cpu_time_ratio`` (CPU only): the ratio in CPU seconds (all threads of the process and of its workers) instead
  of wall seconds, which other processes sharing the cores disturb much less;
- and what the rows were made of: ``cpu`` (the processor's model name, its widest vector instructions and the cores
  this process may use: CPU figures differ between machines), ``benchmark``, ``n_edges``, ``devices_per_call`` (of
  the first call), ``calls_at_once``, ``compute_batch``, ``central_steps`` (of ``central_steps_planned``),
  ``reference_devices``, ``threads``.

Units: seconds, samples per second, MiB.
"""

from __future__ import annotations

import argparse
import copy
import math
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

from .._io import dumps_json
from .bench import size_layout
from .memory import children_usage

DEFAULT_SIZES = (40, 400, 1000)  # `bench --learner` without --sizes
EASY_VQA_MAX = 1000  # larger sizes use the synthetic benchmark (easy-VQA has ~32,000 pool rows)
ROWS_PER_DEVICE = 16  # synthetic benchmark: pool rows per device


def _benchmark_for(n: int, benchmark: str | None) -> tuple[str, dict, dict]:
    """The benchmark of size ``n``, its keywords and the pre-training keywords (``None`` = easy-VQA up to
    EASY_VQA_MAX devices when installed, else synthetic). The synthetic benchmark has the default model's shape
    (2 modalities of 3 tokens each, 4 tasks of 13, 3, 8 and 3 classes: 14 tokens, 8 of them prompts), about
    ROWS_PER_DEVICE pool rows per device, and a short pre-training (its speed is what is measured)."""
    if benchmark is None:
        try:
            import easy_vqa  # noqa: F401

            benchmark = "easy_vqa" if n <= EASY_VQA_MAX else "synthetic"
        except ImportError:
            benchmark = "synthetic"
    if benchmark != "synthetic":
        return benchmark, {}, {}
    n_samples = max(2000, math.ceil(n * ROWS_PER_DEVICE / 0.8) + 4000)
    share = 2000 / n_samples  # 2,000 rows each for the public pre-training split and the global test set
    return "synthetic", {"n_samples": n_samples, "test_fraction": share, "public_fraction": share, "n_tasks": 4,
                         "n_latent": 13, "n_classes": [13, 3, 8, 3], "tokens": 3}, {"epochs": 1, "encoder_epochs": 0}


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mb(device, workers_mb: float) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 + workers_mb  # KiB on Linux


def _cpu_name() -> str:
    """The processor's model name, its widest vector instructions (AVX-512, AVX2) and the cores this process may use,
    from Linux's ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    from .._cores import cpu_cores

    try:
        info = Path("/proc/cpuinfo").read_text()
        name = info.split("model name", 1)[1].split(":", 1)[1].split("\n", 1)[0].strip()
        flags = set(info.split("\nflags", 1)[1].split(":", 1)[1].split("\n", 1)[0].split())
        vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    except (OSError, IndexError):
        name, vector = platform.processor() or "unknown", "vector width unknown"
    return f"{name}, {vector}, {cpu_cores()} cores"


def _central(model, data, rows: list[np.ndarray], waves: list[np.ndarray], lr: float, device, budget_s: float,
             repeats: int) -> tuple[float, float, int]:
    """(samples per wall second, per CPU second, steps) of central Adam training on ``rows`` (per edge round (D, tau,
    B)): for each wave of calls (``waves``: positions of its devices) and each local step, one step on all the
    wave's samples of that step; the fastest of ``repeats`` passes."""
    import torch

    from ..learners.model import task_loss

    model = copy.deepcopy(model).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    tasks, cols = model.task_names, list(range(len(model.task_names)))
    steps = [r[w, s].reshape(1, 1, -1) for r in rows for w in waves for s in range(r.shape[1])]
    mods = [m for m in model.modality_names if m in data.modality_names]

    def step(sel):
        b = data.gather(sel, mods)
        inputs = {m: x[0, 0] for m, x in b.inputs.items()}
        present = {m: x[0, 0] for m, x in b.present.items()}
        encoded = {m: x[0, 0] for m, x in b.encoded.items()}
        stream = {m: x[0, 0] for m, x in b.stream.items()}  # the trainer's cached first-layer stream, if it has one
        labels = b.labels[0, 0]
        out = model(inputs, present, tasks=tasks, task_valid={t: labels[:, j] >= 0 for t, j in zip(tasks, cols)},
                    encoded=encoded or None, stream=stream or None)
        loss = task_loss(model, out, labels, tasks, cols, model.cfg.aux_loss_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return sel.size

    step(steps[0])  # warm-up
    passes = []
    for _ in range(repeats):
        _sync(device)
        start, cpu, samples, done = time.perf_counter(), time.process_time(), 0, 0
        for sel in steps:
            samples += step(sel)
            done += 1
            if time.perf_counter() - start > budget_s:
                break
        _sync(device)
        passes.append((samples / (time.perf_counter() - start), samples / (time.process_time() - cpu), done))
    return max(passes)


def _reference(model, data, rows: np.ndarray, devices: int, tau: int, lr: float, device) -> float:
    """Samples per second of the per-device reference loop on the first ``devices`` rows' devices."""
    from ..learners.local import local_train_reference, stack_params

    model = model if device.type == "cpu" else copy.deepcopy(model).to(device)
    names = model.module_names()
    batches = data.gather(rows[:devices], [m for m in model.modality_names if m in data.modality_names])
    warm = data.gather(rows[:1, :1], [m for m in model.modality_names if m in data.modality_names])
    local_train_reference(model, stack_params(model, 1), np.ones((1, len(names)), bool), warm, 1, lr,
                          optimizer="adam")
    _sync(device)
    start = time.perf_counter()
    local_train_reference(model, stack_params(model, devices), np.ones((devices, len(names)), bool), batches, tau,
                          lr, optimizer="adam")
    _sync(device)
    return devices * tau * rows.shape[2] / (time.perf_counter() - start)


def bench_learner(sizes=DEFAULT_SIZES, *, benchmark: str | None = None, device: str = "cpu", local_steps: int = 5,
                  batch_size: int = 16, reference_devices: int = 16, central_budget_s: float = 60.0,
                  repeats: int = 2, seed: int = 0, progress=None) -> list[dict]:
    """One row per device count (see the module docstring for every field)."""
    import torch

    from hffm_opt.schedulers import schedule

    from ..learners.device import resolve_device
    from ..learners.setup import learning_setup
    from ..learners.trainer import TrainConfig, train, training_calls
    from ..network.limits import check_size

    dev = resolve_device(device)
    for n in sizes:  # every size checked before any is run
        n_edges, per = size_layout(n)
        check_size(n_edges * per, n_edges, n_edges * per * (per - 1), where=f"clustered ({n_edges} x {per})")
    rows_out = []
    for n in (progress(sizes) if progress else sizes):
        n_edges, per = size_layout(n)
        name, kwargs, pre = _benchmark_for(n, benchmark)
        setup = learning_setup(name, scenario="clustered", n_edges=n_edges, devices_per_edge=per,
                               heterogeneity="none", alpha=1.0, min_rows=1, seed=seed, benchmark_kwargs=kwargs,
                               pretrain_kwargs=pre)
        plan = schedule(setup.scenario, "hierarchical", e_agg=2, seed=seed)
        g = plan.e_agg
        config = TrainConfig(rounds=g * repeats + 1, local_steps=local_steps, batch_size=batch_size, eval_every=0,
                             seed=seed, device=str(dev))
        if dev.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
        marks, cpu_marks, workers_mb = [], [], [0.0]

        def mark(record):
            _sync(dev)
            marks.append(time.perf_counter())
            child_cpu_s, child_mb = children_usage()
            done = resource.getrusage(resource.RUSAGE_CHILDREN)  # children that ended (none while a run trains)
            cpu_marks.append(time.process_time() + child_cpu_s + done.ru_utime + done.ru_stime)
            workers_mb[0] = max(workers_mb[0], child_mb)

        hist = train(setup.scenario, plan, setup.data, config, on_round=mark)  # round 1 is the warm-up
        # the fastest of the repeated global rounds (and its CPU time)
        round_s, cpu_s = min((marks[g * (i + 1)] - marks[g * i], cpu_marks[g * (i + 1)] - cpu_marks[g * i])
                             for i in range(repeats))
        participants = hist.records[-1]["participants"]
        fl = participants * local_steps * batch_size * g / round_s
        fl_cpu = participants * local_steps * batch_size * g / cpu_s
        # the run's own data, participants and calls, to give central training the same work
        data, devs, waves = training_calls(setup.scenario, plan, setup.data, config)
        positions = [np.arange(len(devs))[w[0].start:w[-1].stop] for w in waves]
        rng = np.random.default_rng(seed)  # the trainer's draws of the first g edge rounds
        drawn = [data.sample(devs, local_steps, batch_size, rng) for _ in range(g)]
        central, central_cpu, steps = _central(setup.data.model, data, drawn, positions, config.lr, dev,
                                               central_budget_s, repeats)
        ref_n = min(reference_devices, len(devs))
        reference = _reference(setup.data.model, data, drawn[0], ref_n, local_steps, config.lr, dev)
        rows_out.append({
            "n_devices": setup.scenario.n_devices, "device": str(dev), "round_s": round_s, "fl_samples_per_s": fl,
            "central_samples_per_s": central, "reference_samples_per_s": reference, "ratio": fl / central,
            "speedup_vs_reference": fl / reference, "peak_mem_mb": _peak_mb(dev, workers_mb[0]), "cpu": _cpu_name(),
            "benchmark": name, "n_edges": setup.scenario.n_edges,
            "devices_per_call": int(waves[0][0].stop - waves[0][0].start),
            "calls_at_once": len(waves[0]), "compute_batch": int(len(positions[0]) * batch_size),
            "central_steps": steps, "central_steps_planned": len(waves) * local_steps * g,
            "reference_devices": ref_n, "threads": torch.get_num_threads(),
            "cpu_time_ratio": fl_cpu / central_cpu if dev.type == "cpu" else None})
    return rows_out


def default_sizes(args: argparse.Namespace, scheduler_default) -> list[int]:
    """The sizes of ``bench --learner``: ``--sizes`` when given, else :data:`DEFAULT_SIZES` (the option's own default
    ``scheduler_default`` belongs to the scheduler benchmark)."""
    sizes = args.sizes
    if isinstance(sizes, str):
        sizes = [int(v) for v in sizes.split(",")]
    sizes = list(sizes)
    return list(DEFAULT_SIZES) if sizes == list(scheduler_default) else sizes


def cmd_bench_learner(args, sizes) -> int:
    """The ``bench --learner`` command on ``sizes`` (``args.json``: print ``{"learner": rows}``;
    ``args.torch_device``; ``args.threads`` torch threads on a CPU, default every core the process may use)."""
    import torch

    from .._cores import at_most_cores, cpu_cores
    from ..learners.device import keep_freed_memory, resolve_device

    device = resolve_device(getattr(args, "torch_device", "cpu"))  # a bad device fails before any work
    keep_freed_memory()  # both sides reuse freed pages (no page fault per large temporary tensor)
    if device.type == "cpu":
        threads = at_most_cores("--threads", getattr(args, "threads", None) or cpu_cores(),
                                "the learner bench times both sides on real cores, not the scheduler of the OS")
        torch.set_num_threads(threads)
    progress = None
    if not args.json:
        from tqdm import tqdm

        progress = lambda it: tqdm(it, desc="learner bench", file=sys.stderr, leave=False)  # noqa: E731
    rows = bench_learner(sizes, device=str(device), progress=progress)
    if args.json:
        print(dumps_json({"learner": rows}))
        return 0
    print(f"{'devices':>8} {'benchmark':<10}{'round s':>9}{'FL samples/s':>14}{'central':>10}{'ratio':>7}"
          f"{'reference':>11}{'speedup':>9}{'peak MiB':>10}")
    for r in rows:
        print(f"{r['n_devices']:>8} {r['benchmark']:<10}{r['round_s']:>9.2f}{r['fl_samples_per_s']:>14.0f}"
              f"{r['central_samples_per_s']:>10.0f}{r['ratio']:>7.2f}{r['reference_samples_per_s']:>11.0f}"
              f"{r['speedup_vs_reference']:>9.1f}{r['peak_mem_mb']:>10.0f}")
    r = rows[-1] if rows else None
    if r is not None:
        print(f"(device {r['device']}; one global round = 2 edge rounds of the hierarchical plan, 5 local steps of 16 "
              f"samples per device, after a warm-up edge round, the faster of 2; central = one model, the same "
              f"samples, the same number of steps at the same compute batch ({r['compute_batch']} samples = "
              f"{r['calls_at_once']} calls at once of {r['devices_per_call']} devices x 16), the faster of 2 passes; "
              f"reference = per-device loop on {r['reference_devices']} devices)")
    return 0
