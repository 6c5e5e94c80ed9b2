"""The ``fast`` F3 solvers (vectorised numpy, from the optimality conditions): one edge server's least-energy
bandwidth split (:func:`min_energy_allocation`), its min-max latency split (:func:`min_max_latency_allocation`) and
the CPU block (:func:`best_split`). The min-energy program (F3, FDMA): minimise sum_u E_u(b_u), E_u(b) = (N0 t_u / g_u) b (2^(S_u/(b t_u)) - 1), subject to
sum_u b_u <= B, power p_u(b_u) = (N0 b_u / g_u)(2^(S_u/(b_u t_u)) - 1) <= Pmax_u, b_u >= 0. Energy falls with
bandwidth, so the band is used whole. With x_u = S_u ln2 / (b_u t_u) stationarity reads
(N0 t_u/g_u)((x_u - 1) e^x_u + 1) = lambda (the bandwidth price), i.e. x_u = 1 + W((r_u - 1)/e) with
r_u = lambda g_u / (N0 t_u) (Lambert W, polished by Newton); the power cap is a floor b_u >= b_min_u.
A bisection on log(lambda) makes the band add up. Vectorised numpy; units Hz, s, W, J, bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...formulations.allocation import CpuBlockData
from ...network.channel import LN2, load_price


class AllocationInfeasible(ValueError):
    """No bandwidth split lets every device send its bits in its time within its power cap."""


class AllocationNotConverged(RuntimeError):
    """The KKT solver's point misses feasibility (1e-9 relative) or optimality (1e-6) checks: never returned."""


FEASIBILITY_TOL = 1e-9  # relative: power <= Pmax, sum of bands <= B
KKT_TOL = 1e-6  # relative stationarity residual of the devices above their power-cap floor


@dataclass(frozen=True)
class Allocation:
    """Per-device bandwidth (Hz), power (W), time (s) and energy (J); the total energy; KKT residual."""

    bandwidth_hz: np.ndarray
    power_w: np.ndarray
    time_s: np.ndarray
    energy_j: np.ndarray
    objective: float
    iterations: int
    kkt_residual: float


def _newton(h, dh, x0: np.ndarray, floor: np.ndarray, max_iter: int = 60) -> np.ndarray:
    """Vectorised Newton on an increasing convex h (per element), kept above ``floor``, to machine precision."""
    x = np.maximum(x0, floor)
    for _ in range(max_iter):
        step = h(x) / dh(x)
        new = np.maximum(x - step, floor)
        done = np.abs(new - x) <= 4e-16 * np.abs(x)
        x = new
        if done.all():
            break
    return x


def x_for_ratio(ratio: np.ndarray, x0: np.ndarray | None = None) -> np.ndarray:
    """Solve (x - 1) e^x + 1 = ratio for x > 0 (ratio > 0) by Newton; h is convex and increasing on x > 0.

    Newton falls monotonically onto the root from any start right of it: the default start min(sqrt(2 ratio),
    ln ratio + 1) is, and a warm start ``x0`` is used only where it is too (elsewhere the default replaces it).
    """
    r = np.asarray(ratio, dtype=float)
    h = lambda x: load_price(np.minimum(x, 700.0)) - r  # noqa: E731
    start = np.sqrt(2.0 * r)
    start = np.where(r > 3.0, np.minimum(start, np.log(np.maximum(r, 3.0)) + 1.0), start)
    if x0 is not None:
        start = np.where(h(x0) >= 0, x0, start)
    return _newton(h, lambda x: x * np.exp(np.minimum(x, 700.0)), start, np.full(r.shape, 1e-300))


def growth_root(c: np.ndarray, w0: np.ndarray | None = None) -> np.ndarray:
    """The positive root w of (e^w - 1)/w = c for c > 1 (Newton); 0 where c <= 1.

    h(w) = e^w - 1 - c w is convex with its minimum at ln c < w: Newton kept right of ln c converges; it starts at
    ``w0`` if given, else (c > e^2) after two fixed-point steps of w = ln c + ln w, (c >= 1.05) at 2 ln c + 1, or
    at the root of the series w/2 + w^2/6 = c - 1. Used for the power cap (largest spectral load at full power) and the min-max latency rate.
    """
    c = np.asarray(c, dtype=float)
    ok = c > 1.0
    cc = np.where(ok, c, 2.0)
    if w0 is None:
        near_one = 3.0 * (np.sqrt(0.25 + 2.0 * (cc - 1.0) / 3.0) - 0.5)
        lc = np.log(cc)
        fixed_point = lc + np.log(np.maximum(lc + np.log(np.maximum(lc, 1.0)), 1.0))  # two steps of w = ln c + ln w
        w0 = np.where(cc < 1.05, near_one, np.where(lc > 2.0, fixed_point, 2.0 * lc + 1.0))
    floor = np.log(cc) * (1.0 + 1e-12) + 1e-300
    w = _newton(lambda w: np.expm1(np.minimum(w, 700.0)) - cc * w, lambda w: np.exp(np.minimum(w, 700.0)) - cc,
                w0, floor)
    return np.where(ok, w, 0.0)


