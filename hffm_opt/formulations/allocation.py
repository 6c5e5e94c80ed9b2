"""F3: one edge server's bandwidth, power and CPU allocation as scaled convex programs (cvxpy builders, no solving).

Notation of the design (section 4): device ``u`` sends ``S_u`` bits on bandwidth ``b_u`` (Hz) of its edge's band
``B``, gain ``g_u``, noise PSD ``N0`` (W/Hz), max power ``Pmax_u`` (W); ``t_u`` (s) is its time to communicate.

Scaling (raw SI numbers make conic solvers report ``optimal_inaccurate`` or wrong optima): bandwidth as
``u_u = n b_u / B`` (share relative to the equal split, O(1)), gains relative to the noise over the whole band
``gamma_u = g_u / (N0 B)`` (1/W), energy relative to its value at a reference point (so the objective is
O(1): in mJ a one-device instance of 3e-4 mJ left CLARABEL 4e-6 off the optimum), exponential cones written
around the reference so the cone variables stay of the order of the shares. Every builder returns a
:class:`~hffm_opt.formulations.convex_model.ConvexModel` whose ``objective`` recomputes the SI objective from the
decision and whose ``verify`` checks feasibility (relative tolerance ``FEAS_TOL``) and the stationarity
conditions (``KKT_TOL``, relative to the terms that balance at the optimum).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import cvxpy as cp
import numpy as np

from ..network.channel import LN2, link_energy, load_price, min_bandwidth, power_for_time, transmit_time
from .convex_model import ConvexModel

FEAS_TOL = 1e-6  # relative tolerance of constraints, band use and equal latencies of a returned point
KKT_TOL = 1e-2  # relative tolerance of stationarity (at 1e-2 the objective is typically within 1e-7 of the optimum)


def _vector(name: str, value, n: int | None, rule: str, ok) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    arr = np.broadcast_to(arr, (n,)).copy() if n is not None and arr.ndim == 0 else arr
    if arr.ndim != 1 or (n is not None and arr.shape != (n,)):
        raise ValueError(f"{name}.shape = {arr.shape}: must be ({n if n is not None else 'U'},)")
    bad = ~(np.isfinite(arr) & ok(arr))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name}[{i}] = {float(arr[i])!r}: {rule}")
    return arr


def _positive(name: str, value) -> float:
    v = float(value)
    if not (np.isfinite(v) and v > 0):
        raise ValueError(f"{name} = {value!r}: must be finite and > 0")
    return v


@dataclass(frozen=True)
class AllocationData:
    """One edge server's F3 data (SI). ``time_s`` (t_u) is None for the min-max latency program.

    ``bits`` S_u >= 0, ``gain`` g_u > 0, ``pmax_w`` > 0 (U,); ``noise_psd`` N0 (W/Hz); ``bandwidth_hz`` B;
    ``edge`` and ``device_ids`` name the edge server and devices in messages.
    """

    bits: np.ndarray
    gain: np.ndarray
    pmax_w: np.ndarray
    noise_psd: float
    bandwidth_hz: float
    time_s: np.ndarray | None = None
    edge: object = 0
    device_ids: np.ndarray | None = None

    @classmethod
    def create(cls, bits, gain, pmax_w, noise_psd, bandwidth_hz, time_s=None, edge=0, device_ids=None):
        """Validated construction: every bad field raises ``ValueError`` naming the field, value and rule."""
        bits = _vector("bits", bits, None, "must be finite and >= 0 bit", lambda a: a >= 0)
        n = len(bits)
        gain = _vector("gain", gain, n, "must be finite and > 0", lambda a: a > 0)
        pmax = _vector("pmax_w", pmax_w, n, "must be finite and > 0 W", lambda a: a > 0)
        t = None if time_s is None else _vector("time_s", time_s, n, "must be finite and > 0 s", lambda a: a > 0)
        ids = np.arange(n) if device_ids is None else np.asarray(device_ids)
        return cls(bits, gain, pmax, _positive("noise_psd", noise_psd), _positive("bandwidth_hz", bandwidth_hz), t,
                   edge, ids)

    @property
    def n(self) -> int:
        return len(self.bits)

    def snr_per_w(self) -> np.ndarray:
        """gamma_u = g_u / (N0 B) (1/W): the SNR per watt over the whole band."""
        return self.gain / (self.noise_psd * self.bandwidth_hz)


def deadline_precheck(data: AllocationData) -> str | None:
    """Why no split of the band meets every device's time ``t_u`` within its power cap, or None.

    Names the first device that cannot send ``S_u`` in ``t_u`` even with the whole band at full power, else the
    edge server whose devices together need more than its band at full power.
    """
    b_min = min_bandwidth(data.bits, data.time_s, data.pmax_w, data.gain, data.noise_psd)
    alone = np.flatnonzero(b_min > data.bandwidth_hz)
    if alone.size:
        u = int(alone[0])
        return (f"deadline: device {data.device_ids[u]} cannot send {data.bits[u]:.6g} bit in {data.time_s[u]:.6g} s "
                f"even with the whole band {data.bandwidth_hz:.6g} Hz of edge {data.edge} at its max power "
                f"{data.pmax_w[u]:.6g} W" + (" (nor with unlimited bandwidth)" if np.isinf(b_min[u]) else ""))
    if b_min.sum() > data.bandwidth_hz:
        u = int(np.argmax(b_min))
        return (f"bandwidth: the devices of edge {data.edge} need at least {b_min.sum():.6g} Hz at full power to meet "
                f"their times but the edge has {data.bandwidth_hz:.6g} Hz (device {data.device_ids[u]} alone needs "
                f"{b_min[u]:.6g} Hz)")
    return None


def marginal_price(data: AllocationData, band_hz: np.ndarray) -> np.ndarray:
    """-dE_u/db_u (J/Hz): energy saved per extra hertz, (N0 t_u/g_u)((x_u - 1) e^x_u + 1), x_u = S_u ln2/(b_u t_u)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        x = data.bits * LN2 / (band_hz * data.time_s)
        return np.where(data.bits > 0, data.noise_psd * data.time_s / data.gain * load_price(x), 0.0)


