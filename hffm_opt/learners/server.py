"""Server optimisers: how an aggregator turns the weighted mean of its participants' models into its new model.

The trainer applies one at each of two tiers (:class:`~hffm_opt.learners.trainer.TrainConfig` ``edge_optimizer``,
``cloud_optimizer``): at the edge tier to each cluster's copy of each parameter after the cluster aggregation
(rows = clusters), at the cloud tier to the global copy after the cloud average (one row). Every optimiser sees
``old`` (the model the participants started from: the cluster's copy before the round, or the global model of the
last cloud aggregation), ``mean`` (the sample-weighted mean of what came back) and its own per-row ``state``, and
updates only the rows ``mask`` marks (modules aggregated that round); the other rows, and their state, are kept
bit-identical. With the pseudo-gradient ``g = old - mean`` (Reddi et al., "Adaptive Federated Optimization",
ICLR 2021):

- ``fedavg``: ``new = mean`` (exactly; no state);
- ``fedavgm``: heavy-ball server momentum, ``m <- beta m + g``, ``new = old - lr m``
  (lr = 1 and beta = 0 is FedAvg);
- ``fedadam``: ``m <- b1 m + (1 - b1) g``, ``v <- b2 v + (1 - b2) g^2``, ``new = old - lr m / (sqrt(v) + eps)``,
  without bias correction and with ``eps`` the degree of adaptivity (tau of the paper), as in its Algorithm 2.

State tensors are ``{name: (rows, *shape)}`` of the same dtype and device as the model, so the trainer keeps them
in its checkpoint as they are.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

SERVER_OPTIMIZERS = ("fedavg", "fedavgm", "fedadam")
#: the server learning rate each optimiser uses when ``server_lr`` is None
DEFAULT_SERVER_LR = {"fedavg": 1.0, "fedavgm": 1.0, "fedadam": 0.01}


class ServerOptimizer(Protocol):
    """One aggregator's update rule: ``step(old, mean, state, mask) -> new`` (``state`` updated in place)."""

    name: str

    def step(self, old: Tensor, mean: Tensor, state: dict[str, Tensor], mask: Tensor) -> Tensor:
        """The new rows; ``old``/``mean`` (R, *shape), ``mask`` (R,) bool rows to update."""


def _rows(mask: Tensor, like: Tensor) -> Tensor:
    """``mask`` (R,) shaped to broadcast against ``like`` (R, *shape)."""
    return mask.view(-1, *([1] * (like.dim() - 1)))


class FedAvg:
    """``new = mean`` on the masked rows."""

    name = "fedavg"

    def step(self, old: Tensor, mean: Tensor, state: dict[str, Tensor], mask: Tensor) -> Tensor:
        return torch.where(_rows(mask, old), mean, old)


class FedAvgM:
    """Server momentum: ``m <- momentum m + (old - mean)``, ``new = old - lr m``."""

    name = "fedavgm"

    def __init__(self, lr: float = 1.0, momentum: float = 0.9):
        self.lr, self.momentum = float(lr), float(momentum)

    def step(self, old: Tensor, mean: Tensor, state: dict[str, Tensor], mask: Tensor) -> Tensor:
        keep = _rows(mask, old)
        m = state.get("m", torch.zeros_like(old))
        m_new = self.momentum * m + (old - mean)
        state["m"] = torch.where(keep, m_new, m)
        return torch.where(keep, old - self.lr * m_new, old)


class FedAdam:
    """Server Adam on the pseudo-gradient (no bias correction; ``eps`` = the paper's tau)."""

    name = "fedadam"

    def __init__(self, lr: float = 0.01, betas: tuple[float, float] = (0.9, 0.99), eps: float = 1e-3):
        self.lr, self.betas, self.eps = float(lr), (float(betas[0]), float(betas[1])), float(eps)

    def step(self, old: Tensor, mean: Tensor, state: dict[str, Tensor], mask: Tensor) -> Tensor:
        keep = _rows(mask, old)
        b1, b2 = self.betas
        g = old - mean
        m = state.get("m", torch.zeros_like(old))
        v = state.get("v", torch.zeros_like(old))
        m_new = b1 * m + (1 - b1) * g
        v_new = b2 * v + (1 - b2) * g * g
        state["m"], state["v"] = torch.where(keep, m_new, m), torch.where(keep, v_new, v)
        return torch.where(keep, old - self.lr * m_new / (v_new.sqrt() + self.eps), old)


def server_optimizer(name: str, *, lr: float | None = None, momentum: float = 0.9,
                     betas: tuple[float, float] = (0.9, 0.99), eps: float = 1e-3) -> ServerOptimizer:
    """The optimiser ``name`` (one of :data:`SERVER_OPTIMIZERS`); ``lr`` None = :data:`DEFAULT_SERVER_LR`."""
    if name not in SERVER_OPTIMIZERS:
        from ..errors import ConfigError

        raise ConfigError(f"server optimizer = {name!r}: must be one of {SERVER_OPTIMIZERS}")
    lr = DEFAULT_SERVER_LR[name] if lr is None else lr
    if name == "fedavgm":
        return FedAvgM(lr, momentum)
    if name == "fedadam":
        return FedAdam(lr, betas, eps)
    return FedAvg()
