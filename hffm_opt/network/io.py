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

Reading is strict (:mod:`.documents`): an unknown key or section, a value of the wrong type (a boolean as a number,
a fractional count, a string id, an array of the wrong length) or an unknown ``version`` is refused with the file,
the field, the value and the rule, before anything is built. Writes are atomic (temporary file, then rename).
Floats round-trip exactly (shortest repr).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from .._io import atomic_write, dumps_json, finite_json
from ..errors import ScenarioError
from . import generators
from .documents import (
    as_column,
    as_list,
    as_number,
    as_numbers,
    as_str,
    as_strings,
    as_table,
    check_depth,
    check_keys,
    check_keywords,
    check_version,
    first_repeat,
    id_key,
    read_document,
    short,
)
from .limits import check_size
from .scenario import Cloud, D2DLinks, Devices, EdgeServers, ModuleSpec, PrototypeConstants, Scenario

FORMAT = "hffm-opt/scenario"
VERSIONS = (1,)  # the native format versions this package reads (it writes the last)
EMBEDDED = ("paper",)
GENERATORS = {"paper": generators.paper, "clustered": generators.clustered}
_EDGE_FIELDS = ("bandwidth_hz", "downlink_power_w", "backhaul_delay_s", "backhaul_rate_bps", "backhaul_power_w")
_DEVICE_FIELDS = ("cpu_hz", "flops_per_cycle", "kappa", "memory_bytes", "pmax_w")
_EDGE_KEYS = {"id", "position_m", *_EDGE_FIELDS}
_LINK_KEYS = {"from", "to", "gain"}
_DEVICE_KEYS = {"id", "position_m", "edge_server", *_DEVICE_FIELDS, "modalities", "samples", "uplink_gain"}
_TOP_KEYS = {"format", "version", "name", "description", "area_m", "noise_psd_w_per_hz", "modalities", "tasks",
             "cloud", "prototype", "modules", "edge_servers", "devices", "d2d", "d2d_aggregators", "meta"}
_REQUIRED = ("format", "name", "noise_psd_w_per_hz", "modalities", "tasks", "modules", "edge_servers", "devices", "d2d")


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


def _edge(e, i: int) -> tuple[int, dict]:
    """One checked ``edge_servers`` entry: (id, fields)."""
    where = f"edge_servers[{i}]"
    e = check_keys(e, where, _EDGE_KEYS, ScenarioError, required=sorted(_EDGE_KEYS))
    eid = as_number(e["id"], f"{where}.id", ScenarioError, integer=True)
    where = f"edge_servers[id={eid}]"
    as_numbers(e["position_m"], f"{where}.position_m", ScenarioError, length=2)
    for f in _EDGE_FIELDS:
        as_number(e[f], f"{where}.{f}", ScenarioError)
    return eid, e


def _device(u, i: int, modalities: list, tasks: list) -> tuple[int, dict]:
    """One checked ``devices`` entry: (id, fields)."""
    where = f"devices[{i}]"
    u = check_keys(u, where, _DEVICE_KEYS, ScenarioError, required=sorted(_DEVICE_KEYS))
    uid = as_number(u["id"], f"{where}.id", ScenarioError, integer=True)
    where = f"devices[id={uid}]"
    as_numbers(u["position_m"], f"{where}.position_m", ScenarioError, length=2)
    as_number(u["edge_server"], f"{where}.edge_server", ScenarioError, integer=True)
    for f in _DEVICE_FIELDS:
        as_number(u[f], f"{where}.{f}", ScenarioError)
    for m in as_strings(u["modalities"], f"{where}.modalities", ScenarioError, unique=True):
        as_str(m, f"{where}.modalities", ScenarioError, choices=modalities)
    for t, n in as_table(u["samples"], f"{where}.samples", ScenarioError).items():
        as_str(t, f"{where}.samples key", ScenarioError, choices=tasks)
        as_number(n, f"{where}.samples.{t}", ScenarioError, integer=True)
    as_table(u["uplink_gain"], f"{where}.uplink_gain", ScenarioError)  # its keys and values: in _gains
    return uid, u


def _gains(row: np.ndarray, table: dict, columns: dict[str, int], where: str) -> None:
    """Fill ``row`` from a device's ``uplink_gain`` table (edge id as key -> linear gain), checked in bulk."""
    keys = list(table)
    cols = [columns.get(key) for key in keys]
    if None in cols:
        key = keys[cols.index(None)]
        id_key(key, f"{where}.uplink_gain key", ScenarioError)
        raise ScenarioError(f"{where}.uplink_gain key = {key!r}: no edge server has that id")
    row[cols] = as_column(list(table.values()), lambda j: f"{where}.uplink_gain.{keys[j]}", ScenarioError)


