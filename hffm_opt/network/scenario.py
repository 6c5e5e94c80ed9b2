"""The world a plan is made for: cloud, edge servers, devices, links and the model's modules.

Immutable, validated objects in SI units (m, W, Hz, W/Hz, bit/s, bit, byte, FLOP, cycles/s). Per-device and
per-edge quantities are read-only numpy arrays indexed by position (device index ``u``, edge index ``e``); ids
are kept for I/O. Any bad value raises :class:`ScenarioError` naming the field, the value and the rule: a value
outside its plausible range (:data:`~hffm_opt.network.limits.RANGES`), a conversion that would change a value (a
fraction or a boolean as an integer, a boolean as a number), a scenario beyond the size limits.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from ..errors import ScenarioError
from .documents import frozen, short
from .limits import MAX_MODULES, RANGES, check_size

MODULE_KINDS = ("backbone", "encoder", "prompt", "gate", "expert", "adapter", "head")
SHARED_KINDS = ("backbone", "gate", "expert", "adapter")  # needed by every device


def _fail(field_name: str, value, rule: str):
    raise ScenarioError(f"{field_name} = {short(value)}: {rule}")


def _frozen(a, dtype, name: str) -> np.ndarray:
    return frozen(a, dtype, name, ScenarioError)


def _ranged(key: str, field_name: str, values: np.ndarray, ids: np.ndarray, nan_ok: bool = False):
    """Refuse the first value outside the plausible range ``RANGES[key]`` (NaN allowed when ``nan_ok``)."""
    r = RANGES[key]
    with np.errstate(invalid="ignore"):
        ok = ((values > r.low) if r.open_low else (values >= r.low)) & (values <= r.high)
    if nan_ok:
        ok |= np.isnan(values)
    _check(ok, field_name, values, ids, r.rule())


def _scalar(key: str, field_name: str, value, unlimited: bool = False) -> None:
    """Refuse a scalar that is not a real number (booleans included) or lies outside ``RANGES[key]``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        _fail(field_name, value, "must be a number")
    if unlimited and value == math.inf:
        return
    r = RANGES[key]
    if not (value > r.low if r.open_low else value >= r.low) or not value <= r.high:
        _fail(field_name, value, r.rule() + (" or inf (no limit)" if unlimited else ""))


def _check(mask: np.ndarray, field_name: str, values: np.ndarray, ids: np.ndarray, rule: str):
    """Raise for the first element where ``mask`` is False."""
    bad = np.flatnonzero(~np.asarray(mask).reshape(len(ids), -1).all(axis=1))
    if bad.size:
        i = int(bad[0])
        v = values[i]
        v = v.tolist() if isinstance(v, np.ndarray) else v.item() if hasattr(v, "item") else v
        _fail(f"{field_name}[id={ids[i]}]", v, rule)


