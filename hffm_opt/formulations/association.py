"""User-to-edge association as a generalised assignment MILP (section 4 of the design).

Units: bits, s, Hz, W, W/Hz, J. Device ``u`` must send ``S_u`` bits to its edge server within ``t_u`` seconds.

Data (vectorised over devices x edges):

- candidates: the edges with a finite ``devices.uplink_gain[u, e]``;
- ``b_req[u,e]``: the least bandwidth with which u reaches ``S_u / t_u`` bit/s at full power ``Pmax_u``,
  the root of ``b log2(1 + g P / (N0 b)) = S / t`` (:func:`min_bandwidth`); infinite when even unlimited bandwidth
  cannot (the rate is bounded by ``g P / (N0 ln 2)``); a pair is usable when ``b_req[u,e] <= B_e``;
- ``energy[u,e]``: the least energy to send ``S_u`` in ``t_u`` at the reference bandwidth
  ``max(b_req[u,e], b_ref[e])`` (:func:`link_energy`), with ``b_ref`` the equal share ``B_e / |home cluster|``
  by default: a device's energy depends on the edge through its gain.

Program: binary ``y[u,e]`` over usable pairs; ``assign[u]``: sum_e y[u,e] = 1; ``capacity[e]``:
sum_u b_req[u,e] y[u,e] <= B_e (in MHz; written only where the usable devices could exceed it); objective:
minimise sum energy[u,e] y[u,e] (J). ``decode`` -> {"association": (U,) int, -1 for a device that has no usable
edge}. A device with no usable edge, an edge whose forced devices (those with no other usable edge) already
need more than ``B_e``, or a total need above the total band, is named in ``precheck_message``; the model is
still built (a variable fixed to 0 keeps the impossible ``assign`` row well-formed) and a solve reports it
infeasible with that message.
"""

from __future__ import annotations

import time

import numpy as np
import pyomo.environ as pyo

from ..network.channel import link_energy, min_bandwidth, power_for_time
from ..network.scenario import Scenario
from .milp_model import MilpModel

_MHZ = 1e6


def association_data(scenario: Scenario, bits, time_s, *, power_w=None, energy_bandwidth_hz=None,
                     candidates=None) -> dict:
    """The association program's arrays: ``b_req`` (U, E) Hz, ``usable`` (U, E) bool, ``energy`` (U, E) J
    (inf where unusable), ``b_use`` (U, E) Hz the bandwidth the energy is priced at, ``power_use`` (U, E) W the
    power that sends ``bits`` in ``time_s`` with ``b_use`` (so a plan with ``b_use`` and ``power_use`` spends
    exactly ``energy`` and ``time_s``), ``bits``/``time_s``/``power_w`` (U,). ``candidates`` (U, E) bool restricts
    the pairs (default: every edge with a finite gain)."""
    dev, edges = scenario.devices, scenario.edges
    n, n_e = scenario.n_devices, scenario.n_edges
    s = np.broadcast_to(np.asarray(bits, dtype=float), (n,)).copy()
    t = np.broadcast_to(np.asarray(time_s, dtype=float), (n,)).copy()
    p = np.broadcast_to(np.asarray(dev.pmax_w if power_w is None else power_w, dtype=float), (n,)).copy()
    if not (np.isfinite(s).all() and (s >= 0).all()):
        raise ValueError(f"bits = {s.tolist()}: must be finite and >= 0")
    if not ((t > 0).all() and not np.isnan(t).any()):
        raise ValueError(f"time_s = {t.tolist()}: must be > 0 s")
    if not (np.isfinite(p).all() and (p > 0).all()):
        raise ValueError(f"power_w = {p.tolist()}: must be finite and > 0 W")
    g = dev.uplink_gain
    reach = np.isfinite(g)
    if candidates is not None:
        candidates = np.asarray(candidates, bool)
        if candidates.shape != (n, n_e):
            raise ValueError(f"candidates.shape = {candidates.shape}: must be ({n}, {n_e})")
        reach = reach & candidates
    b_req = np.where(reach, min_bandwidth(s[:, None], t[:, None], p[:, None], np.where(reach, g, 0.0),
                                          scenario.noise_psd_w_per_hz), np.inf)
    band = edges.bandwidth_hz
    usable = reach & (b_req <= band[None, :])
    if energy_bandwidth_hz is None:
        home = np.bincount(dev.edge, minlength=n_e)
        b_ref = np.broadcast_to(band / np.maximum(home, 1), (n, n_e))
    else:
        b_ref = np.broadcast_to(np.asarray(energy_bandwidth_hz, dtype=float), (n, n_e))
    b_use = np.maximum(b_req, b_ref)
    energy = np.where(usable, link_energy(s[:, None], t[:, None], np.where(usable, b_use, 1.0), np.where(reach, g, 1.0),
                                          scenario.noise_psd_w_per_hz), np.inf)
    power_use = np.where(usable, power_for_time(s[:, None], t[:, None], np.where(usable, b_use, 1.0),
                                                np.where(reach, g, 1.0), scenario.noise_psd_w_per_hz), np.inf)
    return {"b_req": b_req, "usable": usable, "energy": energy, "bits": s, "time_s": t, "power_w": p,
            "reach": reach, "b_use": np.where(usable, b_use, np.inf), "power_use": power_use}