def _links(links: list, d_index: dict[int, int]) -> tuple[list, list, list]:
    """Device indices (from, to) and gains of the ``d2d.links`` entries, checked in bulk."""
    err = ScenarioError
    if not all(type(lk) is dict and lk.keys() == _LINK_KEYS for lk in links):
        i = next(i for i, lk in enumerate(links) if type(lk) is not dict or lk.keys() != _LINK_KEYS)
        check_keys(links[i], f"d2d.links[{i}]", _LINK_KEYS, err, required=sorted(_LINK_KEYS))
    ends = []
    for end in ("from", "to"):
        ids = as_column([lk[end] for lk in links], lambda i: f"d2d.links[{i}].{end}", err, integer=True)
        index = [d_index.get(i, -1) for i in ids]
        if -1 in index:
            i = index.index(-1)
            raise err(f"d2d.links[{i}].{end} = {ids[i]!r}: no device has that id")
        ends.append(index)
    return ends[0], ends[1], as_column([lk["gain"] for lk in links], lambda i: f"d2d.links[{i}].gain", err)


def _index(ids: list[int], where: str) -> dict[int, int]:
    index = {i: k for k, i in enumerate(ids)}
    if len(index) != len(ids):
        raise ScenarioError(f"{where}.id = {first_repeat(ids)}: ids must be unique")
    return index


def from_dict(data: dict) -> Scenario:
    """Inverse of :func:`to_dict`; raises :class:`ScenarioError` naming what is missing, unknown or wrong (every
    key and type is checked before anything is built)."""
    err = ScenarioError
    if as_table(data, "", err).get("format") != FORMAT:
        raise err(f"format = {short(data.get('format'))}: a native scenario has format {FORMAT!r}")
    check_keys(data, "", _TOP_KEYS, err, required=_REQUIRED)
    check_version(data.get("version", VERSIONS[-1]), "version", VERSIONS, err)
    modalities = as_strings(data["modalities"], "modalities", err, unique=True)
    tasks = as_strings(data["tasks"], "tasks", err, unique=True)
    edges_in, devs_in = as_list(data["edge_servers"], "edge_servers", err), as_list(data["devices"], "devices", err)
    dd = check_keys(data["d2d"], "d2d", {"bandwidth_hz", "range_m", "links"}, err, required=("bandwidth_hz", "links"))
    links_in = as_list(dd["links"], "d2d.links", err)
    check_size(len(devs_in), len(edges_in), len(links_in))
    edges_in = [_edge(e, i) for i, e in enumerate(edges_in)]
    e_ids = [e for e, _ in edges_in]
    e_index = _index(e_ids, "edge_servers")
    devs = [_device(u, i, modalities, tasks) for i, u in enumerate(devs_in)]
    d_ids = [i for i, _ in devs]
    d_index = _index(d_ids, "devices")
    gains = np.full((len(devs), len(e_ids)), np.nan)
    mods = np.zeros((len(devs), len(modalities)), bool)
    samples = np.zeros((len(devs), len(tasks)), np.int64)
    home, columns = [], {str(e): k for k, e in enumerate(e_ids)}
    for k, (uid, u) in enumerate(devs):
        where = f"devices[id={uid}]"
        if u["edge_server"] not in e_index:
            raise err(f"{where}.edge_server = {u['edge_server']!r}: no edge server has that id")
        home.append(e_index[u["edge_server"]])
        _gains(gains[k], u["uplink_gain"], columns, where)
        mods[k, [modalities.index(m) for m in u["modalities"]]] = True
        for t, n in u["samples"].items():
            samples[k, tasks.index(t)] = n
    edges = EdgeServers(ids=e_ids, position_m=[e["position_m"] for _, e in edges_in],
                        **{f: [e[f] for _, e in edges_in] for f in _EDGE_FIELDS})
    devices = Devices(ids=d_ids, position_m=[u["position_m"] for _, u in devs], edge=home,
                      **{f: [u[f] for _, u in devs] for f in _DEVICE_FIELDS},
                      uplink_gain=gains, modalities=mods, samples=samples)
    src, dst, gain = _links(links_in, d_index)
    rng = as_number(dd.get("range_m"), "d2d.range_m", err, none=True)
    d2d = D2DLinks(src=src, dst=dst, gain=gain, bandwidth_hz=as_number(dd["bandwidth_hz"], "d2d.bandwidth_hz", err),
                   range_m=math.inf if rng is None else rng)
    rec = np.full(len(e_ids), -1)
    for e, a in as_table(data.get("d2d_aggregators", {}), "d2d_aggregators", err).items():
        eid = id_key(e, "d2d_aggregators key", err)
        if eid not in e_index:
            raise err(f"d2d_aggregators key = {e!r}: no edge server has that id")
        if as_number(a, f"d2d_aggregators.{e}", err, integer=True) not in d_index:
            raise err(f"d2d_aggregators.{e} = {a!r}: no device has that id")
        rec[e_index[eid]] = d_index[a]
    modules = [ModuleSpec(**check_keywords(ModuleSpec, m, f"modules[{i}]", err))
               for i, m in enumerate(as_list(data["modules"], "modules", err))]
    meta = as_table(data.get("meta", {}), "meta", err)
    check_depth(meta, "meta", err)  # the one free-form table: every other field has a declared type and shape
    cloud = check_keys(data.get("cloud", {}), "cloud", {"position_m"}, err)
    return Scenario(name=as_str(data["name"], "name", err), modalities=modalities, tasks=tasks, modules=modules,
                    edges=edges, devices=devices, d2d=d2d,
                    noise_psd_w_per_hz=as_number(data["noise_psd_w_per_hz"], "noise_psd_w_per_hz", err),
                    prototype=PrototypeConstants(**check_keywords(PrototypeConstants, data.get("prototype", {}),
                                                                  "prototype", err)),
                    recorded_aggregators=rec,
                    cloud=Cloud(tuple(as_numbers(cloud.get("position_m", [0.0, 0.0]), "cloud.position_m", err, 2))),
                    area_m=as_number(data.get("area_m"), "area_m", err, none=True),
                    description=as_str(data.get("description", ""), "description", err), meta=meta)


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
        text = tomli_w.dumps(_drop_none(finite_json(doc)))
    elif path.suffix == ".json":
        text = dumps_json(doc, indent=1)
    else:
        raise ScenarioError(f"path suffix = {path.suffix!r}: must be .json or .toml")
    return atomic_write(path, text)


