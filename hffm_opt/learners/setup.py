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
   Before partitioning, ``validation_fraction`` of the pool's items (easy-VQA: images with all their rows; a
   row's item is that of its first modality) are held out as the validation table
   (``FederatedData.validation``): disjoint from every device's rows and from the global test set, for tuning
   and early stopping;
4. the scenario's modules replaced by a catalogue of the same modules (module k of the model is module k of the
   scenario) and its per-device sample counts ``n_{u,t}`` by those of the partition, so schedulers,
   ``evaluate`` and the trainer all see the same modules and the same data sizes. ``pricing="foundation"``
   (default) prices the foundation model being simulated (:func:`~hffm_opt.learners.priced.priced_catalogue`:
   ViLT-B/32 sizes and FLOPs, trainable update = the scenario's ``model_bits``); ``pricing="proxy"`` prices the
   small model that actually trains (:func:`~hffm_opt.learners.catalogue.module_catalogue`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from hffm_opt.errors import ConfigError, ScenarioError
from hffm_opt.network.generators import PAPER_LAYOUT, DeviceProfile, clustered
from hffm_opt.network.io import load_scenario
from hffm_opt.network.scenario import Scenario

from .benchmarks import Benchmark, load_benchmark
from .catalogue import module_catalogue
from .central import pretrained_model
from .partitioning import Partition, feasible_tasks, packed_device_tables, partition
from .priced import priced_catalogue
from .table import MultiModalTable
from .trainer import FederatedData

PRICING = ("foundation", "proxy")


@dataclass(frozen=True, eq=False)
class LearningSetup:
    """A scenario and the federated data of one experiment (``scenario`` and ``data`` go to :func:`train`).

    ``pool`` is the table the ``partition`` indexes: the rows ``pool_rows`` of ``benchmark.train``; the
    validation table holds the rows ``validation_rows`` of ``benchmark.train`` (no row or item in common)."""

    scenario: Scenario
    data: FederatedData
    benchmark: Benchmark
    partition: Partition
    pool: MultiModalTable
    pool_rows: np.ndarray
    validation_rows: np.ndarray


def learning_setup(benchmark: str = "easy_vqa", *, scenario: str = "paper", n_edges: int = PAPER_LAYOUT["n_edges"],
                   devices_per_edge: int = PAPER_LAYOUT["devices_per_edge"], heterogeneity: str = "cluster",
                   p_modality: float = 0.7,
                   p_task: float = 0.6, alpha: float = 0.5, test_fraction: float = 0.2, min_rows: int = 8,
                   validation_fraction: float = 0.1, pricing: str = "foundation", seed: int = 0, pretrain_seed: int = 0,
                   benchmark_kwargs: dict | None = None, model_config: dict | None = None,
                   pretrain_kwargs: dict | None = None, cache: bool = True, progress: bool = False) -> LearningSetup:
    """Build the experiment (see the module docstring).

    ``benchmark``/``benchmark_kwargs``: :func:`~hffm_opt.learners.benchmarks.load_benchmark`; ``scenario``:
    ``"clustered"`` (``n_edges`` x ``devices_per_edge`` devices) or anything
    :func:`~hffm_opt.network.io.load_scenario` reads (``"paper"``, a paper-format file or generator config: the
    profile fills modalities and tasks); ``heterogeneity``, ``p_modality``, ``p_task``:
    :class:`~hffm_opt.network.generators.DeviceProfile`;
    ``alpha``, ``test_fraction``, ``min_rows`` (fewest rows per device and partition group): the partition;
    ``validation_fraction`` in [0, 1): share of the pool's items held out for validation (0 = none);
    ``pricing``: ``"foundation"`` or ``"proxy"`` (module docstring);
    ``seed`` drives the initialisation of the trainable modules, the heterogeneity draw and the partition;
    ``pretrain_seed`` the pre-trained (frozen) foundation model, one artifact shared by every seed; ``model_config``
    (:class:`~hffm_opt.learners.model.M3TConfig` fields) and ``pretrain_kwargs``
    (:func:`~hffm_opt.learners.central.pretrain`) shape the model; ``cache`` keeps the pre-trained model;
    ``progress`` shows a progress bar while pre-training (stderr)."""
    if pricing not in PRICING:
        raise ConfigError(f"pricing = {pricing!r}: must be one of {PRICING}")
    if not 0.0 <= validation_fraction < 1.0:
        raise ConfigError(f"validation_fraction = {validation_fraction!r}: must be in [0, 1)")
    bench = load_benchmark(benchmark, **(benchmark_kwargs or {}))
    model = pretrained_model(bench, seed=pretrain_seed, config=model_config, cache=cache,
                             **{"progress": progress, **(pretrain_kwargs or {})})
    model.reset_modules([k for k in model.module_names() if not model.is_frozen(k)], seed=seed)
    modality_names = tuple(m.name for m in bench.modalities)
    profile = DeviceProfile(modalities=modality_names, tasks=tuple(t.name for t in bench.tasks),
                            heterogeneity=heterogeneity, p_modality=p_modality, p_task=p_task, seed=seed)
    if scenario == "clustered":
        base = clustered(n_edges, devices_per_edge, seed=seed, profile=profile)
    else:
        base = load_scenario(scenario, profile)
    if base.modalities != profile.modalities or base.tasks != profile.tasks:
        raise ScenarioError(f"scenario = {scenario!r}: its modalities {base.modalities} and tasks {base.tasks} must "
                            f"be the {bench.name} benchmark's {profile.modalities} and {profile.tasks}")
    mods = base.devices.modalities
    tasks = _runnable_tasks(bench, mods, base.devices.tasks)
    pool_rows, val_rows = validation_split(bench.train, validation_fraction, seed)
    encoded, global_test = bench.train.with_encoded(model), bench.test.with_encoded(model)  # each item once
    train_pool = encoded.subset(pool_rows)
    validation = encoded.subset(val_rows, f"{bench.name}/validation") if len(val_rows) else None
    part = partition(train_pool, mods, tasks, alpha=alpha, test_fraction=test_fraction, seed=seed, min_size=min_rows)
    dev_train, dev_test = packed_device_tables(train_pool, part, mods, tasks)  # no per-device objects
    samples = dev_train.label_counts()
    empty = np.flatnonzero(samples.sum(axis=1) == 0)
    if empty.size:
        raise ConfigError(f"devices {empty.tolist()} = no training rows: the {bench.name} pool is too small for "
                          f"{base.n_devices} devices (use fewer devices or a larger benchmark)")
    devices = dataclasses.replace(base.devices, samples=samples)
    if pricing == "foundation":
        catalogue = priced_catalogue(model, base.prototype.model_bits)
    else:
        catalogue = module_catalogue(model)
    world = base.replace(modules=catalogue, devices=devices,
                         meta=base.meta | {"benchmark": bench.name, "alpha": alpha, "learning_seed": seed,
                                           "pricing": pricing, "validation_fraction": validation_fraction})
    data = FederatedData(model=model, train=dev_train, test=dev_test, global_test=global_test, validation=validation)
    return LearningSetup(world, data, bench, part, train_pool, pool_rows, val_rows)


def validation_split(table: MultiModalTable, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(pool rows, validation rows) of ``table``, sorted and disjoint: ``fraction`` of the items (rounded, at
    least one when ``fraction > 0``) go to validation with every row that has them. A row's item is the one of its
    first modality, so rows sharing it (an easy-VQA image and its questions) stay on one side."""
    index = table.index.cpu().numpy()
    if fraction <= 0 or len(index) == 0:
        return np.arange(len(index)), np.zeros(0, np.int64)
    first = (index >= 0).argmax(axis=1)
    item = index[np.arange(len(index)), first]
    groups, inverse = np.unique(np.stack([first, item], axis=1), axis=0, return_inverse=True)
    rng = np.random.default_rng([seed, 0x7A11D])  # its own stream: the partition's draws do not move
    n_val = max(1, int(round(fraction * len(groups))))
    chosen = np.zeros(len(groups), bool)
    chosen[rng.permutation(len(groups))[:n_val]] = True
    is_val = chosen[inverse.reshape(-1)]
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def _runnable_tasks(bench: Benchmark, modalities: np.ndarray, tasks: np.ndarray) -> np.ndarray:
    """(U, T) the drawn task sets restricted to what each device's modalities allow; a device left with no task
    gets the first task it can run."""
    names = [m.name for m in bench.modalities]
    out = feasible_tasks(bench.tasks, names, modalities, tasks)
    possible = feasible_tasks(bench.tasks, names, modalities, np.ones_like(tasks, dtype=bool))
    for u in np.flatnonzero(~out.any(axis=1)):
        out[u, int(np.argmax(possible[u]))] = True
    return out
