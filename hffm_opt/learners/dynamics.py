"""The realised edge round: the plan as it runs on this round's channel with this round's devices, priced by
``evaluate``.

The plan fixes one global period on one channel draw. When the rounds differ (:attr:`TrainConfig.dynamic`),
each edge round is priced on its own:

- the devices that do not take part this round (unavailable or not sampled,
  :mod:`hffm_opt.learners.participation`) train nothing: their rows of ``plan.train`` are cleared. Their place in
  a D2D relay tree is kept (the tree is part of the plan's structure; a relay that trains nothing only forwards);
- with ``fading="block"`` every gain is redrawn (:func:`hffm_opt.network.fading.redraw_fading`, on the run's
  fading stream) and the continuous part (CPU speeds, bandwidth, powers) is re-solved for the new channel within
  the period budget of the plan as given, for all the plan's devices (the allocation is made before the round
  knows who shows up: a device that does not take part leaves its bandwidth share unused)
  (:func:`hffm_opt.solvers.f4.cluster.optimise_continuous`, as :func:`hffm_opt.analysis.dynamic.run_dynamic`
  does); when the budget cannot be met the previous decisions are kept;
- ``evaluate(channel, realised plan)`` prices the round: its stragglers are dropped from the round's aggregate,
  and the clock and the energy advance by the figures of the round's position in its period
  (``round_end_s[i] - round_end_s[i-1]``, ``round_energy_j[i]``). The trainer never prices anything itself.

The structure of the plan (association, modules, tiers, trees, ``e_agg``) never changes. The fading generator and
the current continuous decisions are part of the trainer's checkpoint (:meth:`RoundPricer.state`).
"""

from __future__ import annotations

import json
import time
from typing import NamedTuple

import numpy as np

from hffm_opt.evaluate import Metrics, evaluate
from hffm_opt.network.fading import redraw_fading
from hffm_opt.network.scenario import Scenario
from hffm_opt.plan import Plan

from .participation import stream

#: the plan's continuous decisions, re-solved under block fading
CONTINUOUS = ("cpu_hz", "bandwidth_hz", "power_w", "d2d_power_w", "d2d_down_power_w")


def resolve_continuous(scenario: Scenario, plan: Plan, budget_s: float) -> tuple[Plan, bool, float]:
    """``plan`` with its continuous part re-solved for ``scenario`` within the period budget (s): (the new plan,
    or ``plan`` itself made for ``scenario`` when the budget cannot be met; feasible; wall time of the solve, s)."""
    from hffm_opt.solvers.f4.cluster import optimise_continuous  # cvxpy loads only when the channel moves

    current = plan.for_scenario(scenario)  # the decisions carry over to the redrawn channel
    t0 = time.perf_counter()
    new, _, problems = optimise_continuous(scenario, current, budget_s)
    return (current if problems else new), not problems, time.perf_counter() - t0


class RoundPrice(NamedTuple):
    """``metrics`` of the realised round's plan on its channel (a whole period; the trainer takes the round's
    position), ``resolved`` (block fading: the re-solve met the budget; None with static fading)."""

    metrics: Metrics
    resolved: bool | None


class RoundPricer:
    """Prices every edge round of one run (see the module docstring). ``plan`` is the plan as run (its local
    steps and batch size those actually trained), ``metrics`` its ``evaluate`` on ``scenario``."""

    def __init__(self, scenario: Scenario, plan: Plan, metrics: Metrics, fading: str = "static", seed: int = 0):
        self.scenario, self.plan, self.metrics = scenario, plan, metrics
        self.block = fading == "block"
        self.rng = stream(seed, "fading")
        self.budget_s = metrics.period_latency_s
        self.current = plan  # the continuous decisions in force (block fading carries them from round to round)

    def price(self, taking_part: np.ndarray | None) -> RoundPrice:
        """Price a round in which the devices ``taking_part`` ((U,) bool; None = every device) train."""
        if not self.block and taking_part is None:
            return RoundPrice(self.metrics, None)
        train = self.plan.train if taking_part is None else self.plan.train & taking_part[:, None]
        if not self.block:
            return RoundPrice(evaluate(self.scenario, self.plan.replace(train=train)), None)
        drawn = redraw_fading(self.scenario, self.rng)
        self.current, feasible, _ = resolve_continuous(drawn, self.current, self.budget_s)
        return RoundPrice(evaluate(drawn, self.current.replace(train=train)), feasible)

    def state(self) -> str:
        """The fading generator and the continuous decisions in force, as JSON text (for a checkpoint)."""
        return json.dumps({"rng": self.rng.bit_generator.state,
                           "current": {f: getattr(self.current, f).tolist() for f in CONTINUOUS}})

    def load_state(self, text: str) -> None:
        """Restore :meth:`state`."""
        doc = json.loads(text)
        self.rng.bit_generator.state = doc["rng"]
        self.current = self.plan.replace(**{f: np.asarray(v, dtype=float) for f, v in doc["current"].items()})