def _price_of(x: np.ndarray, a: np.ndarray) -> np.ndarray:
    """The bandwidth price a((x - 1) e^x + 1) (J/Hz) at which a device's spectral load is x (inverse of x(lambda))."""
    return a * load_price(np.minimum(x, 700.0))


def _clear_band(k: np.ndarray, a: np.ndarray, x_cap: np.ndarray, total: float) -> tuple[float, np.ndarray, int]:
    """The bandwidth price lambda (J/Hz) at which sum_u k_u / min(x_u(lambda), x_cap_u) = total, and those bands.

    x_u(lambda) solves a_u((x - 1) e^x + 1) = lambda; each band falls with the price and stops at its floor
    k_u / x_cap_u (the power cap) once lambda passes the device's cap price. The bracket is exact: at the lowest
    price of an equal split every band is at least its equal share (sum >= total), at the highest cap price every
    band sits on its floor (sum <= total, the caller checked it). Safeguarded Newton on log(lambda) (derivative in
    closed form, dx/dlambda = 1/(a x e^x)), bisection when a step leaves the bracket, until the sum is within 1e-15
    of the total or the bracket closes; the bands, never below their floors, are scaled by that last 1e-15 to use the
    band exactly. Returns (price, bands, iterations); the caller checks feasibility and stationarity.
    """
    cap_price = _price_of(x_cap, a)
    eq = np.maximum(total / k.size, k / x_cap)
    lo = float(_price_of(k / eq, a).min())
    hi = float(cap_price.max()) * (1.0 + 1e-12)
    x = None

    def bands(price, x0):
        below = price < cap_price
        xx = np.where(below, x_for_ratio(np.where(below, price, cap_price) / a, x0), x_cap)
        return np.minimum(xx, x_cap), below

    log_price, iterations = 0.5 * (np.log(lo) + np.log(hi)), 0
    while iterations < 400 and hi > lo:
        iterations += 1
        price = float(np.exp(log_price))
        x, free = bands(price, x)
        excess = float((k / x).sum()) - total
        if excess > 0:
            lo = price
        else:
            hi = price
        if abs(excess) <= 1e-15 * total or hi / lo - 1.0 < 1e-15:
            break
        slope = -float(np.sum(np.where(free, k * price / (a * x ** 3 * np.exp(np.minimum(x, 700.0))), 0.0)))
        step = log_price - excess / slope if slope < 0 else np.nan  # Newton on log(lambda)
        log_price = step if np.log(lo) < step < np.log(hi) else 0.5 * (np.log(lo) + np.log(hi))
    b = k / x
    return price, b * (total / b.sum()), iterations


def min_energy_allocation(bits, time_s, gain, noise_psd, bandwidth_total, pmax) -> Allocation:
    """Least-energy bandwidth split of one edge server's band; raises :class:`AllocationInfeasible`."""
    bits = np.asarray(bits, dtype=float)
    t = np.asarray(time_s, dtype=float)
    g = np.asarray(gain, dtype=float)
    pmax = np.broadcast_to(np.asarray(pmax, dtype=float), bits.shape)
    n = bits.size
    send = bits > 0
    if (send & ~(t > 0)).any():
        u = int(np.flatnonzero(send & ~(t > 0))[0])
        raise AllocationInfeasible(f"time_s[{u}] = {t[u]!r}: a device with bits to send needs a positive time")
    k = np.where(send, bits * LN2 / np.where(t > 0, t, 1.0), 0.0)  # Hz
    a = np.where(send, noise_psd * t / g, 1.0)  # J/Hz
    c_over_k = np.where(send, pmax * g / noise_psd / np.where(send, k, 1.0), np.inf)
    cannot = send & (c_over_k <= 1.0)
    if cannot.any():
        u = int(np.flatnonzero(cannot)[0])
        raise AllocationInfeasible(f"device {u}: cannot send {bits[u]:.6g} bit in {t[u]:.6g} s even with unlimited "
                                   f"bandwidth at its max power {pmax[u]:.6g} W")
    x_cap = np.where(send, growth_root(np.where(send, c_over_k, 2.0)), 1.0)
    b_min = np.where(send, k / x_cap, 0.0)
    if b_min.sum() > bandwidth_total:
        u = int(np.argmax(b_min))
        raise AllocationInfeasible(f"bandwidth: the devices need at least {b_min.sum():.6g} Hz at full power but the "
                                   f"edge has {bandwidth_total:.6g} Hz (device {u} alone needs {b_min[u]:.6g} Hz)")
    if not send.any():
        z = np.zeros(n)
        return Allocation(z, z, t, z, 0.0, 0, 0.0)

    price, b_send, iterations = _clear_band(k[send], a[send], x_cap[send], bandwidth_total)
    b = np.zeros(n)
    b[send] = b_send
    hi = price
    energy = np.where(send, a * b * np.expm1(k / np.where(send, b, 1.0)), 0.0)
    power = np.where(send, energy / np.where(t > 0, t, 1.0), 0.0)
    x = np.where(send, k / np.where(send, b, 1.0), 0.0)
    free = send & (b > b_min * (1 + 1e-9))
    stationarity = a * load_price(np.minimum(x, 700.0))
    resid = float(np.max(np.abs(stationarity[free] / hi - 1.0), initial=0.0))
    over_band = b.sum() / bandwidth_total - 1.0
    over_power = float(np.max(power / pmax - 1.0, initial=0.0))
    finite = bool(np.isfinite(b).all() and np.isfinite(energy).all())
    if not finite or over_band > FEASIBILITY_TOL or over_power > FEASIBILITY_TOL or not resid <= KKT_TOL:
        raise AllocationNotConverged(f"min-energy split after {iterations} price iterations: "
                                     f"{'' if finite else 'a band or an energy is not finite, '}band overrun "
                                     f"{over_band:.3g}, power overrun {over_power:.3g}, KKT residual {resid:.3g} "
                                     f"(tolerances {FEASIBILITY_TOL:g}, {FEASIBILITY_TOL:g}, {KKT_TOL:g})")
    return Allocation(b, power, t, energy, float(energy.sum()), iterations, max(resid, over_band, over_power, 0.0))


