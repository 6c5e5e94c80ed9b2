"""``hffm-opt bench --learner``: speed of the hierarchical trainer against plain centralised training.

For each device count ``n`` (default 40, 400, 1,000; ``clustered`` scenarios of 10 edge servers, every device
with every modality and task, the default easy-VQA model): the wall time of one global round of the
hierarchical plan (``e_agg`` = 2 edge rounds, ``tau`` local steps of ``batch`` samples per device, no
evaluation), the trainer's throughput (samples trained per wall second) and that of plain centralised training
(:func:`~hffm_opt.learners.central.train_central`: one model, the same samples, the same batch size, Adam), and
their ratio. Units: seconds, samples per second.
"""

from __future__ import annotations

import copy
import json
import sys
import time

import numpy as np

N_EDGES = 10


def _union(tables):
    """All devices' training rows as one table (the tables share their sources)."""
    from ..learners.table import MultiModalTable

    first = tables[0]
    index = np.concatenate([t.index.numpy() for t in tables])
    labels = np.concatenate([t.labels.numpy() for t in tables])
    return MultiModalTable("union", first.modalities, first.tasks, first.sources, index, labels, first.encoded)


def bench_learner(sizes=(40, 400, 1000), *, benchmark: str = "easy_vqa", local_steps: int = 5, batch_size: int = 16,
                  central_steps: int = 400, seed: int = 0, progress=None) -> list[dict]:
    """One row per device count: ``n_devices``, ``round_s`` (wall s of one global round), ``fl_samples_per_s``,
    ``central_samples_per_s`` (over ``central_steps`` steps) and ``ratio`` (FL / central)."""
    from hffm_opt.schedulers import schedule

    from ..learners.central import train_central
    from ..learners.setup import learning_setup
    from ..learners.trainer import TrainConfig, train

    rows = []
    for n in (progress(sizes) if progress else sizes):
        setup = learning_setup(benchmark, scenario="clustered", n_edges=N_EDGES, devices_per_edge=max(1, n // N_EDGES),
                               heterogeneity="none", alpha=1.0, min_rows=1, seed=seed)
        plan = schedule(setup.scenario, "hierarchical", e_agg=2, seed=seed)
        config = TrainConfig(rounds=plan.e_agg, local_steps=local_steps, batch_size=batch_size, eval_every=0,
                             seed=seed)
        start = time.perf_counter()
        hist = train(setup.scenario, plan, setup.data, config)
        round_s = time.perf_counter() - start
        samples = sum(r["participants"] for r in hist.records) * local_steps * batch_size
        model = copy.deepcopy(setup.data.model)
        union = _union(setup.data.train)
        run = train_central(model, union, epochs=central_steps * batch_size / len(union), batch_size=batch_size,
                            lr=config.lr, seed=seed)
        central = run["steps"] * batch_size / run["seconds"]
        fl = samples / round_s
        rows.append({"n_devices": setup.scenario.n_devices, "round_s": round_s, "fl_samples_per_s": fl,
                     "central_samples_per_s": central, "ratio": fl / central})
    return rows


def cmd_bench_learner(args) -> int:
    """The ``bench --learner`` command (``args.json``: print ``{"learner": rows}``). Runs with one torch thread, as
    ``train`` and ``run`` do by default (on a shared 2-core machine, two threads ran both sides ~10x slower)."""
    import torch

    torch.set_num_threads(1)
    progress = None
    if not args.json:
        from tqdm import tqdm

        progress = lambda it: tqdm(it, desc="learner bench", file=sys.stderr, leave=False)  # noqa: E731
    rows = bench_learner(progress=progress)
    if args.json:
        print(json.dumps({"learner": rows}))
        return 0
    print(f"{'devices':>8}{'round s':>10}{'FL samples/s':>15}{'central samples/s':>19}{'ratio':>8}")
    for r in rows:
        print(f"{r['n_devices']:>8}{r['round_s']:>10.2f}{r['fl_samples_per_s']:>15.0f}"
              f"{r['central_samples_per_s']:>19.0f}{r['ratio']:>8.2f}")
    print("(one global round = 2 edge rounds of the hierarchical plan, 5 local steps of 16 samples per device; "
          "central = one model, same samples, batch 16)")
    return 0
