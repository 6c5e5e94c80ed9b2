"""FedProx in local training: the gradient of mu/2 ||w - w_start||^2, by hand and through both training paths."""

import numpy as np
import pytest
import torch

from hffm_opt.learners.benchmarks import load_benchmark
from hffm_opt.learners.local import (
    local_train,
    local_train_reference,
    proximal,
    sample_device_batches,
    stack_params,
)
from hffm_opt.learners.model import M3TModel
from hffm_opt.learners.partitioning import device_tables, partition

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def setup():
    bench = load_benchmark("synthetic", n_modalities=2, n_tasks=2, n_samples=300, seed=1)
    model = M3TModel(bench.model_config(d_model=16, d_ff=16, d_expert=16), seed=0)
    n_dev = 3
    mods, tasks = np.ones((n_dev, 2), bool), np.ones((n_dev, 2), bool)
    train, _ = device_tables(bench.train, partition(bench.train, mods, tasks, alpha=1.0, seed=0), mods, tasks)
    batches = sample_device_batches(train, steps=2, batch_size=8, rng=0)
    masks = np.ones((n_dev, len(model.module_names())), bool)
    masks[1, model.module_names().index("head:t0")] = False
    g = torch.Generator().manual_seed(0)
    stacked = {n: x + 0.01 * torch.randn(x.shape, generator=g) for n, x in stack_params(model, n_dev).items()}
    return model, stacked, masks, batches


def test_proximal_gradient_by_hand():
    grads = {"a": torch.tensor([1.0, -1.0]), "b": torch.tensor([[0.5]])}
    params = {"a": torch.tensor([3.0, 0.0]), "b": torch.tensor([[2.0]])}
    start = {"a": torch.tensor([1.0, 1.0]), "b": torch.tensor([[4.0]])}
    got = proximal(grads, params, start, 0.5)  # g + 0.5 (w - w0)
    torch.testing.assert_close(got["a"], torch.tensor([2.0, -1.5]))
    torch.testing.assert_close(got["b"], torch.tensor([[-0.5]]))
    assert proximal(grads, params, start, 0.0)["a"] is grads["a"]


def test_sgd_with_lr_times_mu_one_pulls_the_second_step_back_by_the_first(setup):
    """SGD, lr * mu = 1: step 1 is unchanged (w = w_start) and step 2 gains -(w1 - w0), so
    w2(prox) = w2(no prox) + w0 - w1 exactly, with w1 the one-step result."""
    model, stacked, masks, batches = setup
    lr = 0.05
    one = local_train(model, stacked, masks, batches, 1, lr, optimizer="sgd").params
    plain = local_train(model, stacked, masks, batches, 2, lr, optimizer="sgd").params
    prox = local_train(model, stacked, masks, batches, 2, lr, optimizer="sgd", prox_mu=1 / lr).params
    moved = False
    for n in stacked:
        want = plain[n] + stacked[n] - one[n]
        torch.testing.assert_close(prox[n], want, rtol=1e-5, atol=1e-6)
        moved |= not torch.equal(one[n], stacked[n])
    assert moved
    # the masked module of device 1 stays bit-identical with the proximal term too
    head = [n for n in stacked if model.module_of(n) == "head:t0"]
    assert all(torch.equal(prox[n][1], stacked[n][1]) for n in head)


@pytest.mark.parametrize("optimizer,lr,tol", [("sgd", 0.05, 1e-5), ("adam", 1e-3, 1e-3)])
def test_vectorised_prox_equals_the_reference_loss_term(setup, optimizer, lr, tol):
    model, stacked, masks, batches = setup
    fast = local_train(model, stacked, masks, batches, 2, lr, optimizer=optimizer, prox_mu=3.0).params
    ref = local_train_reference(model, stacked, masks, batches, 2, lr, optimizer=optimizer, prox_mu=3.0).params
    for n in stacked:
        torch.testing.assert_close(fast[n], ref[n], rtol=tol, atol=tol * 0.1)


def test_bad_prox_mu_is_refused(setup):
    model, stacked, masks, batches = setup
    with pytest.raises(ValueError, match="prox_mu"):
        local_train(model, stacked, masks, batches, 1, 0.1, prox_mu=-1.0)