@dataclass(frozen=True)
class LatencyAllocation:
    """Per-device bandwidth (Hz) of the min-max latency split, its latency T (s) and the bisection count."""

    bandwidth_hz: np.ndarray
    latency_s: float
    iterations: int


def min_max_latency_allocation(bits, gain, noise_psd, bandwidth_total, pmax) -> LatencyAllocation:
    """The band split minimising the slowest device's upload time at full power (F3 min-max latency).

    At the optimum every device with bits finishes at the same T and the band is used whole. For a given T the
    least bandwidth of device u solves b ln(1 + a_u/b) = S_u ln2/T (a_u = g_u Pmax_u/N0, Hz), i.e.
    b = rho/w with (e^w - 1)/w = a_u/rho (:func:`growth_root`); the sum of these falls with T, and a bisection on
    log T between "each device alone with the whole band" and "the equal split" makes it equal to B.
    """
    bits = np.asarray(bits, dtype=float)
    g = np.asarray(gain, dtype=float)
    pmax = np.broadcast_to(np.asarray(pmax, dtype=float), bits.shape)
    send = bits > 0
    out = np.zeros(bits.size)
    if not send.any():
        return LatencyAllocation(out, 0.0, 0)
    s, a = bits[send], g[send] * pmax[send] / noise_psd

    w = None

    def band(t):
        nonlocal w
        rho = s * LN2 / t
        w = growth_root(a / rho, w)  # warm start from the previous T
        return rho / w

    rate = lambda b: b * np.log2(1.0 + a / b)  # noqa: E731 - the uplink rate at full power (bit/s)
    lo = float(np.max(s / rate(bandwidth_total)))
    hi = float(np.max(s / rate(bandwidth_total / s.size)))
    iterations = 0
    while hi / lo - 1.0 > 1e-14 and iterations < 200:
        iterations += 1
        mid = np.sqrt(lo * hi)
        if band(mid).sum() > bandwidth_total:
            lo = mid
        else:
            hi = mid
    b = band(hi)
    out[send] = b * (bandwidth_total / b.sum())
    return LatencyAllocation(out, float(np.max(s / rate(out[send]))), iterations)


def best_split(data: CpuBlockData, iterations: int = 80) -> tuple[np.ndarray, np.ndarray]:
    """The CPU block solved per device: (compute time, communication time) (s) minimising kappa C^3/tau^2 +
    E(b, T - tau) over tau in [C/fmax, T - full-power time]; the derivative (:meth:`CpuBlockData.slope`) is
    increasing, so a vectorised bisection finds its zero (or the bound it pushes against)."""
    tau_min, comm_min = data.min_times()
    busy, send = data.cycles > 0, data.link.bits > 0
    lo, hi = tau_min.copy(), np.maximum(data.round_s - comm_min, tau_min)
    for _ in range(iterations):
        if (hi - lo <= np.spacing(hi)).all():  # adjacent floats: further steps change nothing
            break
        mid = 0.5 * (lo + hi)
        pos = data.slope(mid) > 0
        hi = np.where(pos, mid, hi)
        lo = np.where(pos, lo, mid)
    tau = np.where(busy, 0.5 * (lo + hi), 0.0)
    tau = np.where(busy & ~send, np.maximum(data.round_s, tau_min), tau)  # nothing to send: compute slowly
    return tau, np.where(send, data.round_s - tau, 0.0)