def _precheck(scenario: Scenario, data: dict) -> str | None:
    dev_ids, edge_ids = scenario.devices.ids, scenario.edges.ids
    band = scenario.edges.bandwidth_hz
    usable, reach, b_req = data["usable"], data["reach"], data["b_req"]
    s, t, p = data["bits"], data["time_s"], data["power_w"]
    problems = []
    stranded = np.flatnonzero(~usable.any(axis=1))
    for u in stranded[:5]:
        if not reach[u].any():
            why = "has no uplink gain to any edge server"
        elif not np.isfinite(b_req[u]).any():
            g_best = np.nanmax(scenario.devices.uplink_gain[u])
            cap = g_best * p[u] / (scenario.noise_psd_w_per_hz * np.log(2.0))
            why = (f"cannot send {s[u]:.4g} bits in {t[u]:.4g} s to any edge server: it needs {s[u] / t[u]:.4g} bit/s, "
                   f"and even unlimited bandwidth gives at most {cap:.4g} bit/s at {p[u]:.3g} W")
        else:
            e = int(np.argmin(np.where(reach[u], b_req[u] - band, np.inf)))
            why = (f"needs at least {b_req[u, e] / _MHZ:.4g} MHz to send {s[u]:.4g} bits in {t[u]:.4g} s, more than the "
                   f"{band[e] / _MHZ:.4g} MHz of edge id {edge_ids[e]}, its best option")
        problems.append(f"assign: device id {dev_ids[u]} {why}")
    if len(stranded) > 5:
        problems.append(f"assign: and {len(stranded) - 5} more devices (ids {dev_ids[stranded[5:]].tolist()}) "
                        "with no usable edge server")
    forced = usable.sum(axis=1) == 1
    only = np.argmax(usable, axis=1)
    load = np.bincount(only[forced], weights=b_req[forced, only[forced]], minlength=len(band))
    for e in np.flatnonzero(load > band):
        who = dev_ids[forced & (only == e)]
        problems.append(f"capacity: edge id {edge_ids[e]} must host devices ids {who.tolist()} (they reach no other "
                        f"edge in time), which need {load[e] / _MHZ:.4g} MHz > its {band[e] / _MHZ:.4g} MHz")
    need = np.where(usable, b_req, np.inf).min(axis=1)
    total = float(need[np.isfinite(need)].sum())
    offered = float(band[usable.any(axis=0)].sum())
    if total > offered:
        problems.append(f"capacity: the devices need at least {total / _MHZ:.4g} MHz in total (each at the edge where "
                        f"it needs the least) but the edge servers they can use offer {offered / _MHZ:.4g} MHz")
    return ("association infeasible: " + "; ".join(problems)) if problems else None