def failed_check(checks: dict[str, tuple[float, float]]) -> str | None:
    """None when every check's relative violation is within its tolerance, else the worst one in words."""
    worst = max(checks, key=lambda k: checks[k][0] / checks[k][1])
    value, tol = checks[worst]
    return None if value <= tol else f"{worst} (relative violation {value:.3g} > {tol:g})"


def min_energy_residual(data: AllocationData, band_hz: np.ndarray) -> dict[str, tuple[float, float]]:
    """Relative violation and tolerance of each feasibility and KKT condition of the min-energy program.

    KKT: the band is used whole; every device below its power cap has the same marginal price lambda (the
    bandwidth price); a device at its cap has a price at most lambda.
    """
    b = np.asarray(band_hz, dtype=float)
    send = data.bits > 0
    if (b < 0).any() or (send & ~(b > 0)).any():
        return {"a device with bits to send has no bandwidth": (np.inf, FEAS_TOL)}
    power = power_for_time(data.bits, data.time_s, np.where(send, b, 1.0), data.gain, data.noise_psd)
    price = marginal_price(data, np.where(send, b, 1.0))
    capped = send & (power >= data.pmax_w * (1 - KKT_TOL))  # at its cap within the stationarity tolerance
    free = send & ~capped
    lam = float(np.median(price[free])) if free.any() else float(price[send].max(initial=0.0))
    return {"sum of bandwidths above B": (b.sum() / data.bandwidth_hz - 1.0, FEAS_TOL),
            "band not used whole": (1.0 - b.sum() / data.bandwidth_hz, FEAS_TOL),
            "power above Pmax": (float(np.max(power / data.pmax_w - 1.0, initial=0.0)), FEAS_TOL),
            "unequal marginal prices (stationarity)": (float(np.max(np.abs(price[free] / lam - 1.0), initial=0.0)),
                                                       KKT_TOL),
            "capped device priced above lambda": (float(np.max(price[capped] / lam - 1.0, initial=0.0)), KKT_TOL)}


