"""The ``fast`` backend for F3 models: run the KKT solvers of :mod:`.fast_kkt` on a
:class:`~hffm_opt.formulations.convex_model.ConvexModel`'s data and check the result with the model's own
verifier, exactly as the cvxpy backend's results are checked. Times in seconds.
"""

from __future__ import annotations

import time

from ..._version import __version__
from ...formulations.allocation import energy_decision, latency_decision, split_decision
from ...formulations.convex_model import ConvexModel
from ..result import Result
from . import kkt as fast_kkt


def _min_energy(data) -> dict:
    alloc = fast_kkt.min_energy_allocation(data.bits, data.time_s, data.gain, data.noise_psd, data.bandwidth_hz,
                                           data.pmax_w)
    return energy_decision(data, alloc.bandwidth_hz)


def _min_max_latency(data) -> dict:
    alloc = fast_kkt.min_max_latency_allocation(data.bits, data.gain, data.noise_psd, data.bandwidth_hz, data.pmax_w)
    return latency_decision(data, alloc.bandwidth_hz)


def _cpu_block(data) -> dict:
    return split_decision(data, *fast_kkt.best_split(data))


KINDS = {"min_energy": _min_energy, "min_max_latency": _min_max_latency, "cpu_block": _cpu_block}


def solve_fast(model: ConvexModel) -> Result:
    """Solve an F3 model with the dedicated solver; ``optimal`` only when the model's KKT check passes."""
    backend = "fast"
    if model.precheck_message:
        return Result(status="infeasible", build_s=model.build_s, runtime_s=0.0, backend=backend,
                      backend_version=__version__, message=f"infeasible: {model.precheck_message}")
    t0 = time.perf_counter()
    try:
        decision = KINDS[model.kind](model.data)
    except fast_kkt.AllocationInfeasible as exc:
        return Result(status="infeasible", build_s=model.build_s, runtime_s=time.perf_counter() - t0, backend=backend,
                      backend_version=__version__, message=f"infeasible: {exc}")
    except fast_kkt.AllocationNotConverged as exc:
        return Result(status="error", build_s=model.build_s, runtime_s=time.perf_counter() - t0, backend=backend,
                      backend_version=__version__, message=str(exc))
    solve_s = time.perf_counter() - t0
    reason = model.verify(decision)
    if reason:
        return Result(status="error", build_s=model.build_s, runtime_s=solve_s, backend=backend,
                      backend_version=__version__, message=f"the fast solver's point is rejected: {reason}")
    objective = model.objective(decision)
    return Result(status="optimal", objective=objective, bound=objective, build_s=model.build_s, runtime_s=solve_s,
                  backend=backend, backend_version=__version__, decision=decision, message="optimal (KKT-checked)")