def load_scenario(name_or_path, profile: generators.DeviceProfile | None = None) -> Scenario:
    """Load an embedded scenario by name, or a native / paper-format / generator-config file by path; any error in
    the file raises :class:`ScenarioError` naming the file, the field, the value and the rule."""
    key = str(name_or_path)
    if key in EMBEDDED:
        return generators.paper_scenario(profile)
    path = Path(key)
    if not key.strip() or not path.exists():
        raise ScenarioError(f"scenario = {key!r}: neither an embedded scenario {list(EMBEDDED)} nor an existing file")
    data = read_document(path, "scenario", ScenarioError, nesting=False)  # typed fields are checked by the readers
    if "format" in data and data["format"] != FORMAT:
        raise ScenarioError(f"scenario file {key!r}: format = {short(data['format'])}: a scenario file has format "
                            f"{FORMAT!r} (or none: a paper-format file or a [generator] config)")
    try:
        if data.get("format") == FORMAT:
            return from_dict(data)
        if "generator" in data:
            return from_config(data, profile)
        if "devices" in data and "edge_servers" in data:
            return generators.from_paper_format(data, profile, name=path.stem)
    except ScenarioError as exc:
        raise ScenarioError(f"scenario file {key!r}: {exc}") from None
    raise ScenarioError(f"scenario file {key!r} = <unknown format>: expected a native scenario (format {FORMAT!r}), "
                        f"a paper-format file or a [generator] config")


def from_config(data: dict, profile: generators.DeviceProfile | None) -> Scenario:
    """The scenario a generator config describes: ``[generator]`` (``name`` and the generator's keywords) and an
    optional ``[profile]`` (:class:`~hffm_opt.network.generators.DeviceProfile` fields); ``profile``, when given,
    replaces the config's."""
    err = ScenarioError
    check_keys(data, "", {"generator", "profile"}, err, required=("generator",))
    check_depth(data, "generator config", err)
    gen = dict(as_table(data["generator"], "generator", err))
    if "name" not in gen:
        raise err(f"generator.name = <missing>: required, one of {sorted(GENERATORS) + ['paper-file']}")
    kind = as_str(gen.pop("name"), "generator.name", err, choices=sorted(GENERATORS) + ["paper-file"])
    given = generators.DeviceProfile(**check_keywords(generators.DeviceProfile, data.get("profile", {}), "profile",
                                                       err))
    profile = profile or given
    if kind == "paper-file":
        check_keys(gen, "generator", {}, err)
        return generators.paper_scenario(profile)
    check_keywords(GENERATORS[kind], gen, "generator", err, skip=("profile", "proto"))
    return GENERATORS[kind](profile=profile, **gen)