def build_min_energy(data: AllocationData) -> ConvexModel:
    """F3 minimum energy under per-device times t_u for one edge server.

    Variables: scaled shares ``u_u = n b_u / B >= 0`` and cone variables ``z_u``. Program (design notation):
    minimise sum_u E_u(b_u), E_u(b) = (N0 b t_u/g_u)(2^(S_u/(b t_u)) - 1), s.t. sum_u b_u <= B (``sum u <= n``),
    power (N0 b_u/g_u)(2^(S_u/(b_u t_u)) - 1) <= Pmax_u. With k_u = n S_u ln2/(t_u B) and a reference share r_u,
    the cone (k_u - k_u u_u/r_u, u_u, z_u) in ExpCone means z_u >= u_u e^(k_u/u_u - k_u/r_u), so
    u e^(k/u) = e^(k/r) z at the optimum: energy = sum (t_u/(n gamma_u)) (e^(k_u/r_u) z_u - u_u) / E_ref (E_ref the
    energy of the reference split, J) and the power cap is the linear row e^(k_u/r_u) z_u - u_u <= n gamma_u Pmax_u.
    Devices with S_u = 0 get no band. The
    reference share is the equal-spectral-efficiency split (u proportional to k), raised to the power-cap floor;
    the decoded split is scaled to use the band whole (energy falls with bandwidth).
    Decision: {"bandwidth_hz", "power_w", "energy_j"} (U,); objective: total energy (J).
    """
    t0 = time.perf_counter()
    if data.time_s is None:
        raise ValueError("time_s = None: the min-energy program needs every device's communication time t_u")
    n, send = data.n, data.bits > 0
    m = int(send.sum())
    precheck = deadline_precheck(data)
    gamma = data.snr_per_w()[send]
    k = n * data.bits[send] * LN2 / (data.time_s[send] * data.bandwidth_hz)
    floor = n * min_bandwidth(data.bits[send], data.time_s[send], data.pmax_w[send], data.gain[send],
                              data.noise_psd) / data.bandwidth_hz
    ref = np.maximum(n * k / max(k.sum(), 1e-300), np.where(np.isfinite(floor), floor, 0.0))
    shares = cp.Variable(m, nonneg=True)
    z = cp.Variable(m, nonneg=True)
    grow = np.exp(np.minimum(k / ref, 700.0))
    coef = data.time_s[send] / (n * gamma)
    coef = coef / max(float(np.sum(coef * ref * np.expm1(np.minimum(k / ref, 700.0)))), 1e-300)
    cons = [cp.constraints.ExpCone(k - cp.multiply(k / ref, shares), shares, z), cp.sum(shares) <= n,
            cp.multiply(grow / (n * gamma * data.pmax_w[send]), z) - cp.multiply(1 / (n * gamma * data.pmax_w[send]),
                                                                                   shares) <= 1]
    problem = cp.Problem(cp.Minimize(cp.sum(cp.multiply(coef * grow, z) - cp.multiply(coef, shares))), cons)

    def decoder(model: ConvexModel) -> dict:
        b = np.zeros(n)
        b[send] = np.maximum(np.asarray(shares.value, dtype=float).reshape(m), 0.0)
        b *= data.bandwidth_hz / max(b.sum(), 1e-300)  # energy falls with bandwidth: use the band whole
        return energy_decision(data, b)

    def verifier(decision: dict) -> str | None:
        failed = failed_check(min_energy_residual(data, decision["bandwidth_hz"]))
        return failed and f"KKT check failed: {failed}"

    return ConvexModel(name=f"F3 min energy (edge {data.edge}, n={n})", kind="min_energy", problem=problem, data=data,
                       decoder=decoder, objective=lambda d: float(d["energy_j"].sum()), verifier=verifier,
                       precheck_message=precheck, build_s=time.perf_counter() - t0,
                       variables={"shares": shares, "z": z})


def energy_decision(data: AllocationData, band_hz: np.ndarray) -> dict:
    """The min-energy decision dict from a band split (Hz): bandwidth (Hz), power (W) and energy (J) per device."""
    send = data.bits > 0
    b = np.where(send, band_hz, 0.0)
    bb = np.where(send & (b > 0), b, 1.0)
    power = np.where(send, power_for_time(data.bits, data.time_s, bb, data.gain, data.noise_psd), 0.0)
    energy = np.where(send, link_energy(data.bits, data.time_s, bb, data.gain, data.noise_psd), 0.0)
    return {"bandwidth_hz": b, "power_w": power, "energy_j": energy}


def achieved_latency(data: AllocationData, band_hz: np.ndarray) -> np.ndarray:
    """(U,) time (s) each device needs to send its bits at full power on ``band_hz`` (0 without bits)."""
    b = np.asarray(band_hz, dtype=float)
    with np.errstate(divide="ignore"):
        return np.where(data.bits > 0, transmit_time(data.bits, np.where(b > 0, b, 1e-300), data.pmax_w, data.gain,
                                                     data.noise_psd), 0.0)


