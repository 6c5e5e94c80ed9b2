"""Wireless channel model and all link physics: path loss, fading, SNR, Shannon rate, transmission time and
energy, the power or bandwidth a transmission needs, and unit conversions.

Pure numpy, vectorised over any array shape (arrays broadcast). Units: metres, watts, hertz, W/Hz, bit/s, s, J.
Every link function takes its arguments in one order, a subset of
``(bits, time_s, bandwidth_hz, power_w, gain, noise_psd)``.
"""

from __future__ import annotations

import math

import numpy as np

LN2 = np.log(2.0)
_BISECTIONS = 200  # bisection steps of min_bandwidth (relative error ~1e-15)


def dbm_to_w(dbm):
    """Power in dBm -> watts."""
    return 10.0 ** ((np.asarray(dbm, dtype=float) - 30.0) / 10.0)


def w_to_dbm(watts):
    """Power in watts -> dBm."""
    return 10.0 * np.log10(np.asarray(watts, dtype=float)) + 30.0


def db_to_linear(db):
    """Ratio in dB -> linear."""
    return 10.0 ** (np.asarray(db, dtype=float) / 10.0)


def linear_to_db(ratio):
    """Linear ratio -> dB."""
    return 10.0 * np.log10(np.asarray(ratio, dtype=float))


def noise_psd_w_per_hz(dbm_per_hz):
    """Noise power spectral density in dBm/Hz -> W/Hz."""
    return dbm_to_w(dbm_per_hz)


def path_loss(distance_m, beta0_db=-30.0, alpha=3.0, d0_m=1.0):
    """Large-scale power gain ``beta0 * (d/d0)^(-alpha)`` (linear); distances below ``d0`` are held at ``d0``."""
    d = np.maximum(np.asarray(distance_m, dtype=float), d0_m)
    return db_to_linear(beta0_db) * (d / d0_m) ** (-alpha)


def rayleigh_power(rng: np.random.Generator, shape, scale=1.0):
    """Small-scale power gain |h|^2 of Rayleigh fading, h complex Gaussian with per-component variance ``scale``.

    With ``scale=1`` (the paper prototype's draw) the mean power gain is 2.
    """
    re = rng.normal(0.0, np.sqrt(scale), size=shape)
    im = rng.normal(0.0, np.sqrt(scale), size=shape)
    return re * re + im * im


def snr(gain, power_w, bandwidth_hz, noise_psd):
    """Received SNR ``g p / (N0 b)`` (linear)."""
    return np.asarray(gain) * np.asarray(power_w) / (np.asarray(noise_psd) * np.asarray(bandwidth_hz))


