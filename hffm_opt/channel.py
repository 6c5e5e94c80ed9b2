"""Wireless channel model: path loss, fading, SNR, Shannon rate and unit conversions.

Pure numpy, vectorised over any array shape. Units: metres, watts, hertz, W/Hz, bit/s.
"""

from __future__ import annotations

import numpy as np


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
    """Shannon rate ``b log2(1 + g p / (N0 b))`` in bit/s; zero where the bandwidth or power is zero."""
    b = np.asarray(bandwidth_hz, dtype=float)
    p = np.asarray(power_w, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = b * np.log2(1.0 + np.asarray(gain) * p / (np.asarray(noise_psd) * b))
    return np.where((b > 0) & (p > 0), r, 0.0)


def transmit(bits, bandwidth_hz, power_w, gain, noise_psd):
    """Time (s) and energy (J) to send ``bits`` on a link; infinite time where the rate is zero and bits > 0."""
    bits = np.asarray(bits, dtype=float)
    r = shannon_rate(bandwidth_hz, power_w, gain, noise_psd)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(bits > 0, bits / r, 0.0)
    return t, np.where(bits > 0, np.asarray(power_w, dtype=float) * t, 0.0)


def pairwise_distance(a, b):
    """Euclidean distances (m) between points ``a`` (n,2) and ``b`` (m,2): shape (n, m)."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=-1))
