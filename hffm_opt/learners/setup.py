"""The default learning experiment: a scenario and federated data that speak of the same model.

:func:`learning_setup` builds, from a benchmark name and a few size knobs:

1. the benchmark (``easy_vqa`` default, ``digits``, ``synthetic``) and the pre-trained model
   (:func:`~hffm_opt.learners.central.pretrained_model`, cached in :func:`~hffm_opt.learners.cache.cache_dir`);
2. the network: the embedded paper scenario (``scenario="paper"``, 10 edge servers x 4 devices), a
   ``clustered`` one (``n_edges`` x ``devices_per_edge``) or a scenario file, with the benchmark's modalities
   and tasks and modality/task heterogeneity (``"cluster"`` by default: each cluster draws its modality and
   task sets, the cross-cluster skew of the paper; tasks a device cannot run with its modalities are dropped,
   and a device left with none gets the first task it can run);
3. the data: the device pool split across devices (Dirichlet label skew ``alpha``, each device's own test
   part), frozen encoders evaluated once (:meth:`MultiModalTable.with_encoded`), every device's rows packed in
   contiguous tensors (:class:`~hffm_opt.learners.packed.PackedTables`; vectorised, 100,000 devices take seconds);
4. the scenario's modules replaced by the model's :func:`~hffm_opt.learners.catalogue.module_catalogue` and its
   per-device sample counts ``n_{u,t}`` by those of the partition, so schedulers, ``evaluate`` and the trainer
   all see the same modules and the same data sizes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from hffm_opt.network.generators import DeviceProfile, clustered
from hffm_opt.network.io import load_scenario
from hffm_opt.network.scenario import Scenario

from .benchmarks import Benchmark, load_benchmark
from .catalogue import module_catalogue
from .central import pretrained_model
from .partitioning import Partition, feasible_tasks, packed_device_tables, partition
from .trainer import FederatedData


@dataclass(frozen=True, eq=False)
class LearningSetup:
    """A scenario and the federated data of one experiment (``scenario`` and ``data`` go to :func:`train`)."""

    scenario: Scenario
    data: FederatedData
    benchmark: Benchmark
    partition: Partition


def learning_setup(benchmark: str = "easy_vqa", *, scenario: str = "paper", n_edges: int = 10,
                   devices_per_edge: int = 4, heterogeneity: str = "cluster", p_modality: float = 0.7,
                   p_task: float = 0.6, alpha: float = 0.5, test_fraction: float = 0.2, min_rows: int = 8,
                   seed: int = 0, benchmark_kwargs: dict | None = None, model_config: dict | None = None,
                   pretrain_kwargs: dict | None = None, cache: bool = True, progress: bool = False) -> LearningSetup:
    """Build the experiment (see the module docstring).

    ``benchmark``/``benchmark_kwargs``: :func:`~hffm_opt.learners.benchmarks.load_benchmark`; ``scenario``:
    ``"clustered"`` (``n_edges`` x ``devices_per_edge`` devices) or anything
    :func:`~hffm_opt.network.io.load_scenario` reads (``"paper"``, a paper-format file or generator config: the
    profile fills modalities and tasks); ``heterogeneity``, ``p_modality``, ``p_task``:
    :class:`~hffm_opt.network.generators.DeviceProfile`;
    ``alpha``, ``test_fraction``, ``min_rows`` (fewest rows per device and partition group): the partition;
    ``seed`` drives the model initialisation, the heterogeneity draw and the partition; ``model_config``
    (:class:`~hffm_opt.learners.model.M3TConfig` fields) and ``pretrain_kwargs``
    (:func:`~hffm_opt.learners.central.pretrain`) shape the model; ``cache`` keeps the pre-trained model;
    ``progress`` shows a progress bar while pre-training (stderr)."""
    bench = load_benchmark(benchmark, **(benchmark_kwargs or {}))
    model = pretrained_model(bench, seed=seed, config=model_config, cache=cache,
                             **{"progress": progress, **(pretrain_kwargs or {})})
    modality_names = tuple(m.name for m in bench.modalities)
    profile = DeviceProfile(modalities=modality_names, tasks=tuple(t.name for t in bench.tasks),
                            heterogeneity=heterogeneity, p_modality=p_modality, p_task=p_task, seed=seed)
    if scenario == "clustered":
        base = clustered(n_edges, devices_per_edge, seed=seed, profile=profile)
    else:
        base = load_scenario(scenario, profile)
    if base.modalities != profile.modalities or base.tasks != profile.tasks:
        raise ValueError(f"scenario = {scenario!r}: its modalities {base.modalities} and tasks {base.tasks} must be "
                         f"the {bench.name} benchmark's {profile.modalities} and {profile.tasks}")
    mods = base.devices.modalities
    tasks = _runnable_tasks(bench, mods, base.devices.tasks)
    train_pool, global_test = bench.train.with_encoded(model), bench.test.with_encoded(model)
    part = partition(train_pool, mods, tasks, alpha=alpha, test_fraction=test_fraction, seed=seed, min_size=min_rows)
    dev_train, dev_test = packed_device_tables(train_pool, part, mods, tasks)  # no per-device objects
    samples = dev_train.label_counts()
    empty = np.flatnonzero(samples.sum(axis=1) == 0)
    if empty.size:
        raise ValueError(f"devices {empty.tolist()} = no training rows: the {bench.name} pool is too small for "
                         f"{base.n_devices} devices (use fewer devices or a larger benchmark)")
    devices = dataclasses.replace(base.devices, samples=samples)
    catalogue = module_catalogue(model)
    world = base.replace(modules=catalogue, devices=devices,
                         meta=base.meta | {"benchmark": bench.name, "alpha": alpha, "learning_seed": seed})
    data = FederatedData(model=model, train=dev_train, test=dev_test, global_test=global_test)
    return LearningSetup(world, data, bench, part)


def _runnable_tasks(bench: Benchmark, modalities: np.ndarray, tasks: np.ndarray) -> np.ndarray:
    """(U, T) the drawn task sets restricted to what each device's modalities allow; a device left with no task
    gets the first task it can run."""
    names = [m.name for m in bench.modalities]
    out = feasible_tasks(bench.tasks, names, modalities, tasks)
    possible = feasible_tasks(bench.tasks, names, modalities, np.ones_like(tasks, dtype=bool))
    for u in np.flatnonzero(~out.any(axis=1)):
        out[u, int(np.argmax(possible[u]))] = True
    return out
