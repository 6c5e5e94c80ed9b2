"""Learners: the modular M3T PyTorch model, its module catalogue, offline data and vectorised local training.

- :mod:`.specs`: :class:`ModalitySpec` and :class:`TaskSpec`, what the model reads and predicts.
- :mod:`.layers`: the building blocks (encoders, masked attention, backbone, adapter, mixture of experts, head).
- :mod:`.model`: :class:`M3TModel` and :class:`M3TConfig` (encoders, prompts, frozen backbone, adapters, MoE, heads).
- :mod:`.catalogue`: :func:`module_catalogue`, the ``ModuleSpec`` of every module, from the real model.
- :mod:`.table`: :class:`MultiModalTable` and its :class:`Batch`.
- :mod:`.benchmarks`: the easy-VQA / digits / synthetic :class:`Benchmark` s (:func:`load_benchmark`).
- :mod:`.partitioning`: the Dirichlet :func:`partition` across devices, :func:`device_tables`, :func:`sample_counts`.
- :mod:`.packed`: :class:`PackedTables`, every device's rows in contiguous tensors (vectorised sampling, gathering)
  and :class:`DeviceBatches`, the minibatches of many devices.
- :mod:`.device`: :func:`resolve_device` (``cpu``/``cuda``/``auto``), devices per vectorised call, and
  :func:`keep_freed_memory`.
- :mod:`.evaluation`: accuracy of many cluster models at once (vmapped), per-device accuracy.
- :mod:`.cache`: :func:`cache_dir`, where decoded images and pre-trained models are kept.
- :mod:`.central`: :func:`pretrain` (foundation-model stand-in), central training, the linear-probe baseline;
  :mod:`.pretraining`: the label-free pre-training objectives of the frozen parts.
- :mod:`.priced`: :func:`priced_catalogue`, the simulated foundation model (:data:`VILT_B32`) module by module on
  the proxy's modules: what schedulers, ``evaluate`` and the clock price.
- :mod:`.local`: :func:`local_train` (vmap over devices, sparse experts, fused optimiser) and
  :func:`local_train_reference` (plain loop).
- :mod:`.trainer`: :func:`train` a plan on the simulated clock -> :class:`History` (:mod:`.history`);
  :mod:`.config`: :class:`TrainConfig`, :class:`FederatedData`; :mod:`.server`: the server optimisers (FedAvg,
  FedAvgM, FedAdam) of the edge and cloud tiers; :mod:`.participation`: availability per round, traces, sampling;
  :mod:`.dynamics`: block fading and the realised round's price.
- :mod:`.setup`: :func:`learning_setup`, the default experiment (paper scenario, easy-VQA, the priced catalogue,
  a validation split).

The commands are :mod:`hffm_opt.cli.learn` (``hffm-opt train`` / ``run``) and
:mod:`hffm_opt.analysis.learner_bench` (``hffm-opt bench --learner``).
"""

from .benchmarks import (
    Benchmark,
    digits_benchmark,
    easy_vqa_benchmark,
    easy_vqa_question_embeddings,
    load_benchmark,
    synthetic_benchmark,
)
from .cache import cache_dir
from .catalogue import catalogue_summary, forward_flops, module_catalogue, module_param_counts
from .central import (
    central_vs_linear,
    evaluate_accuracy,
    frozen_features,
    linear_probe,
    pretrain,
    pretrain_encoders,
    pretrained_model,
    train_central,
)
from .device import keep_freed_memory, resolve_device
from .evaluation import served_accuracy
from .local import (
    DeviceBatches,
    LocalResult,
    local_train,
    local_train_reference,
    param_masks,
    sample_device_batches,
    stack_params,
    unstack_params,
)
from .model import ForwardOutput, M3TConfig, M3TModel, build_model, task_loss
from .packed import PackedTables
from .participation import Participation
from .partitioning import (
    Partition,
    device_tables,
    dirichlet_split,
    feasible_tasks,
    packed_device_tables,
    partition,
    sample_counts,
)
from .priced import VILT_B32, FoundationModel, priced_catalogue
from .server import SERVER_OPTIMIZERS, server_optimizer
from .setup import LearningSetup, learning_setup, validation_split
from .specs import ModalitySpec, TaskSpec
from .table import Batch, MultiModalDataset, MultiModalTable
from .trainer import FederatedData, History, TrainConfig, train, training_calls

__all__ = [
    "SERVER_OPTIMIZERS", "VILT_B32", "FoundationModel", "Participation", "priced_catalogue", "served_accuracy",
    "server_optimizer", "validation_split",
    "Batch", "Benchmark", "DeviceBatches", "FederatedData", "ForwardOutput", "History", "LearningSetup",
    "LocalResult", "M3TConfig", "M3TModel", "ModalitySpec", "MultiModalDataset", "MultiModalTable", "PackedTables",
    "Partition",
    "TaskSpec", "TrainConfig", "build_model", "cache_dir", "catalogue_summary", "central_vs_linear",
    "device_tables", "digits_benchmark", "dirichlet_split", "easy_vqa_benchmark", "easy_vqa_question_embeddings",
    "evaluate_accuracy", "feasible_tasks", "forward_flops", "frozen_features", "keep_freed_memory", "learning_setup",
    "linear_probe",
    "load_benchmark", "local_train", "local_train_reference", "module_catalogue", "module_param_counts",
    "packed_device_tables", "param_masks", "partition", "pretrain", "pretrain_encoders", "pretrained_model",
    "resolve_device", "sample_counts",
    "sample_device_batches", "stack_params", "synthetic_benchmark", "task_loss", "train", "train_central",
    "training_calls",
    "unstack_params",
]