def latency_decision(data: AllocationData, band_hz: np.ndarray) -> dict:
    """The min-max latency decision dict from a band split (Hz): bandwidth (Hz), achieved latency (s) per device."""
    return {"bandwidth_hz": np.asarray(band_hz, dtype=float), "latency_s": achieved_latency(data, band_hz)}


def build_min_max_latency(data: AllocationData) -> ConvexModel:
    """F3 min-max latency: the band split that lets every device finish soonest, at full power.

    Program (design notation): maximise theta s.t. S_u theta <= b_u log2(1 + g_u Pmax_u/(N0 b_u)),
    sum_u b_u <= B, b_u >= 0 (theta = 1/T). Scaled: shares u_u = n b_u/B, sigma_u = S_u/max S, c_u = n gamma_u
    Pmax_u, Theta = n max(S) theta / B; the rate constraint becomes sigma_u Theta ln2 <= u_u ln(1 + c_u/u_u)
    = -rel_entr(u_u, u_u + c_u) (concave, exponential cone). Decision: {"bandwidth_hz", "latency_s"} (U,);
    objective: the latency T = max_u S_u / r_u(b_u) (s).
    """
    t0 = time.perf_counter()
    n, send = data.n, data.bits > 0
    m = int(send.sum())
    sigma = data.bits[send] / max(float(data.bits.max(initial=0.0)), 1e-300)
    c = n * data.snr_per_w()[send] * data.pmax_w[send]
    shares = cp.Variable(m, nonneg=True)
    theta = cp.Variable(nonneg=True)
    cons = [sigma * LN2 * theta <= -cp.rel_entr(shares, shares + c), cp.sum(shares) <= n]
    problem = cp.Problem(cp.Maximize(theta), cons)

    def decoder(model: ConvexModel) -> dict:
        b = np.zeros(n)
        b[send] = np.maximum(np.asarray(shares.value, dtype=float).reshape(m), 0.0) * data.bandwidth_hz / n
        return latency_decision(data, b)

    def verifier(decision: dict) -> str | None:
        b, lat = decision["bandwidth_hz"], decision["latency_s"][send]
        if not np.isfinite(lat).all():
            return "achieved-latency check failed: a device with bits to send has no bandwidth"
        failed = failed_check({"sum of bandwidths above B": (b.sum() / data.bandwidth_hz - 1.0, FEAS_TOL),
                               "band not used whole": (1.0 - b.sum() / data.bandwidth_hz, FEAS_TOL),
                               "unequal achieved latencies": (float(np.ptp(lat) / lat.max()) if lat.size else 0.0,
                                                              FEAS_TOL)})
        return failed and f"achieved-latency check failed: {failed}"

    return ConvexModel(name=f"F3 min-max latency (edge {data.edge}, n={n})", kind="min_max_latency", problem=problem,
                       data=data, decoder=decoder, objective=lambda d: float(d["latency_s"].max(initial=0.0)),
                       verifier=verifier, build_s=time.perf_counter() - t0, variables={"shares": shares,
                                                                                       "theta": theta})