@dataclass(frozen=True)
class ModuleSpec:
    """One module of the modular foundation model (section 2 of the design).

    ``key`` is the modality of an encoder or the task of a prompt/head, else None. Sizes in bits
    (``update_bits`` = s_k, sent to aggregate; ``full_bits``, sent to hand the module over), training cost
    ``flops_per_sample`` = phi_k (FLOP per sample, forward + backward), ``memory_bytes`` to hold it and
    ``train_memory_bytes`` extra when it is trained (gradients, optimiser state).
    """

    name: str
    kind: str
    key: str | None = None
    update_bits: float = 0.0
    full_bits: float = 0.0
    flops_per_sample: float = 0.0
    memory_bytes: float = 0.0
    train_memory_bytes: float = 0.0
    trainable: bool = True
    cluster_local: bool = False

    def __post_init__(self):
        where = f"modules[{self.name}]"
        if not isinstance(self.name, str) or not self.name:
            _fail("modules[].name", self.name, "must be a non-empty string")
        if self.key is not None and not isinstance(self.key, str):
            _fail(f"{where}.key", self.key, "must be a string or None")
        if self.kind not in MODULE_KINDS:
            _fail(f"{where}.kind", self.kind, f"must be one of {MODULE_KINDS}")
        needs_key = self.kind in ("encoder", "prompt", "head")
        if needs_key and not self.key:
            _fail(f"{where}.key", self.key, f"a {self.kind} needs the {'modality' if self.kind == 'encoder' else 'task'} it serves")
        if not needs_key and self.key is not None:
            _fail(f"{where}.key", self.key, f"a {self.kind} is shared and takes no key")
        for name in ("update_bits", "full_bits", "flops_per_sample", "memory_bytes", "train_memory_bytes"):
            _scalar(f"modules.{name}", f"{where}.{name}", getattr(self, name))
        for name in ("trainable", "cluster_local"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                _fail(f"{where}.{name}", getattr(self, name), "must be true or false")
        if self.trainable and self.update_bits <= 0:
            _fail(f"{where}.update_bits", self.update_bits, "a trainable module must have update_bits > 0")
        if self.cluster_local and not self.trainable:
            _fail(f"{where}.cluster_local", True, "only a trainable module can be cluster-local")


@dataclass(frozen=True)
class Cloud:
    """The cloud server (position in m; it only receives edge aggregates over the backhaul)."""

    position_m: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self):
        pos = _frozen(self.position_m, float, "cloud.position_m")
        if pos.shape != (2,):
            _fail("cloud.position_m", pos.tolist(), "must be 2 numbers (x, y)")
        for v in pos.tolist():
            _scalar("position_m", "cloud.position_m", v)
        object.__setattr__(self, "position_m", tuple(pos.tolist()))


@dataclass(frozen=True, eq=False)
class EdgeServers:
    """Edge servers, one entry per edge index ``e``.

    ``bandwidth_hz`` = B_e shared by the cluster's uplinks (FDMA); ``downlink_power_w`` broadcast power
    (0 = downlink not modelled, as in the paper prototype); backhaul to the cloud: fixed delay (s), rate
    (bit/s) and transmit power (W).
    """

    ids: np.ndarray
    position_m: np.ndarray
    bandwidth_hz: np.ndarray
    downlink_power_w: np.ndarray
    backhaul_delay_s: np.ndarray
    backhaul_rate_bps: np.ndarray
    backhaul_power_w: np.ndarray

    def __post_init__(self):
        for f in dataclasses.fields(self):
            dtype = np.int64 if f.name == "ids" else float
            object.__setattr__(self, f.name, _frozen(getattr(self, f.name), dtype, f"edge_servers.{f.name}"))
        n = len(self.ids)
        if n == 0:
            _fail("edge_servers", [], "a scenario needs at least one edge server")
        for f in dataclasses.fields(self):
            arr = getattr(self, f.name)
            want = (n, 2) if f.name == "position_m" else (n,)
            if arr.shape != want:
                _fail(f"edge_servers.{f.name}.shape", arr.shape, f"must be {want}")
        uniq, counts = np.unique(self.ids, return_counts=True)
        if (counts > 1).any():
            _fail("edge_servers.id", int(uniq[counts > 1][0]), "ids must be unique")
        for f in dataclasses.fields(self):
            if f.name != "ids":
                key = "position_m" if f.name == "position_m" else f"edge_servers.{f.name}"
                _ranged(key, f"edge_servers.{f.name}", getattr(self, f.name), self.ids)

    def __len__(self):
        return len(self.ids)


