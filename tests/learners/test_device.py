"""The torch device of the learners: names, the clear error where CUDA is missing, and CPU/CUDA agreement (run only
where CUDA exists; skipped with its reason elsewhere)."""

import copy
import dataclasses

import numpy as np
import pytest
import torch

from hffm_opt.errors import ConfigError
from hffm_opt.learners.device import check_device_name, devices_per_call, resolve_device
from hffm_opt.learners.local import local_train, stack_params
from hffm_opt.learners.packed import PackedTables
from hffm_opt.learners.setup import learning_setup
from hffm_opt.learners.trainer import CHECKPOINT, TrainConfig, train
from hffm_opt.schedulers import schedule

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this machine "
                          f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})")
CFG = TrainConfig(rounds=2, lr=5e-3, local_steps=2, batch_size=8, eval_every=1, personalised=True)


def test_device_names_and_the_missing_cuda_error():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("gpu", "cuda:x", "cpu:1", ""):
        with pytest.raises(ConfigError, match="device"):
            check_device_name(bad)
    with pytest.raises(ConfigError):
        TrainConfig(device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
        with pytest.raises(ConfigError, match="CUDA is not available"):
            train(*_small()[:2], _small()[2], dataclasses.replace(CFG, device="cuda"))
    assert devices_per_call(torch.device("cpu"), 14, 16, 64, 70_000) == 256


_SETUP = {}


def _small():
    """A small synthetic experiment (2 clusters x 3 devices) and a hierarchical plan."""
    if not _SETUP:
        s = learning_setup("synthetic", scenario="clustered", n_edges=2, devices_per_edge=3, heterogeneity="none",
                           alpha=0.5, benchmark_kwargs={"n_samples": 900}, cache=False,
                           model_config={"d_model": 16, "d_ff": 32, "d_expert": 16, "n_heads": 2},
                           pretrain_kwargs={"epochs": 1, "encoder_epochs": 0})
        _SETUP["s"] = (s.scenario, schedule(s.scenario, "hierarchical", e_agg=2), s.data)
    return _SETUP["s"]


@CUDA
def test_local_training_on_cuda_agrees_with_the_cpu():
    scenario, plan, data = _small()
    model = data.model
    packed = PackedTables.from_tables(data.train)
    rows = packed.sample(np.arange(len(packed)), 3, 8, np.random.default_rng(0))
    masks = np.ones((len(packed), len(model.module_names())), bool)
    cpu = local_train(model, stack_params(model, len(packed)), masks, packed.gather(rows), 3, 1e-2, optimizer="adam")
    gpu_model = copy.deepcopy(model).to("cuda")
    gpu = local_train(gpu_model, stack_params(gpu_model, len(packed)), masks, packed.to("cuda").gather(rows), 3,
                      1e-2, optimizer="adam")
    for n, x in cpu.params.items():
        assert gpu.params[n].device.type == "cuda"
        torch.testing.assert_close(gpu.params[n].cpu(), x, rtol=1e-4, atol=1e-5)
    assert torch.equal(gpu.sample_counts.cpu(), cpu.sample_counts)


@CUDA
def test_training_on_cuda_agrees_with_the_cpu(tmp_path):
    scenario, plan, data = _small()
    cpu = train(scenario, plan, data, CFG, checkpoint_dir=tmp_path / "cpu")
    gpu = train(scenario, plan, data, dataclasses.replace(CFG, device="cuda"), checkpoint_dir=tmp_path / "gpu")
    a = torch.load(tmp_path / "cpu" / CHECKPOINT, weights_only=True)["clusters"]
    b = torch.load(tmp_path / "gpu" / CHECKPOINT, weights_only=True)["clusters"]  # saved as CPU tensors
    for n in a:
        torch.testing.assert_close(b[n], a[n], rtol=1e-4, atol=1e-5)
    for r, s in zip(cpu.records, gpu.records):
        assert r["time_s"] == s["time_s"] and r["participants"] == s["participants"]
        assert r["accuracy"] == pytest.approx(s["accuracy"], abs=1.0)  # percent; a near tie may flip a prediction
    assert data.model.backbone.norm.weight.device.type == "cpu"  # the caller's model is never moved