@dataclass(frozen=True)
class CpuBlockData:
    """The CPU block's data: an :class:`AllocationData` whose band split ``band_hz`` (U,) is fixed, each device's
    cycles per round ``cycles`` C_u, ``kappa`` (J/(cycle Hz^2)), max frequency ``fmax_hz`` and the round's deadline
    ``round_s`` T for compute plus communication (one for all, or one per device)."""

    link: AllocationData
    band_hz: np.ndarray
    cycles: np.ndarray
    kappa: np.ndarray
    fmax_hz: np.ndarray
    round_s: float | np.ndarray

    @classmethod
    def create(cls, link: AllocationData, band_hz, cycles, kappa, fmax_hz, round_s):
        """Validated construction (``ValueError`` naming the field, value and rule)."""
        n = link.n
        band = _vector("band_hz", band_hz, n, "must be finite and >= 0 Hz", lambda a: a >= 0)
        if ((link.bits > 0) & (band <= 0)).any():
            u = int(np.flatnonzero((link.bits > 0) & (band <= 0))[0])
            raise ValueError(f"band_hz[{u}] = {band[u]!r}: a device with bits to send needs a positive bandwidth")
        return cls(link, band, _vector("cycles", cycles, n, "must be finite and >= 0", lambda a: a >= 0),
                   _vector("kappa", kappa, n, "must be finite and > 0", lambda a: a > 0),
                   _vector("fmax_hz", fmax_hz, n, "must be finite and > 0 Hz", lambda a: a > 0),
                   _positive("round_s", round_s) if np.ndim(round_s) == 0 else
                   _vector("round_s", round_s, n, "must be finite and > 0 s", lambda a: a > 0))

    def min_times(self) -> tuple[np.ndarray, np.ndarray]:
        """(compute at fmax, communication at full power) per device (s)."""
        d = self.link
        tau = self.cycles / self.fmax_hz
        comm = np.where(d.bits > 0, transmit_time(d.bits, np.where(self.band_hz > 0, self.band_hz, 1.0), d.pmax_w,
                                                  d.gain, d.noise_psd), 0.0)
        return tau, comm

    def energy(self, compute_s: np.ndarray, comm_s: np.ndarray) -> np.ndarray:
        """(U,) kappa C f^2 (f = C/compute_s) + least link energy within comm_s (J)."""
        d = self.link
        with np.errstate(divide="ignore", invalid="ignore"):
            cpu = np.where(self.cycles > 0, self.kappa * self.cycles ** 3 / compute_s ** 2, 0.0)
        return cpu + np.where(d.bits > 0, link_energy(d.bits, comm_s, np.where(self.band_hz > 0, self.band_hz, 1.0),
                                                      d.gain, d.noise_psd), 0.0)

    def slope(self, compute_s: np.ndarray) -> np.ndarray:
        """d/dtau of the device's energy when it computes for tau and communicates for T - tau (J/s); increasing."""
        d = self.link
        bb = np.where(self.band_hz > 0, self.band_hz, 1.0)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            x = d.bits * LN2 / (bb * (self.round_s - compute_s))
            de_dt = -d.noise_psd * bb / d.gain * load_price(x)
            d_cpu = np.where(self.cycles > 0, -2 * self.kappa * self.cycles ** 3 / compute_s ** 3, 0.0)
        return d_cpu - np.where(d.bits > 0, de_dt, 0.0)


def cpu_block_residual(data: CpuBlockData, compute_s: np.ndarray, comm_s: np.ndarray) -> dict[str, tuple[float, float]]:
    """Relative violation and tolerance of each constraint and KKT condition of the CPU block. Stationarity is
    the energy's derivative in tau relative to the two terms that balance there (compute and communication)."""
    tau_min, comm_min = data.min_times()
    with np.errstate(divide="ignore", invalid="ignore"):
        d_cpu = np.where(data.cycles > 0, 2 * data.kappa * data.cycles ** 3 / compute_s ** 3, 0.0)
        slope = data.slope(compute_s)
        rel = slope / (d_cpu + np.abs(slope + d_cpu) + 1e-300)
    at_lo = compute_s <= tau_min * (1 + FEAS_TOL)
    at_hi = comm_s <= comm_min * (1 + FEAS_TOL)
    both = (data.cycles > 0) & (data.link.bits > 0)
    peak = lambda v: float(np.max(v, initial=0.0))  # noqa: E731
    return {"compute + communication above T": (peak((compute_s + comm_s) / data.round_s - 1.0), FEAS_TOL),
            "frequency above fmax": (peak(np.where(data.cycles > 0, tau_min / np.maximum(compute_s, 1e-300) - 1.0,
                                                   0.0)),
                                     FEAS_TOL),
            "power above Pmax": (peak(np.where(data.link.bits > 0, comm_min / np.maximum(comm_s, 1e-300) - 1.0, 0.0)),
                                 FEAS_TOL),
            "stationarity": (peak(np.where(both & ~at_lo & ~at_hi, np.abs(rel), 0.0)), KKT_TOL),
            "stationarity at fmax": (peak(np.where(both & at_lo, -rel, 0.0)), KKT_TOL),
            "stationarity at Pmax": (peak(np.where(both & at_hi, rel, 0.0)), KKT_TOL)}