def build_association(scenario: Scenario, bits, time_s, *, power_w=None, energy_bandwidth_hz=None,
                      candidates=None, reserve: str = "required") -> MilpModel:
    """The association MILP (module docstring) for ``bits`` S_u and communication time ``time_s`` t_u (each (U,)
    or scalar), at power ``power_w`` (default Pmax; the bandwidth requirement is computed at this power);
    ``energy_bandwidth_hz`` (E,) or (U, E) reference bandwidth of the energy term (default the equal share of the
    home clusters). ``data`` holds :func:`association_data`'s arrays. ``candidates`` (U, E) bool: the pairs allowed
    (default every finite gain). ``reserve``: the bandwidth the capacity rows reserve, ``"required"`` (b_req, the
    least that meets the time at ``power_w``) or ``"priced"`` (b_use, the bandwidth the energy term is priced at:
    then the decision written into a plan with ``b_use`` and ``power_use`` costs what the program says and fits
    every band, which is how F4 uses it)."""
    t0 = time.perf_counter()
    if reserve not in ("required", "priced"):
        raise ValueError(f"reserve = {reserve!r}: must be 'required' or 'priced'")
    data = association_data(scenario, bits, time_s, power_w=power_w, energy_bandwidth_hz=energy_bandwidth_hz,
                            candidates=candidates)
    b_req, usable, energy = data["b_req"], data["usable"], data["energy"]
    if reserve == "priced":
        b_req = data["b_use"]
    n, n_e = scenario.n_devices, scenario.n_edges
    band = scenario.edges.bandwidth_hz
    dev_ids, edge_ids = scenario.devices.ids, scenario.edges.ids
    precheck = _precheck(scenario, data)

    m = pyo.ConcreteModel(name=f"association ({scenario.name}, {n} devices x {n_e} edges)")
    pairs = [(int(u), int(e)) for u, e in zip(*np.nonzero(usable))]
    m.UE = pyo.Set(initialize=pairs, dimen=2, ordered=True)
    m.y = pyo.Var(m.UE, domain=pyo.Binary)
    stranded = np.flatnonzero(~usable.any(axis=1)).tolist()
    m.STRANDED = pyo.Set(initialize=stranded, ordered=True)
    m.unreachable = pyo.Var(m.STRANDED, bounds=(0, 0))
    of_dev = [[] for _ in range(n)]
    of_edge = [[] for _ in range(n_e)]
    for (u, e) in pairs:
        of_dev[u].append(e)
        of_edge[e].append(u)
    m.U = pyo.RangeSet(0, n - 1)
    m.assign = pyo.Constraint(m.U, rule=lambda m, u: (sum(m.y[u, e] for e in of_dev[u]) if of_dev[u]
                                                      else m.unreachable[u]) == 1)
    worst = np.where(usable, b_req, 0.0).sum(axis=0)
    binding = [int(e) for e in np.flatnonzero(worst > band)]
    m.E = pyo.Set(initialize=binding, ordered=True)
    m.capacity = pyo.Constraint(m.E, rule=lambda m, e: sum(b_req[u, e] / _MHZ * m.y[u, e] for u in of_edge[e])
                                <= band[e] / _MHZ)
    m.obj = pyo.Objective(expr=sum(energy[u, e] * m.y[u, e] for (u, e) in pairs), sense=pyo.minimize)

    def decode(model) -> dict:
        assoc = np.full(n, -1, dtype=np.int64)
        for (u, e) in pairs:
            if (model.y[u, e].value or 0.0) > 0.5:
                assoc[u] = e
        return {"association": assoc}

    def encode(model, warm: dict) -> None:
        assoc = np.asarray(warm["association"], dtype=np.int64)
        if assoc.shape != (n,):
            raise ValueError(f"warm['association'].shape = {assoc.shape}: must be ({n},)")
        for (u, e) in pairs:
            model.y[u, e].set_value(float(assoc[u] == e))
        for u in stranded:
            model.unreachable[u].set_value(0.0)

    device = lambda u: f"device id {dev_ids[u]}"  # noqa: E731
    families = {"assign": "each device is associated with exactly one edge server it can reach in time",
                "capacity": "the bandwidth the edge's devices need fits its band B_e",
                "unreachable": "device without a usable edge server"}
    labels = {"assign": device, "unreachable": device, "capacity": lambda e: f"edge id {edge_ids[e]}",
              "y": lambda ue: f"{device(ue[0])}, edge id {edge_ids[ue[1]]}"}
    return MilpModel(name=m.name, model=m, decoder=decode, encoder=encode, build_s=time.perf_counter() - t0,
                     precheck_message=precheck, families=families, labels=labels, data=data)