@dataclass(frozen=True, eq=False)
class Devices:
    """Devices, one entry per device index ``u``.

    ``edge``: index of the home edge server a(u). ``cpu_hz`` max CPU frequency, ``flops_per_cycle`` converts
    FLOPs to cycles, ``kappa`` effective switched capacitance (computing C cycles at f Hz costs kappa C f^2 J),
    ``memory_bytes``, ``pmax_w`` max transmit power. ``uplink_gain`` (U, E) linear power gain to every edge
    server, NaN where unknown (that association is then not allowed). ``modalities`` (U, M) bool = M_u;
    ``samples`` (U, T) int = n_{u,t}; the device executes task t iff it holds samples of it.
    """

    ids: np.ndarray
    position_m: np.ndarray
    edge: np.ndarray
    cpu_hz: np.ndarray
    flops_per_cycle: np.ndarray
    kappa: np.ndarray
    memory_bytes: np.ndarray
    pmax_w: np.ndarray
    uplink_gain: np.ndarray
    modalities: np.ndarray
    samples: np.ndarray

    def __post_init__(self):
        types = {"ids": np.int64, "edge": np.int64, "modalities": bool, "samples": np.int64}
        for f in dataclasses.fields(self):
            value = _frozen(getattr(self, f.name), types.get(f.name, float), f"devices.{f.name}")
            object.__setattr__(self, f.name, value)

    def __len__(self):
        return len(self.ids)

    @property
    def tasks(self) -> np.ndarray:
        """(U, T) bool: T_u, the tasks the device executes."""
        return self.samples > 0

    @property
    def flops_max(self) -> np.ndarray:
        """F_u = cpu_hz * flops_per_cycle (FLOP/s)."""
        return self.cpu_hz * self.flops_per_cycle


@dataclass(frozen=True, eq=False)
class D2DLinks:
    """Directed device-to-device links usable inside a cluster: ``src``/``dst`` device indices, linear ``gain``.

    Each active link gets ``bandwidth_hz`` = B_d. ``range_m`` bounds the link length (inf = no limit: the
    listed links are the usable ones).
    """

    src: np.ndarray
    dst: np.ndarray
    gain: np.ndarray
    bandwidth_hz: float = 1e6
    range_m: float = float("inf")

    def __post_init__(self):
        for name, dtype in (("src", np.int64), ("dst", np.int64), ("gain", float)):
            object.__setattr__(self, name, _frozen(getattr(self, name), dtype, f"d2d.links.{name}"))
        if not (self.src.shape == self.dst.shape == self.gain.shape) or self.src.ndim != 1:
            _fail("d2d.links", (self.src.shape, self.dst.shape, self.gain.shape), "src, dst and gain must be 1-D of one length")
        _scalar("d2d.bandwidth_hz", "d2d.bandwidth_hz", self.bandwidth_hz)
        _scalar("d2d.range_m", "d2d.range_m", self.range_m, unlimited=True)

    def __len__(self):
        return len(self.src)

    @cached_property
    def _by_src(self) -> tuple[np.ndarray, np.ndarray]:
        """(link indices sorted by sender, start of each sender's run in that order, indexed by device)."""
        order = np.argsort(self.src, kind="stable")
        top = int(self.src.max(initial=-1)) + 2
        return order, np.searchsorted(self.src[order], np.arange(top))

    def leaving(self, devices: np.ndarray) -> np.ndarray:
        """Indices of the links sent by ``devices`` (ascending); the cost grows with their links, not with all."""
        order, starts = self._by_src
        devices = np.asarray(devices)[np.asarray(devices) < len(starts) - 1]
        begin, end = starts[devices], starts[devices + 1]
        lengths = end - begin
        offsets = np.repeat(begin - np.cumsum(lengths) + lengths, lengths)
        return np.sort(order[offsets + np.arange(int(lengths.sum()))])


