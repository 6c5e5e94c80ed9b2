"""The ``fast`` allocator: one edge server's least-energy uplink bandwidth split from the KKT conditions.

Problem (F3, FDMA): minimise sum_u E_u(b_u), E_u(b) = (N0 t_u / g_u) b (2^(S_u/(b t_u)) - 1), subject to
sum_u b_u <= B, power p_u(b_u) = (N0 b_u / g_u)(2^(S_u/(b_u t_u)) - 1) <= Pmax_u, b_u >= 0. Energy falls with
bandwidth, so the band is used whole. With x_u = S_u ln2 / (b_u t_u) stationarity reads
(N0 t_u/g_u)((x_u - 1) e^x_u + 1) = lambda (the bandwidth price), i.e. x_u = 1 + W((r_u - 1)/e) with
r_u = lambda g_u / (N0 t_u) (Lambert W, polished by Newton); the power cap is a floor b_u >= b_min_u.
A bisection on log(lambda) makes the band add up. Vectorised numpy; units Hz, s, W, J, bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import lambertw

LN2 = np.log(2.0)


class AllocationInfeasible(ValueError):
    """No bandwidth split lets every device send its bits in its time within its power cap."""


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


def _x_for_ratio(ratio: np.ndarray) -> np.ndarray:
    """Solve (x - 1) e^x + 1 = ratio for x >= 0 (ratio >= 0)."""
    x = 1.0 + np.real(lambertw((ratio - 1.0) / np.e))
    x = np.maximum(x, 1e-12)
    for _ in range(4):  # Newton polish: h(x) = (x - 1) e^x + 1 - ratio, h'(x) = x e^x
        ex = np.exp(np.minimum(x, 700.0))
        x = np.maximum(x - ((x - 1.0) * ex + 1.0 - ratio) / (x * ex), 1e-12)
    return x


def _x_at_power_cap(c_over_k: np.ndarray) -> np.ndarray:
    """Largest x with (e^x - 1)/x <= c/k (the power cap as a floor on bandwidth); bisection on x."""
    lo = np.zeros_like(c_over_k)
    hi = np.full_like(c_over_k, 1.0)
    while True:
        grow = np.expm1(np.minimum(hi, 700.0)) / hi < c_over_k
        if not grow.any():
            break
        hi = np.where(grow, hi * 2.0, hi)
        if hi.max() > 700.0:
            break
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        ok = np.expm1(mid) / np.maximum(mid, 1e-300) <= c_over_k
        lo = np.where(ok, mid, lo)
        hi = np.where(ok, hi, mid)
    return lo


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
    x_cap = np.where(send, _x_at_power_cap(np.where(send, c_over_k, 2.0)), 1.0)
    b_min = np.where(send, k / x_cap, 0.0)
    if b_min.sum() > bandwidth_total:
        u = int(np.argmax(b_min))
        raise AllocationInfeasible(f"bandwidth: the devices need at least {b_min.sum():.6g} Hz at full power but the "
                                   f"edge has {bandwidth_total:.6g} Hz (device {u} alone needs {b_min[u]:.6g} Hz)")
    if not send.any():
        z = np.zeros(n)
        return Allocation(z, z, t, z, 0.0, 0, 0.0)

    def band(price):
        x = _x_for_ratio(price / a)
        return np.where(send, np.maximum(k / x, b_min), 0.0)

    lo = hi = float(np.median(a[send]))
    while band(lo).sum() < bandwidth_total:  # low price -> wide bands
        lo /= 10.0
    while band(hi).sum() > bandwidth_total:
        hi *= 10.0
    iterations = 0
    for iterations in range(1, 200):
        mid = np.sqrt(lo * hi)
        if band(mid).sum() > bandwidth_total:
            lo = mid
        else:
            hi = mid
        if hi / lo - 1.0 < 1e-14:
            break
    b = band(hi)  # sum(b) <= B
    energy = np.where(send, a * b * np.expm1(k / np.where(send, b, 1.0)), 0.0)
    power = np.where(send, energy / np.where(t > 0, t, 1.0), 0.0)
    x = np.where(send, k / np.where(send, b, 1.0), 0.0)
    free = send & (b > b_min * (1 + 1e-9))
    stationarity = a * ((x - 1.0) * np.exp(np.minimum(x, 700.0)) + 1.0)
    resid = float(np.max(np.abs(stationarity[free] / hi - 1.0), initial=0.0))
    resid = max(resid, max(b.sum() / bandwidth_total - 1.0, 0.0), float(np.max(power / pmax - 1.0, initial=0.0)))
    return Allocation(b, power, t, energy, float(energy.sum()), iterations, resid)
