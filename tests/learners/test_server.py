"""Server optimisers against updates computed by hand on tiny tensors: FedAvg, FedAvgM, FedAdam, masks, state."""

import math

import pytest
import torch

from hffm_opt.errors import ConfigError
from hffm_opt.learners.server import FedAdam, FedAvg, FedAvgM, server_optimizer

OLD = torch.tensor([[1.0, -2.0], [0.5, 4.0]])  # two rows (clusters) of a 2-element parameter
MEAN = torch.tensor([[0.0, -1.0], [3.0, 4.5]])
BOTH = torch.tensor([True, True])


def test_fedavg_returns_the_mean_exactly_on_the_masked_rows():
    state = {}
    new = FedAvg().step(OLD, MEAN, state, torch.tensor([True, False]))
    assert torch.equal(new[0], MEAN[0]) and torch.equal(new[1], OLD[1]) and state == {}


def test_fedavgm_two_steps_by_hand():
    opt, state = FedAvgM(lr=0.5, momentum=0.9), {}
    # step 1: g = old - mean = [[1, -1], [-2.5, -0.5]]; m = g; new = old - 0.5 g
    new = opt.step(OLD, MEAN, state, BOTH)
    torch.testing.assert_close(new, torch.tensor([[0.5, -1.5], [1.75, 4.25]]))
    torch.testing.assert_close(state["m"], torch.tensor([[1.0, -1.0], [-2.5, -0.5]]))
    # step 2 from new with mean2, row 1 masked out: m0 = 0.9 [1, -1] + (new0 - mean2_0); row 1 untouched
    mean2 = torch.tensor([[0.0, 0.0], [9.0, 9.0]])
    new2 = opt.step(new, mean2, state, torch.tensor([True, False]))
    m0 = torch.tensor([0.9 * 1.0 + 0.5, 0.9 * -1.0 - 1.5])
    torch.testing.assert_close(state["m"][0], m0)
    torch.testing.assert_close(new2[0], torch.tensor([0.5, -1.5]) - 0.5 * m0)
    assert torch.equal(new2[1], new[1]) and torch.equal(state["m"][1], torch.tensor([-2.5, -0.5]))


def test_fedavgm_with_unit_lr_and_no_momentum_is_fedavg():
    new = FedAvgM(lr=1.0, momentum=0.0).step(OLD, MEAN, {}, BOTH)
    torch.testing.assert_close(new, MEAN, rtol=0, atol=1e-6)


def test_fedadam_two_steps_by_hand():
    lr, b1, b2, eps = 0.1, 0.9, 0.99, 1e-3
    opt, state = FedAdam(lr=lr, betas=(b1, b2), eps=eps), {}
    old, mean = torch.tensor([[2.0, 1.0]]), torch.tensor([[1.0, 1.0]])  # g = [1, 0]
    new = opt.step(old, mean, state, torch.tensor([True]))
    m, v = [0.1, 0.0], [0.01, 0.0]  # (1 - b1) g, (1 - b2) g^2
    want = [2.0 - lr * 0.1 / (math.sqrt(0.01) + eps), 1.0]
    torch.testing.assert_close(new, torch.tensor([want]))
    torch.testing.assert_close(state["m"], torch.tensor([m]))
    torch.testing.assert_close(state["v"], torch.tensor([v]))
    # step 2: g = new - mean2 with mean2 = [new0 + 2, 1 - 3] -> g = [-2, 3]
    mean2 = torch.tensor([[want[0] + 2.0, -2.0]])
    new2 = opt.step(new, mean2, state, torch.tensor([True]))
    m2 = [b1 * 0.1 + (1 - b1) * -2.0, (1 - b1) * 3.0]
    v2 = [b2 * 0.01 + (1 - b2) * 4.0, (1 - b2) * 9.0]
    want2 = [want[0] - lr * m2[0] / (math.sqrt(v2[0]) + eps), 1.0 - lr * m2[1] / (math.sqrt(v2[1]) + eps)]
    torch.testing.assert_close(new2, torch.tensor([want2]))


def test_fedadam_keeps_masked_rows_and_their_state():
    opt, state = FedAdam(), {}
    opt.step(OLD, MEAN, state, BOTH)
    before = {k: v.clone() for k, v in state.items()}
    new = opt.step(OLD, MEAN + 1.0, state, torch.tensor([False, True]))
    assert torch.equal(new[0], OLD[0])
    assert all(torch.equal(state[k][0], before[k][0]) and not torch.equal(state[k][1], before[k][1]) for k in state)


def test_factory_defaults_and_errors():
    assert isinstance(server_optimizer("fedavg"), FedAvg)
    m = server_optimizer("fedavgm", momentum=0.5)
    assert (m.lr, m.momentum) == (1.0, 0.5)
    a = server_optimizer("fedadam")
    assert (a.lr, a.betas, a.eps) == (0.01, (0.9, 0.99), 1e-3)
    assert server_optimizer("fedadam", lr=0.3).lr == 0.3
    with pytest.raises(ConfigError, match="fedsgd"):
        server_optimizer("fedsgd")