@dataclass(frozen=True)
class PrototypeConstants:
    """The paper prototype's link constants (section 7 of the design), used by the paper accounting and baselines.

    ``model_bits`` is the prototype's update size S; each link kind has a power that sets its rate and a
    (different) power charged for its energy.
    """

    model_bits: float = 48e6
    uplink_bandwidth_hz: float = 1e6
    uplink_rate_power_w: float = 1.0
    uplink_energy_power_w: float = 0.6
    d2d_bandwidth_hz: float = 8e6
    d2d_rate_power_w: float = 0.2
    d2d_energy_power_w: float = 0.6
    d2d_connect_radius_m: float = 30.0
    backhaul_delay_s: float = 0.1
    backhaul_rate_bps: float = 4e6
    backhaul_energy_power_w: float = 0.8

    def __post_init__(self):
        for f in dataclasses.fields(self):
            _scalar(f"prototype.{f.name}", f"prototype.{f.name}", getattr(self, f.name))


@dataclass(frozen=True, eq=False)
class Scenario:
    """A complete, validated scenario. See the module docstring for units and indexing."""

    name: str
    modalities: tuple[str, ...]
    tasks: tuple[str, ...]
    modules: tuple[ModuleSpec, ...]
    edges: EdgeServers
    devices: Devices
    d2d: D2DLinks
    noise_psd_w_per_hz: float
    prototype: PrototypeConstants = field(default_factory=PrototypeConstants)
    recorded_aggregators: np.ndarray | None = None
    cloud: Cloud = field(default_factory=Cloud)
    area_m: float | None = None
    description: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        for kind in ("modalities", "tasks", "modules"):
            if isinstance(getattr(self, kind), (str, dict)):
                _fail(kind, getattr(self, kind), "must be a list")
            object.__setattr__(self, kind, tuple(getattr(self, kind)))
        check_size(len(self.devices), len(self.edges), len(self.d2d))
        rec = self.recorded_aggregators
        rec = _frozen(np.full(len(self.edges), -1) if rec is None else rec, np.int64, "d2d_aggregators")
        object.__setattr__(self, "recorded_aggregators", rec)
        self._validate()

    # ----------------------------------------------------------------- validation
    def _validate(self):
        for name in ("name", "description"):
            if not isinstance(getattr(self, name), str):
                _fail(name, getattr(self, name), "must be a string")
        if not isinstance(self.meta, dict):
            _fail("meta", self.meta, "must be a table")
        for kind, names in (("modalities", self.modalities), ("tasks", self.tasks)):
            if not names:
                _fail(kind, list(names), "at least one is required")
            if not all(isinstance(n, str) and n for n in names):
                _fail(kind, list(names), "names must be non-empty strings")
            if len(set(names)) != len(names):
                _fail(kind, list(names), "names must be unique")
        _scalar("noise_psd_w_per_hz", "noise_psd_w_per_hz", self.noise_psd_w_per_hz)
        if self.area_m is not None:
            _scalar("area_m", "area_m", self.area_m)
        if len(self.modules) > MAX_MODULES:
            _fail("modules", f"{len(self.modules):,} modules", f"at most {MAX_MODULES:,} are supported")
        if not all(isinstance(m, ModuleSpec) for m in self.modules):
            _fail("modules", self.modules, "must be ModuleSpec objects")
        names = [m.name for m in self.modules]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            _fail("modules.name", dup, "module names must be unique")
        for m in self.modules:
            if m.kind == "encoder" and m.key not in self.modalities:
                _fail(f"modules[{m.name}].key", m.key, f"unknown modality; known: {list(self.modalities)}")
            if m.kind in ("prompt", "head") and m.key not in self.tasks:
                _fail(f"modules[{m.name}].key", m.key, f"unknown task; known: {list(self.tasks)}")
        if not any(m.trainable for m in self.modules):
            _fail("modules", names, "at least one module must be trainable")
        self._validate_devices()
        self._validate_d2d()
        self._validate_area()
        rec = self.recorded_aggregators
        if rec.shape != (len(self.edges),):
            _fail("d2d_aggregators.shape", rec.shape, f"must be ({len(self.edges)},)")
        for e in np.flatnonzero(rec >= 0):
            a = int(rec[e])
            if a >= len(self.devices) or self.devices.edge[a] != e:
                _fail(f"d2d_aggregators[edge id={self.edges.ids[e]}]", a, "the aggregator must be a device of that cluster")

    def _validate_area(self):
        """Every device and edge server inside the ``area_m`` square, [0, area_m] m on each axis, when it is given
        (a position in other units, or a typo, would otherwise change every gain computed from distances)."""
        if self.area_m is None:
            return
        for kind, part in (("devices", self.devices), ("edge_servers", self.edges)):
            outside = np.flatnonzero(((part.position_m < 0) | (part.position_m > self.area_m)).any(axis=1))
            if outside.size:
                i = outside[0]
                _fail(f"{kind}[id={part.ids[i]}].position", part.position_m[i].tolist(),
                      f"outside the area, [0, {self.area_m:g}] m on each axis (area_m)")

    def _validate_devices(self):
        d, ids = self.devices, self.devices.ids
        n, n_e = len(d), len(self.edges)
        if n == 0:
            _fail("devices", [], "a scenario needs at least one device")
        shapes = {"position_m": (n, 2), "uplink_gain": (n, n_e), "modalities": (n, len(self.modalities)),
                  "samples": (n, len(self.tasks))}
        for f in dataclasses.fields(d):
            want = shapes.get(f.name, (n,))
            if getattr(d, f.name).shape != want:
                _fail(f"devices.{f.name}.shape", getattr(d, f.name).shape, f"must be {want}")
        uniq, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():
            _fail("devices.id", int(uniq[counts > 1][0]), "ids must be unique")
        _check((d.edge >= 0) & (d.edge < n_e), "devices.edge_server", d.edge, ids, "every device needs an existing edge server")
        _ranged("position_m", "devices.position_m", d.position_m, ids)
        for name in ("cpu_hz", "flops_per_cycle", "memory_bytes", "pmax_w", "kappa", "samples"):
            _ranged(f"devices.{name}", f"devices.{name}", getattr(d, name), ids)
        g = d.uplink_gain
        _ranged("devices.uplink_gain", "devices.uplink_gain", g, ids, nan_ok=True)
        home = g[np.arange(n), d.edge]
        _check(np.isfinite(home), "devices.uplink_gain[home edge]", home, ids, "the gain to the home edge server is required")
        _check(d.modalities.any(axis=1), "devices.modalities", d.modalities, ids, "a device needs at least one modality")
        _check(d.samples.sum(axis=1) > 0, "devices.samples", d.samples, ids, "a device needs samples of at least one task")

    def _validate_d2d(self):
        k, d = self.d2d, self.devices
        n = len(d)
        if len(k) == 0:
            return
        link_ids = np.arange(len(k))
        ok = (k.src >= 0) & (k.src < n) & (k.dst >= 0) & (k.dst < n)
        _check(ok, "d2d.links.from/to", np.stack([k.src, k.dst], 1), link_ids, "must be device indices")
        _check(k.src != k.dst, "d2d.links.from/to", np.stack([k.src, k.dst], 1), link_ids, "a link joins two different devices")
        _check(d.edge[k.src] == d.edge[k.dst], "d2d.links.from/to", np.stack([d.ids[k.src], d.ids[k.dst]], 1), link_ids,
               "D2D links stay inside one cluster (same edge server)")
        _ranged("d2d.gain", "d2d.links.gain", k.gain, link_ids)
        length = np.linalg.norm(d.position_m[k.src] - d.position_m[k.dst], axis=1)
        _check(length <= k.range_m, "d2d.links.length_m", length, link_ids, f"must be within d2d.range_m = {k.range_m}")
        key = k.src * n + k.dst
        uniq, counts = np.unique(key, return_counts=True)
        if (counts > 1).any():
            dup = int(uniq[counts > 1][0])
            _fail("d2d.links", (int(d.ids[dup // n]), int(d.ids[dup % n])), "each ordered pair may be listed once")

    # ----------------------------------------------------------------- derived views
    @property
    def n_devices(self) -> int:
        return len(self.devices)

    @property
    def n_edges(self) -> int:
        return len(self.edges)

    @property
    def module_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modules)

    @cached_property
    def fingerprint(self) -> str:
        """Hash (16 hex digits) of everything a plan depends on: the canonical JSON of the modalities, tasks,
        modules, constants and D2D settings, and the bytes of every per-edge, per-device and per-link array (NaN
        gains canonical). Name, description and meta do not count; a JSON or TOML round trip keeps it."""
        h = hashlib.sha256()
        head = {"modalities": self.modalities, "tasks": self.tasks, "noise_psd_w_per_hz": self.noise_psd_w_per_hz,
                "modules": [dataclasses.asdict(m) for m in self.modules],
                "prototype": dataclasses.asdict(self.prototype),
                "cloud": self.cloud.position_m, "d2d": [self.d2d.bandwidth_hz, str(self.d2d.range_m)]}
        h.update(json.dumps(head, sort_keys=True).encode())
        for group in (self.edges, self.devices, self.d2d):
            for f in dataclasses.fields(group):
                value = getattr(group, f.name)
                if isinstance(value, np.ndarray):
                    value = np.where(np.isnan(value), np.nan, value) if value.dtype.kind == "f" else value
                    h.update(f"{f.name}{value.shape}{value.dtype}".encode() + np.ascontiguousarray(value).tobytes())
        h.update(self.recorded_aggregators.tobytes())
        return h.hexdigest()[:16]

    @cached_property
    def module_arrays(self) -> dict[str, np.ndarray]:
        """Per-module quantities as arrays of length K (bits, FLOP per sample, bytes, flags)."""
        fields_ = ("update_bits", "full_bits", "flops_per_sample", "memory_bytes", "train_memory_bytes", "trainable",
                   "cluster_local")
        flags = ("trainable", "cluster_local")
        return {f: _frozen([getattr(m, f) for m in self.modules], bool if f in flags else float, f"modules.{f}")
                for f in fields_}

    @cached_property
    def need(self) -> np.ndarray:
        """(U, K) bool: Need(u), the modules device u runs (encoders of M_u, prompts/heads of T_u, shared ones)."""
        d = self.devices
        cols = []
        for m in self.modules:
            if m.kind in SHARED_KINDS:
                cols.append(np.ones(len(d), bool))
            elif m.kind == "encoder":
                cols.append(d.modalities[:, self.modalities.index(m.key)])
            else:
                cols.append(d.tasks[:, self.tasks.index(m.key)])
        return _frozen(np.stack(cols, axis=1), bool, "need")

    @cached_property
    def _link_keys(self) -> tuple[np.ndarray, np.ndarray]:
        key = self.d2d.src * self.n_devices + self.d2d.dst
        order = np.argsort(key, kind="stable")
        return key[order], order

    def link_lookup(self, src, dst) -> np.ndarray:
        """D2D link index of each (src, dst) device-index pair, -1 where no such link is listed (vectorised)."""
        keys, order = self._link_keys
        want = np.asarray(src, dtype=np.int64) * self.n_devices + np.asarray(dst, dtype=np.int64)
        pos = np.clip(np.searchsorted(keys, want), 0, max(len(keys) - 1, 0))
        hit = (len(keys) > 0) & (keys[pos] == want) if len(keys) else np.zeros(want.shape, bool)
        return np.where(hit, order[pos] if len(keys) else -1, -1)

    def cluster(self, e: int) -> np.ndarray:
        """Device indices whose home edge is ``e``."""
        return np.flatnonzero(self.devices.edge == e)

    def home_uplink_gain(self) -> np.ndarray:
        """(U,) linear gain of each device to its home edge server."""
        return self.devices.uplink_gain[np.arange(self.n_devices), self.devices.edge]

    def replace(self, **changes) -> "Scenario":
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)
