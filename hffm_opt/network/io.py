"""Reading and writing scenarios: the native JSON/TOML format, the paper prototype's format, embedded names.

``load_scenario(name_or_path)`` accepts an embedded scenario name (``paper``), a native ``.json``/``.toml``
file, a paper-format ``.json`` file, or a ``.toml`` generator config::

    [generator]              # "paper" (random draw), "clustered", or "paper-file" (the embedded prototype)
    name = "clustered"
    n_edges = 10
    devices_per_edge = 40
    seed = 3
    [profile]                # any DeviceProfile field, e.g.
    heterogeneity = "cluster"

Writes are atomic (temporary file, then rename). Floats round-trip exactly (shortest repr).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np

from .._io import atomic_write
from ..errors import ScenarioError
from . import generators
from .scenario import Cloud, D2DLinks, Devices, EdgeServers, ModuleSpec, PrototypeConstants, Scenario

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FORMAT = "hffm-opt/scenario"
EMBEDDED = ("paper",)
_EDGE_FIELDS = ("bandwidth_hz", "downlink_power_w", "backhaul_delay_s", "backhaul_rate_bps", "backhaul_power_w")
_DEVICE_FIELDS = ("cpu_hz", "flops_per_cycle", "kappa", "memory_bytes", "pmax_w")


def to_dict(s: Scenario) -> dict:
    """The native, JSON-ready form of a scenario (ids, not indices; ``None`` for an unlimited D2D range)."""
    e_ids, d = s.edges.ids.tolist(), s.devices
    edges = [{"id": e_ids[e], "position_m": s.edges.position_m[e].tolist()}
             | {f: float(getattr(s.edges, f)[e]) for f in _EDGE_FIELDS} for e in range(s.n_edges)]
    devices = []
    for u in range(s.n_devices):
        g = d.uplink_gain[u]
        devices.append({"id": int(d.ids[u]), "position_m": d.position_m[u].tolist(), "edge_server": e_ids[d.edge[u]]}
                       | {f: float(getattr(d, f)[u]) for f in _DEVICE_FIELDS}
                       | {"modalities": [m for m, h in zip(s.modalities, d.modalities[u]) if h],
                          "samples": {t: int(n) for t, n in zip(s.tasks, d.samples[u]) if n > 0},
                          "uplink_gain": {str(e_ids[e]): float(g[e]) for e in np.flatnonzero(~np.isnan(g))}})
    links = [{"from": int(d.ids[a]), "to": int(d.ids[b]), "gain": float(g)}
             for a, b, g in zip(s.d2d.src, s.d2d.dst, s.d2d.gain)]
    return {"format": FORMAT, "version": 1, "name": s.name, "description": s.description, "area_m": s.area_m,
            "noise_psd_w_per_hz": s.noise_psd_w_per_hz, "modalities": list(s.modalities), "tasks": list(s.tasks),
            "cloud": {"position_m": list(s.cloud.position_m)}, "prototype": dataclasses.asdict(s.prototype),
            "modules": [dataclasses.asdict(m) for m in s.modules], "edge_servers": edges, "devices": devices,
            "d2d": {"bandwidth_hz": s.d2d.bandwidth_hz, "range_m": None if math.isinf(s.d2d.range_m) else s.d2d.range_m,
                    "links": links},
            "d2d_aggregators": {str(e_ids[e]): int(d.ids[a]) for e, a in enumerate(s.recorded_aggregators) if a >= 0},
            "meta": s.meta}


def from_dict(data: dict) -> Scenario:
    """Inverse of :func:`to_dict`; raises :class:`ScenarioError` naming what is missing or wrong."""
    if data.get("format") != FORMAT:
        raise ScenarioError(f"format = {data.get('format')!r}: a native scenario has format {FORMAT!r}")
    try:
        modalities, tasks = list(data["modalities"]), list(data["tasks"])
        edges_in, devs_in = data["edge_servers"], data["devices"]
        e_ids = [int(e["id"]) for e in edges_in]
        e_index = {i: k for k, i in enumerate(e_ids)}
        edges = EdgeServers(ids=e_ids, position_m=[e["position_m"] for e in edges_in],
                            **{f: [e[f] for e in edges_in] for f in _EDGE_FIELDS})
        d_ids = [int(u["id"]) for u in devs_in]
        d_index = {i: k for k, i in enumerate(d_ids)}
        gains = np.full((len(devs_in), len(e_ids)), np.nan)
        mods = np.zeros((len(devs_in), len(modalities)), bool)
        samples = np.zeros((len(devs_in), len(tasks)), np.int64)
        home = []
        for k, u in enumerate(devs_in):
            where = f"devices[id={u['id']}]"
            if u["edge_server"] not in e_index:
                raise ScenarioError(f"{where}.edge_server = {u['edge_server']!r}: no edge server has that id")
            home.append(e_index[u["edge_server"]])
            for e, g in u["uplink_gain"].items():
                if int(e) not in e_index:
                    raise ScenarioError(f"{where}.uplink_gain key = {e!r}: no edge server has that id")
                gains[k, e_index[int(e)]] = g
            for m in u["modalities"]:
                if m not in modalities:
                    raise ScenarioError(f"{where}.modalities = {m!r}: unknown modality; known: {modalities}")
                mods[k, modalities.index(m)] = True
            for t, n in u["samples"].items():
                if t not in tasks:
                    raise ScenarioError(f"{where}.samples = {t!r}: unknown task; known: {tasks}")
                samples[k, tasks.index(t)] = n
        devices = Devices(ids=d_ids, position_m=[u["position_m"] for u in devs_in], edge=home,
                          **{f: [u[f] for u in devs_in] for f in _DEVICE_FIELDS},
                          uplink_gain=gains, modalities=mods, samples=samples)
        dd = data["d2d"]
        for lk in dd["links"]:
            for end in ("from", "to"):
                if int(lk[end]) not in d_index:
                    raise ScenarioError(f"d2d.links.{end} = {lk[end]!r}: no device has that id")
        rng = dd.get("range_m")
        d2d = D2DLinks(src=[d_index[int(lk["from"])] for lk in dd["links"]],
                       dst=[d_index[int(lk["to"])] for lk in dd["links"]], gain=[lk["gain"] for lk in dd["links"]],
                       bandwidth_hz=dd["bandwidth_hz"], range_m=math.inf if rng is None else rng)
        rec = np.full(len(e_ids), -1)
        for e, a in data.get("d2d_aggregators", {}).items():
            if int(e) not in e_index or int(a) not in d_index:
                raise ScenarioError(f"d2d_aggregators[{e}] = {a!r}: unknown edge server or device id")
            rec[e_index[int(e)]] = d_index[int(a)]
        return Scenario(name=data["name"], modalities=modalities, tasks=tasks,
                        modules=[ModuleSpec(**m) for m in data["modules"]], edges=edges, devices=devices, d2d=d2d,
                        noise_psd_w_per_hz=data["noise_psd_w_per_hz"],
                        prototype=PrototypeConstants(**data.get("prototype", {})), recorded_aggregators=rec,
                        cloud=Cloud(tuple(data.get("cloud", {}).get("position_m", (0.0, 0.0)))),
                        area_m=data.get("area_m"), description=data.get("description", ""), meta=data.get("meta", {}))
    except KeyError as exc:
        raise ScenarioError(f"field {exc} = <missing>: required in a native scenario") from None
    except TypeError as exc:
        raise ScenarioError(f"scenario document = <malformed>: {exc}") from None


def _drop_none(obj):
    """TOML has no null: drop None values (they are the defaults on reading)."""
    if isinstance(obj, dict):
        return {k: _drop_none(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_drop_none(v) for v in obj]
    return obj


def save_scenario(s: Scenario, path) -> Path:
    """Write ``s`` as native JSON or TOML (by suffix), atomically."""
    import tomli_w

    path = Path(path)
    doc = to_dict(s)
    if path.suffix == ".toml":
        text = tomli_w.dumps(_drop_none(doc))
    elif path.suffix == ".json":
        text = json.dumps(doc, indent=1)
    else:
        raise ScenarioError(f"path suffix = {path.suffix!r}: must be .json or .toml")
    return atomic_write(path, text)


def load_scenario(name_or_path, profile: generators.DeviceProfile | None = None) -> Scenario:
    """Load an embedded scenario by name, or a native / paper-format / generator-config file by path."""
    key = str(name_or_path)
    if key in EMBEDDED:
        return generators.paper_scenario(profile)
    path = Path(key)
    if not path.is_file():
        raise ScenarioError(f"scenario = {key!r}: neither an embedded scenario {list(EMBEDDED)} nor an existing file")
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(path.read_text())
        else:
            data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"scenario file {str(path)!r} = <unreadable>: {exc}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"scenario file {str(path)!r} = {type(data).__name__}: the document must be an object")
    if data.get("format") == FORMAT:
        return from_dict(data)
    if "generator" in data:
        return from_config(data, profile)
    if "devices" in data and "edge_servers" in data:
        return generators.from_paper_format(data, profile, name=path.stem)
    raise ScenarioError(f"scenario file {str(path)!r} = <unknown format>: expected a native scenario "
                        f"(format {FORMAT!r}), a paper-format file or a [generator] config")


def from_config(data: dict, profile: generators.DeviceProfile | None) -> Scenario:
    gen = dict(data["generator"])
    kind = gen.pop("name", None)
    try:
        profile = profile or generators.DeviceProfile(**data.get("profile", {}))
    except TypeError as exc:
        raise ScenarioError(f"profile = {data.get('profile')!r}: {exc}") from None
    makers = {"paper": generators.paper, "clustered": generators.clustered}
    if kind == "paper-file":
        return generators.paper_scenario(profile)
    if kind not in makers:
        raise ScenarioError(f"generator.name = {kind!r}: must be one of {sorted(makers) + ['paper-file']}")
    try:
        return makers[kind](profile=profile, **gen)
    except TypeError as exc:
        raise ScenarioError(f"generator = {gen!r}: {exc}") from None