def shannon_rate(bandwidth_hz, power_w, gain, noise_psd):
    """Shannon rate ``b log2(1 + g p / (N0 b))`` in bit/s; zero where the bandwidth or power is zero. Below an SNR
    of 1e-8 it is computed with ``log1p``, so a tiny SNR gives a tiny positive rate rather than 0, and where the SNR
    overflows (a tiny bandwidth) as ``b (log2(g p / N0) - log2 b)``, so it never becomes infinite."""
    b = np.asarray(bandwidth_hz, dtype=float)
    p = np.asarray(power_w, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        c = np.asarray(gain) * p / np.asarray(noise_psd)
        x = c / b
        huge = b * (np.log2(c) - np.log2(b))
        r = b * np.where(x < 1e-8, np.log1p(x) / LN2, np.log2(1.0 + x))
        r = np.where(np.isinf(x) & np.isfinite(c), huge, r)
    return np.where((b > 0) & (p > 0), r, 0.0)


def backhaul_time(bits, delay_s, rate_bps):
    """Time (s) of an edge server's backhaul transfer of ``bits``: its fixed delay plus ``bits / rate``; 0 when there
    is nothing to send."""
    bits = np.asarray(bits, dtype=float)
    return np.where(bits > 0, delay_s + bits / rate_bps, 0.0)


def transmit_time(bits, bandwidth_hz, power_w, gain, noise_psd):
    """Time (s) to send ``bits`` at ``power_w`` on ``bandwidth_hz``; 0 where bits = 0, inf where the rate is zero."""
    bits = np.asarray(bits, dtype=float)
    r = shannon_rate(bandwidth_hz, power_w, gain, noise_psd)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(bits > 0, bits / r, 0.0)


def transmit(bits, bandwidth_hz, power_w, gain, noise_psd):
    """Time (s) and energy (J) to send ``bits`` on a link; infinite time where the rate is zero and bits > 0."""
    t = transmit_time(bits, bandwidth_hz, power_w, gain, noise_psd)
    return t, np.where(np.asarray(bits) > 0, np.asarray(power_w, dtype=float) * t, 0.0)


def power_for_time(bits, time_s, bandwidth_hz, gain, noise_psd):
    """Transmit power (W) that sends ``bits`` in exactly ``time_s`` on ``bandwidth_hz``:
    ``(N0 B / g) (2^(S / (B t)) - 1)``; 0 where bits = 0."""
    t = np.asarray(time_s, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        p = noise_psd * bandwidth_hz / gain * np.expm1(np.asarray(bits) * LN2 / (bandwidth_hz * t))
    return np.where(np.asarray(bits) > 0, p, 0.0)


_SERIES_BELOW = 0.5  # spectral loads below this use the series of load_price (the closed form cancels there)
_SERIES = [(n - 1) / math.factorial(n) for n in range(2, 22)]  # coefficients of x^2 .. x^21


def load_price(x):
    """``(x - 1) e^x + 1`` for spectral loads ``x = S ln2 / (B t) >= 0`` (the price of a hertz, -dE/dB, in units of
    ``N0 t / g``), accurate to rounding also for small ``x``: there the closed form cancels (it is ``x^2 / 2`` to
    first order, and rounds to 0 below ``x ~ 1e-8``, e.g. a long time budget), so it is summed as its series
    ``sum_n (n - 1) x^n / n!`` below ``_SERIES_BELOW`` (only where needed: the solvers call this in their inner
    loops). Overflows to inf above ``x ~ 700``."""
    x = np.asarray(x, dtype=float)
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.atleast_1d((x - 1.0) * np.exp(x) + 1.0)
    flat = np.atleast_1d(x)
    small = flat < _SERIES_BELOW  # loads are >= 0
    if small.any():
        xs = flat[small]
        series = np.zeros_like(xs)
        for c in reversed(_SERIES):
            series = series * xs + c
        out[small] = series * xs * xs
    return out.reshape(x.shape)


def link_energy(bits, time_s, bandwidth_hz, gain, noise_psd):
    """Least energy (J) to send ``bits`` in ``time_s`` on ``bandwidth_hz``: the power of :func:`power_for_time`
    times the time, ``(N0 B t / g) (2^(S / (B t)) - 1)``; 0 where bits = 0."""
    return power_for_time(bits, time_s, bandwidth_hz, gain, noise_psd) * np.asarray(time_s, dtype=float)


def min_bandwidth(bits, time_s, power_w, gain, noise_psd) -> np.ndarray:
    """Least bandwidth (Hz) with ``b log2(1 + g P / (N0 b)) >= bits / time_s``.

    0 where ``bits == 0``; inf where the rate needed is at least ``g P / (N0 ln 2)`` (unreachable at any bandwidth)
    or the gain is NaN/0. With ``z = S ln2 / (b t)`` and ``k = (S/t) ln2 N0 / (g P)`` the condition is
    ``e^z - 1 <= z / k``; its positive root is bracketed in ``(0, 2 (1/k - 1)]`` and found by vectorised bisection,
    returning the feasible side (never below the true minimum; relative error ~1e-15).
    """
    bits, time_s, gain, power_w = np.broadcast_arrays(*(np.asarray(a, dtype=float)
                                                        for a in (bits, time_s, gain, power_w)))
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = bits / time_s
        a = gain * power_w / noise_psd
        k = rho * LN2 / a
    out = np.full(bits.shape, np.inf)
    out[bits == 0] = 0.0
    ok = (bits > 0) & np.isfinite(k) & (k > 0) & (k < 1)
    kk = k[ok]
    lo = np.zeros_like(kk)
    hi = 2.0 * (1.0 / kk - 1.0)
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(_BISECTIONS):
            if (hi - lo <= np.spacing(hi)).all():  # adjacent floats: further steps change nothing
                break
            mid = 0.5 * (lo + hi)
            below = np.expm1(mid) - mid / kk <= 0.0
            lo = np.where(below, mid, lo)
            hi = np.where(below, hi, mid)
    with np.errstate(divide="ignore"):
        out[ok] = rho[ok] * LN2 / lo
    return out


def pairwise_distance(a, b):
    """Euclidean distances (m) between points ``a`` (n,2) and ``b`` (m,2): shape (n, m)."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=-1))