def build_cpu_block(data: CpuBlockData) -> ConvexModel:
    """The CPU block of F3: with the band split fixed, each device's CPU frequency and communication time.

    Variables (scaled by T): compute time tau_u = T v_u (f_u = C_u/tau_u) and communication time t_u = T w_u.
    Program (design notation): minimise sum_u kappa_u C_u f_u^2 + E_u(b_u, t_u) s.t. C_u/f_u + t_u <= T,
    f_u <= fmax_u, t_u >= the full-power time (the power cap); kappa C f^2 = kappa C^3/tau^2 is convex in tau and
    E_u(b, t) = (N0 b/g)(t 2^(S/(b t)) - t) a perspective of the exponential in t (cone written around the
    reference w_ref = min(twice the full-power time, the middle of w's range) / T). Each device's energy is
    divided by its value at that reference: the block is separable by device, so the minimiser is unchanged and
    every term is O(1). It alternates with the bandwidth step (:func:`build_min_energy` with
    t_u = T - C_u/f_u) by block-coordinate descent. Decision: {"cpu_hz", "compute_s", "comm_s", "energy_j"} (U,);
    objective: total energy (J).
    """
    t0 = time.perf_counter()
    d, T, n = data.link, data.round_s, data.link.n
    tau_min, comm_min = data.min_times()
    over = np.flatnonzero(tau_min + comm_min > T)
    precheck = None
    if over.size:
        u = int(over[0])
        precheck = (f"deadline: device {d.device_ids[u]} needs {tau_min[u]:.6g} s of compute at fmax and "
                    f"{comm_min[u]:.6g} s to send at full power on {data.band_hz[u]:.6g} Hz: above the round's {T:.6g} s")
    busy, send = data.cycles > 0, d.bits > 0
    middle = 0.5 * (comm_min / T + np.minimum(1.0 - tau_min / T, 1.0))
    w_ref = np.where(send, np.maximum(np.minimum(2.0 * comm_min / T, middle), comm_min / T), 0.0)
    e_ref = np.maximum(data.energy(T * (1.0 - w_ref), T * w_ref), 1e-300)  # per device: the block is separable
    v = cp.Variable(n, nonneg=True)
    w = cp.Variable(n, nonneg=True)
    cons = [v + w <= 1, v >= tau_min / T, w >= comm_min / T, v <= np.where(busy, 1.0, 0.0), w <= np.where(send, 1.0,
                                                                                                          0.0)]
    energy = 0
    if busy.any():
        cpu_coef = data.kappa[busy] * data.cycles[busy] ** 3 / T ** 2 / e_ref[busy]
        energy = cp.sum(cp.multiply(cpu_coef, cp.power(v[busy], -2)))
    if send.any():
        bb = data.band_hz[send]
        k = d.bits[send] * LN2 / (bb * T)
        ref = w_ref[send]
        z = cp.Variable(int(send.sum()), nonneg=True)
        grow = np.exp(np.minimum(k / ref, 700.0))
        coef = d.noise_psd * bb * T / d.gain[send] / e_ref[send]
        cons.append(cp.constraints.ExpCone(k - cp.multiply(k / ref, w[send]), w[send], z))
        energy = energy + cp.sum(cp.multiply(coef * grow, z) - cp.multiply(coef, w[send]))
    problem = cp.Problem(cp.Minimize(energy), cons)

    def decoder(model: ConvexModel) -> dict:
        tau = np.where(busy, np.asarray(v.value, dtype=float).reshape(n) * T, 0.0)
        comm = np.where(send, np.asarray(w.value, dtype=float).reshape(n) * T, 0.0)
        return split_decision(data, tau, comm)

    def verifier(decision: dict) -> str | None:
        failed = failed_check(cpu_block_residual(data, decision["compute_s"], decision["comm_s"]))
        return failed and f"KKT check failed: {failed}"

    return ConvexModel(name=f"F3 CPU block (edge {d.edge}, n={n})", kind="cpu_block", problem=problem, data=data,
                       decoder=decoder, objective=lambda dec: float(dec["energy_j"].sum()), verifier=verifier,
                       precheck_message=precheck, build_s=time.perf_counter() - t0, variables={"v": v, "w": w})


def split_decision(data: CpuBlockData, compute_s: np.ndarray, comm_s: np.ndarray) -> dict:
    """The CPU block's decision dict from per-device compute and communication times (s)."""
    busy = data.cycles > 0
    cpu = np.where(busy, data.cycles / np.where(busy, np.maximum(compute_s, 1e-300), 1.0), data.fmax_hz)
    return {"cpu_hz": np.minimum(cpu, data.fmax_hz), "compute_s": compute_s, "comm_s": comm_s,
            "energy_j": data.energy(compute_s, comm_s)}
