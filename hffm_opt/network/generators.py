"""Seeded scenario generators and the loader of the paper prototype's scenario format.

Everything the geometry does not fix (compute, memory, power, modalities, tasks, samples, the module
catalogue) comes from a :class:`DeviceProfile` whose defaults are documented on its fields and which a config
can override. Units: m, Hz, W, bit, byte, FLOP.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from importlib import resources

import numpy as np

from ..errors import ScenarioError
from .channel import dbm_to_w, pairwise_distance, path_loss, rayleigh_power
from .documents import (
    as_number,
    as_numbers,
    as_str,
    as_strings,
    as_table,
    check_keys,
    first_repeat,
    id_key,
    short,
)
from .limits import MAX_DEVICES, RANGES, check_size
from .scenario import Cloud, D2DLinks, Devices, EdgeServers, ModuleSpec, PrototypeConstants, Scenario

HETEROGENEITY = ("none", "device", "cluster")
PAPER_LAYOUT = {"n_edges": 10, "devices_per_edge": 4}  # the paper prototype's network: 10 edges x 4 devices


@dataclass(frozen=True)
class DeviceProfile:
    """Defaults for what a scenario's geometry does not fix.

    - ``cpu_hz`` 1.5 GHz, ``flops_per_cycle`` 8, ``kappa`` 1e-28 (J per cycle per Hz^2), ``memory_bytes`` 4 GB,
      ``pmax_w`` 1 W (the prototype's uplink power);
    - ``modalities``/``tasks``: the names; ``samples_per_task`` per device and task it runs;
    - ``heterogeneity``: ``"none"`` (every device senses every modality and runs every task, as in the
      prototype), ``"device"`` (each device keeps each modality with probability ``p_modality`` and each task
      with ``p_task``, at least one of each) or ``"cluster"`` (the same draw per cluster: cross-cluster skew);
    - ``seed`` for those draws.
    """

    cpu_hz: float = 1.5e9
    flops_per_cycle: float = 8.0
    kappa: float = 1e-28
    memory_bytes: float = 4e9
    pmax_w: float = 1.0
    modalities: tuple[str, ...] = ("image", "text")
    tasks: tuple[str, ...] = ("vqa", "shape")
    samples_per_task: int = 500
    heterogeneity: str = "none"
    p_modality: float = 0.7
    p_task: float = 0.6
    seed: int = 0

    def __post_init__(self):
        for name in ("modalities", "tasks"):
            value = getattr(self, name)
            names = as_strings(value if isinstance(value, str) else list(value), f"profile.{name}", ScenarioError,
                               unique=True)
            if not names or not all(names):
                raise ScenarioError(f"profile.{name} = {names!r}: at least one non-empty name is required")
            object.__setattr__(self, name, tuple(names))
        for name in ("cpu_hz", "flops_per_cycle", "kappa", "memory_bytes", "pmax_w"):
            r = RANGES[f"devices.{name}"]
            as_number(getattr(self, name), f"profile.{name}", ScenarioError, low=r.low, high=r.high)
        as_number(self.samples_per_task, "profile.samples_per_task", ScenarioError, integer=True, low=1,
                  high=RANGES["devices.samples"].high)
        _seed(self.seed, "profile.seed")
        as_str(self.heterogeneity, "profile.heterogeneity", ScenarioError)
        if self.heterogeneity not in HETEROGENEITY:
            raise ScenarioError(f"profile.heterogeneity = {self.heterogeneity!r}: must be one of {HETEROGENEITY}")
        for name in ("p_modality", "p_task"):
            v = as_number(getattr(self, name), f"profile.{name}", ScenarioError)
            if not 0 < v <= 1:
                raise ScenarioError(f"profile.{name} = {v!r}: must be in (0, 1]")

    def draw(self, edge: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(U, M) modality mask and (U, T) sample counts for devices with home edges ``edge``."""
        n = len(edge)
        m, t = len(self.modalities), len(self.tasks)
        if self.heterogeneity == "none":
            return np.ones((n, m), bool), np.full((n, t), self.samples_per_task)
        rng = np.random.default_rng(self.seed)
        units = n if self.heterogeneity == "device" else int(edge.max()) + 1
        mods = _at_least_one(rng.random((units, m)) < self.p_modality, rng)
        tasks = _at_least_one(rng.random((units, t)) < self.p_task, rng)
        if self.heterogeneity == "cluster":
            mods, tasks = mods[edge], tasks[edge]
        return mods, np.where(tasks, self.samples_per_task, 0)


def _seed(seed, where: str = "seed") -> int:
    """A seed of numpy's generator: an integer in [0, 2^63)."""
    return as_number(seed, where, ScenarioError, integer=True, low=0, high=2 ** 63 - 1)


def _sizes(where: str, n_edges, devices_per_edge, **lengths) -> None:
    """Refuse bad counts and lengths (m) of a generator, and a scenario beyond the size limits, before allocating."""
    for name, value in (("n_edges", n_edges), ("devices_per_edge", devices_per_edge)):
        as_number(value, f"{where}.{name}", ScenarioError, integer=True, low=1, high=MAX_DEVICES)
    for name, value in lengths.items():
        if value is not None and not 0 < as_number(value, f"{where}.{name}", ScenarioError) <= RANGES["area_m"].high:
            raise ScenarioError(f"{where}.{name} = {value!r}: {RANGES['area_m'].rule()}")
    n = n_edges * devices_per_edge
    check_size(n, n_edges, n_edges * devices_per_edge * (devices_per_edge - 1), where=f"{where} ({n_edges} x "
               f"{devices_per_edge})")


def _at_least_one(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    empty = ~mask.any(axis=1)
    mask[empty, rng.integers(0, mask.shape[1], size=int(empty.sum()))] = True
    return mask


# Relative shares of the trainable update and FLOP per sample of the default catalogue (see synthetic_catalogue).
_SHARES = {"prompt": (1.0, 2e7), "head": (2.0, 1e7), "gate": (1.0, 1e7), "expert": (8.0, 6e7), "adapter": (4.0, 4e7)}


def synthetic_catalogue(modalities, tasks, model_bits: float = 48e6, n_experts: int = 4, n_adapters: int = 2,
                        backbone_bits: float = 3.2e9, encoder_bits: float = 8e8) -> tuple[ModuleSpec, ...]:
    """A documented stand-in module catalogue until the real model's catalogue is used.

    Frozen backbone and encoders (not trained, ``backbone_bits``/``encoder_bits`` full size); trainable
    per-task prompts and heads, a gate, ``n_experts`` experts and ``n_adapters`` adapters whose update sizes
    split ``model_bits`` in the shares prompt 1 : head 2 : gate 1 : expert 8 : adapter 4 (integers summing
    exactly to ``model_bits``), so a device training everything sends the prototype's update size.
    FLOP per sample: prompt 2e7, head 1e7, gate 1e7, expert 6e7, adapter 4e7. Memory: 4 bytes per 32 bits of
    full size; training adds 3x the module's size (gradient + two optimiser moments).
    """
    trainable = ([("prompt", t) for t in tasks] + [("head", t) for t in tasks] + [("gate", None)]
                 + [("expert", str(j)) for j in range(n_experts)] + [("adapter", str(j)) for j in range(n_adapters)])
    weights = np.array([_SHARES[k][0] for k, _ in trainable])
    exact = model_bits * weights / weights.sum()
    bits = np.floor(exact)
    bits[np.argsort(-(exact - bits))[: int(round(model_bits - bits.sum()))]] += 1
    out = [ModuleSpec("backbone", "backbone", None, 0.0, backbone_bits, 0.0, backbone_bits / 8, 0.0, trainable=False)]
    out += [ModuleSpec(f"encoder:{m}", "encoder", m, 0.0, encoder_bits, 0.0, encoder_bits / 8, 0.0, trainable=False)
            for m in modalities]
    for (kind, key), b in zip(trainable, bits):
        name = kind if key is None else f"{kind}:{key}"
        out.append(ModuleSpec(name, kind, key if kind in ("prompt", "head") else None, float(b), float(b),
                              _SHARES[kind][1], b / 8, 3 * b / 8))
    return tuple(out)


def _devices(profile: DeviceProfile, ids, pos, edge, gains) -> Devices:
    n = len(ids)
    mods, samples = profile.draw(np.asarray(edge))
    return Devices(ids=ids, position_m=pos, edge=edge, cpu_hz=np.full(n, profile.cpu_hz),
                   flops_per_cycle=np.full(n, profile.flops_per_cycle), kappa=np.full(n, profile.kappa),
                   memory_bytes=np.full(n, profile.memory_bytes), pmax_w=np.full(n, profile.pmax_w),
                   uplink_gain=gains, modalities=mods, samples=samples)


def _edges(ids, pos, bandwidth, proto: PrototypeConstants) -> EdgeServers:
    n = len(ids)
    return EdgeServers(ids=ids, position_m=pos, bandwidth_hz=bandwidth, downlink_power_w=np.zeros(n),
                       backhaul_delay_s=np.full(n, proto.backhaul_delay_s),
                       backhaul_rate_bps=np.full(n, proto.backhaul_rate_bps),
                       backhaul_power_w=np.full(n, proto.backhaul_energy_power_w))


# ---------------------------------------------------------------------- the prototype's file format
#: PrototypeConstants field -> its key under the file's "constants" (dotted: section.key)
_PROTOTYPE_KEYS = {"model_bits": "model_bits", "uplink_bandwidth_hz": "uplink.bandwidth_hz",
                   "uplink_rate_power_w": "uplink.rate_power_w", "uplink_energy_power_w": "uplink.energy_power_w",
                   "d2d_bandwidth_hz": "d2d.bandwidth_hz", "d2d_rate_power_w": "d2d.rate_power_w",
                   "d2d_energy_power_w": "d2d.energy_power_w", "d2d_connect_radius_m": "d2d.connect_radius_m",
                   "backhaul_delay_s": "backhaul.fixed_delay_s", "backhaul_rate_bps": "backhaul.rate_bps",
                   "backhaul_energy_power_w": "backhaul.energy_power_w"}
_NOISE_KEY = "noise_psd_dbm_hz_effective"


def _sections(keys) -> dict:
    """The layout of the file's "constants" from its dotted ``keys``: {key: None} for a number, {section: (keys,)}
    for a table of numbers."""
    out: dict = {}
    for key in keys:
        top, _, sub = key.partition(".")
        out[top] = out.get(top, ()) + (sub,) if sub else None
    return out


_PAPER_CONSTANTS = _sections([*_PROTOTYPE_KEYS.values(), _NOISE_KEY])


def _at(document: dict, key: str):
    """The value at a dotted ``key`` of nested dicts (KeyError/TypeError where it is not there)."""
    for part in key.split("."):
        document = document[part]
    return document


def from_paper_format(data: dict, profile: DeviceProfile | None = None, name: str = "paper") -> Scenario:
    """Build a scenario from the paper prototype's JSON format (see shared/data/README.md).

    The file fixes geometry, gains and link constants; the profile fills the rest. Each edge server's uplink
    band is ``devices x uplink bandwidth`` (so the prototype's equal split gives each device its 1 MHz);
    D2D links are all listed ordered pairs (no range limit: the prototype's connect radius only shapes its
    own D2D graph); gains to other edge servers are unknown (association fixed).
    """
    profile = profile or DeviceProfile()
    _check_paper_format(data)
    try:
        c = data["constants"]
        values = {field: float(_at(c, key)) for field, key in _PROTOTYPE_KEYS.items()}
        e_ids = np.array([e["id"] for e in data["edge_servers"]], dtype=np.int64)
        e_pos = np.array([e["position"] for e in data["edge_servers"]], dtype=float)
        devs = data["devices"]
        d_ids = np.array([d["id"] for d in devs], dtype=np.int64)
        d_pos = np.array([d["position"] for d in devs], dtype=float)
        home_ids = [d["edge_server"] for d in devs]
        home_gain = np.array([d["uplink_gain"] for d in devs], dtype=float)
        links = data.get("d2d_links", [])
        l_from = [lk["from"] for lk in links]
        l_to = [lk["to"] for lk in links]
        l_gain = np.array([lk["gain"] for lk in links], dtype=float)
        aggs = data.get("d2d_aggregators", {})
        noise = float(dbm_to_w(c[_NOISE_KEY]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ScenarioError(f"paper-format field {exc!s}: missing or malformed (see shared/data/README.md)") from None
    try:
        proto = PrototypeConstants(**values)
    except ScenarioError as exc:  # named as the file names it: constants.<key>
        field = str(exc).split(" = ", 1)[0].removeprefix("prototype.")
        raise ScenarioError(f"constants.{_PROTOTYPE_KEYS[field]}{str(exc)[len('prototype.' + field):]}") from None
    e_index = {int(i): k for k, i in enumerate(e_ids)}
    d_index = {int(i): k for k, i in enumerate(d_ids)}
    edge = np.array([e_index.get(int(h), -1) for h in home_ids])
    bad = np.flatnonzero(edge < 0)
    if bad.size:
        raise ScenarioError(f"devices[id={d_ids[bad[0]]}].edge_server = {home_ids[bad[0]]!r}: no edge server has that id")
    gains = np.full((len(d_ids), len(e_ids)), np.nan)
    gains[np.arange(len(d_ids)), edge] = home_gain
    unknown = [i for i in l_from + l_to if int(i) not in d_index]
    if unknown:
        raise ScenarioError(f"d2d_links device id = {unknown[0]!r}: no device has that id")
    rec = np.full(len(e_ids), -1)
    for cluster, dev in aggs.items():
        if int(cluster) not in e_index or int(dev) not in d_index:
            raise ScenarioError(f"d2d_aggregators[{cluster}] = {dev!r}: unknown edge server or device id")
        rec[e_index[int(cluster)]] = d_index[int(dev)]
    counts = np.bincount(edge, minlength=len(e_ids))
    edges = _edges(e_ids, e_pos, np.maximum(counts, 1) * proto.uplink_bandwidth_hz, proto)
    d2d = D2DLinks(src=[d_index[int(i)] for i in l_from], dst=[d_index[int(i)] for i in l_to], gain=l_gain,
                   bandwidth_hz=proto.d2d_bandwidth_hz)
    return Scenario(name=name, modalities=profile.modalities, tasks=profile.tasks,
                    modules=synthetic_catalogue(profile.modalities, profile.tasks, proto.model_bits),
                    edges=edges, devices=_devices(profile, d_ids, d_pos, edge, gains), d2d=d2d,
                    noise_psd_w_per_hz=noise, prototype=proto, recorded_aggregators=rec,
                    area_m=data.get("area_m"), description=data.get("description", ""),
                    meta={"source": "paper-format", "profile": dataclasses.asdict(profile)})


PAPER_UNITS = {"position": "m", "gain": "linear", "bits": "bit", "bandwidth": "Hz", "power": "W",
               "noise_psd": "dBm/Hz", "time": "s"}  # the units of the paper format's numbers (its `units` table)


def _check_paper_format(data: dict) -> None:
    """Every key and type of a paper-format document (unknown keys refused), before anything is built."""
    err = ScenarioError
    check_keys(data, "", {"description", "units", "area_m", "edge_servers", "devices", "d2d_links", "d2d_aggregators",
                          "constants"}, err, required=("edge_servers", "devices", "constants"))
    as_str(data.get("description", ""), "description", err)
    units = check_keys(as_table(data.get("units", {}), "units", err), "units", PAPER_UNITS, err)
    for key, unit in units.items():
        if unit != PAPER_UNITS[key]:
            raise err(f"units.{key} = {short(unit)}: must be {PAPER_UNITS[key]!r} (the format's numbers are read in "
                      "these units; convert the file)")
    as_number(data.get("area_m"), "area_m", err, none=True)
    c = check_keys(data["constants"], "constants", _PAPER_CONSTANTS, err, required=list(_PAPER_CONSTANTS))
    for key, sub in _PAPER_CONSTANTS.items():
        if sub is None:
            as_number(c[key], f"constants.{key}", err)
            if key == _NOISE_KEY:  # the range of noise_psd_w_per_hz, in dBm/Hz
                as_number(c[key], f"constants.{key}", err, low=-270.0, high=-70.0)
        else:
            for name, v in check_keys(c[key], f"constants.{key}", sub, err, required=sub).items():
                as_number(v, f"constants.{key}.{name}", err)
    edges, devices = data["edge_servers"], data["devices"]
    links = data.get("d2d_links", [])
    for name, items in (("edge_servers", edges), ("devices", devices), ("d2d_links", links)):
        if not isinstance(items, list):
            raise err(f"{name} = {type(items).__name__}: must be a list")
    check_size(len(devices), len(edges), len(links))
    for i, e in enumerate(edges):
        check_keys(e, f"edge_servers[{i}]", ("id", "position"), err, required=("id", "position"))
        as_number(e["id"], f"edge_servers[{i}].id", err, integer=True)
        as_numbers(e["position"], f"edge_servers[id={e['id']}].position", err, length=2)
    for i, d in enumerate(devices):
        keys = ("id", "position", "edge_server", "uplink_gain")
        check_keys(d, f"devices[{i}]", keys, err, required=keys)
        as_number(d["id"], f"devices[{i}].id", err, integer=True)
        as_numbers(d["position"], f"devices[id={d['id']}].position", err, length=2)
        as_number(d["edge_server"], f"devices[id={d['id']}].edge_server", err, integer=True)
        as_number(d["uplink_gain"], f"devices[id={d['id']}].uplink_gain", err)
    for name, items in (("edge_servers", edges), ("devices", devices)):
        if not items:
            raise err(f"{name} = []: a scenario needs at least one")
        twice = first_repeat(item["id"] for item in items)
        if twice is not None:
            raise err(f"{name}[id={twice}]: the id appears more than once (ids must be unique)")
    for i, lk in enumerate(links):
        check_keys(lk, f"d2d_links[{i}]", ("from", "to", "gain"), err, required=("from", "to", "gain"))
        for key in ("from", "to"):
            as_number(lk[key], f"d2d_links[{i}].{key}", err, integer=True)
        as_number(lk["gain"], f"d2d_links[{i}].gain", err)
    for key, dev in as_table(data.get("d2d_aggregators", {}), "d2d_aggregators", err).items():
        id_key(key, "d2d_aggregators key", err)
        as_number(dev, f"d2d_aggregators.{key}", err, integer=True)


def embedded_paper_data() -> dict:
    """The paper prototype's scenario file shipped with the package (a copy of shared/data/paper_scenario.json)."""
    return json.loads(resources.files("hffm_opt.network").joinpath("data/paper_scenario.json").read_text())


def paper_scenario(profile: DeviceProfile | None = None) -> Scenario:
    """The embedded paper prototype scenario, completed by ``profile``."""
    return from_paper_format(embedded_paper_data(), profile)


# ---------------------------------------------------------------------- random generators
def paper(seed: int = 0, profile: DeviceProfile | None = None, n_edges: int = PAPER_LAYOUT["n_edges"],
          devices_per_edge: int = PAPER_LAYOUT["devices_per_edge"],
          area_m: float = 5000.0, min_edge_separation_m: float = 500.0, centre_radius_m: float = 1000.0,
          device_radius_m: float = 500.0, proto: PrototypeConstants | None = None) -> Scenario:
    """A fresh draw of the paper prototype's distribution.

    ``n_edges`` edge servers uniform in the ``area_m`` square, pairwise at least ``min_edge_separation_m`` apart;
    per server a cluster centre uniform in the disc of ``centre_radius_m`` around it and ``devices_per_edge``
    devices uniform in the disc of ``device_radius_m`` around the centre, all kept inside the square. Gains:
    path loss -30 dB at 1 m, exponent 3, times a Rayleigh draw (mean 2, as the prototype), to every edge server
    and for every ordered pair of devices of a cluster.
    """
    _sizes("paper", n_edges, devices_per_edge, area_m=area_m, min_edge_separation_m=min_edge_separation_m,
           centre_radius_m=centre_radius_m, device_radius_m=device_radius_m)
    rng = np.random.default_rng(_seed(seed))
    proto = proto or PrototypeConstants()
    e_pos = np.empty((0, 2))
    for _ in range(100_000):
        cand = rng.uniform(0, area_m, size=2)
        if len(e_pos) == 0 or np.linalg.norm(e_pos - cand, axis=1).min() >= min_edge_separation_m:
            e_pos = np.vstack([e_pos, cand])
            if len(e_pos) == n_edges:
                break
    else:
        raise ScenarioError(f"n_edges = {n_edges}: cannot place that many servers {min_edge_separation_m} m apart "
                            f"in a {area_m} m square")
    centres = np.array([_disc_point_inside(rng, p, centre_radius_m, area_m) for p in e_pos])
    d_pos = np.array([_disc_point_inside(rng, c, device_radius_m, area_m) for c in centres for _ in range(devices_per_edge)])
    edge = np.repeat(np.arange(n_edges), devices_per_edge)
    return _assemble(f"paper-s{seed}", rng, e_pos, d_pos, edge, np.full(n_edges, devices_per_edge * proto.uplink_bandwidth_hz),
                     proto, profile or DeviceProfile(), area_m, None, {"generator": "paper", "seed": seed})


def _disc_point_inside(rng, centre, radius, area_m):
    """A uniform point of the disc around ``centre`` that lies inside the square (rejection)."""
    for _ in range(10_000):
        r = radius * np.sqrt(rng.random())
        phi = rng.uniform(0, 2 * np.pi)
        p = centre + r * np.array([np.cos(phi), np.sin(phi)])
        if (p >= 0).all() and (p <= area_m).all():
            return p
    raise ScenarioError(f"disc around {centre.tolist()} = radius {radius}: does not meet the {area_m} m square")


def clustered(n_edges: int, devices_per_edge: int, seed: int = 0, profile: DeviceProfile | None = None,
              spacing_m: float = 1000.0, cluster_radius_m: float = 300.0, d2d_range_m: float | None = None,
              bandwidth_per_device_hz: float = 1e6, proto: PrototypeConstants | None = None) -> Scenario:
    """A scalable clustered scenario (vectorised: 10,000 devices / 100 edges in a fraction of a second).

    Edge servers on a square grid ``spacing_m`` apart (jittered by 10%), devices uniform in the disc of
    ``cluster_radius_m`` around their server. Uplink gains to every server; D2D links between every ordered pair of
    devices of a cluster within ``d2d_range_m`` (None = all pairs). Edge band = devices x
    ``bandwidth_per_device_hz``. Channel as in :func:`paper`.
    """
    _sizes("clustered", n_edges, devices_per_edge, spacing_m=spacing_m, cluster_radius_m=cluster_radius_m,
           d2d_range_m=d2d_range_m)
    as_number(bandwidth_per_device_hz, "clustered.bandwidth_per_device_hz", ScenarioError, low=1.0, high=1e12)
    rng = np.random.default_rng(_seed(seed))
    proto = proto or PrototypeConstants(uplink_bandwidth_hz=bandwidth_per_device_hz)
    side = int(np.ceil(np.sqrt(n_edges)))
    grid = np.stack(np.divmod(np.arange(n_edges), side), axis=1)[:, ::-1].astype(float)
    e_pos = (grid + 0.5) * spacing_m + rng.uniform(-0.1, 0.1, size=(n_edges, 2)) * spacing_m
    edge = np.repeat(np.arange(n_edges), devices_per_edge)
    r = cluster_radius_m * np.sqrt(rng.random(len(edge)))
    phi = rng.uniform(0, 2 * np.pi, len(edge))
    d_pos = e_pos[edge] + np.stack([r * np.cos(phi), r * np.sin(phi)], axis=1)
    return _assemble(f"clustered-{n_edges}x{devices_per_edge}-s{seed}", rng, e_pos, d_pos, edge,
                     np.full(n_edges, devices_per_edge * bandwidth_per_device_hz), proto, profile or DeviceProfile(),
                     side * spacing_m, d2d_range_m,
                     {"generator": "clustered", "seed": seed, "n_edges": n_edges, "devices_per_edge": devices_per_edge})


def _assemble(name, rng, e_pos, d_pos, edge, bandwidth, proto, profile, area_m, d2d_range_m, meta) -> Scenario:
    n, n_e = len(d_pos), len(e_pos)
    gains = path_loss(pairwise_distance(d_pos, e_pos)) * rayleigh_power(rng, (n, n_e))
    # D2D pairs of each cluster (equal-size clusters are not assumed): sort by cluster, pair within blocks
    order = np.argsort(edge, kind="stable")
    counts = np.bincount(edge, minlength=n_e)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    src_list, dst_list = [], []
    for size in np.unique(counts[counts > 1]):
        blocks = np.flatnonzero(counts == size)
        members = order[starts[blocks][:, None] + np.arange(size)]  # (B, size)
        i, j = np.nonzero(~np.eye(size, dtype=bool))
        src_list.append(members[:, i].ravel())
        dst_list.append(members[:, j].ravel())
    src = np.concatenate(src_list) if src_list else np.zeros(0, np.int64)
    dst = np.concatenate(dst_list) if dst_list else np.zeros(0, np.int64)
    dist = np.linalg.norm(d_pos[src] - d_pos[dst], axis=1)
    if d2d_range_m is not None:
        keep = dist <= d2d_range_m
        src, dst, dist = src[keep], dst[keep], dist[keep]
    d2d_gain = path_loss(dist) * rayleigh_power(rng, len(src))
    d2d = D2DLinks(src=src, dst=dst, gain=d2d_gain, bandwidth_hz=proto.d2d_bandwidth_hz,
                   range_m=float("inf") if d2d_range_m is None else d2d_range_m)
    ids_e, ids_d = np.arange(n_e), np.arange(n)
    return Scenario(name=name, modalities=profile.modalities, tasks=profile.tasks,
                    modules=synthetic_catalogue(profile.modalities, profile.tasks, proto.model_bits),
                    edges=_edges(ids_e, e_pos, bandwidth, proto), devices=_devices(profile, ids_d, d_pos, edge, gains),
                    d2d=d2d, noise_psd_w_per_hz=float(dbm_to_w(-204.0)), prototype=proto, cloud=Cloud(),
                    area_m=area_m, meta=meta | {"profile": dataclasses.asdict(profile)})
