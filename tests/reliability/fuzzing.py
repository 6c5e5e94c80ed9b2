"""Helpers of the bad-input hunt: valid documents of every kind the command line reads, mutations of them (drop, add,
rename, retype and re-nest keys, extreme numbers) drawn by hypothesis, and one in-process run of ``hffm-opt`` whose
outcome must be a valid result (exit 0, strict JSON on stdout) or a refusal (exit 2, one line on stderr, nothing on
stdout), never a traceback."""

from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
from hypothesis import strategies as st

from hffm_opt.cli import main
from hffm_opt.network import generators
from hffm_opt.network.io import to_dict
from hffm_opt.schedulers import schedule

# values a mutation puts in place of another: every JSON type, signs, zero, tiny and huge numbers, text
PALETTE = [None, True, False, 0, -1, 1, 3, 0.5, -0.0, 1e-320, 1e-30, 1e15, 1e308, -1e308, 2 ** 31, 2 ** 63, 10 ** 30,
           "", "x", "1", "paper", "hierarchical", "cloud", [], {}, [1, 2, 3], [[0.5]], {"a": 1}, [None]]
EXTREMES = [0, -0.0, -1, 1e-320, 1e-300, 1e-45, 1e-12, 1e12, 1e15, 1e18, 1e300, 1e308, -1e308, 2 ** 53 + 1, 2 ** 62,
            2 ** 63, -(2 ** 63), 10 ** 400]
OPS = ("drop", "add", "rename", "retype", "renest", "extreme")


def tiny_scenario():
    """2 edge servers x 2 devices with D2D links and a recorded aggregator per cluster (the fuzzed scenario)."""
    s = generators.clustered(2, 2, seed=0, spacing_m=800.0, cluster_radius_m=250.0)
    return s.replace(recorded_aggregators=np.array([0, 2]))


def documents() -> dict:
    """The valid documents the hunt starts from, by kind."""
    s = tiny_scenario()
    paper = generators.embedded_paper_data()
    first = [d for d in paper["devices"] if d["edge_server"] == 0]
    ids = {d["id"] for d in first}
    return {
        "scenario": to_dict(s),
        "plan": schedule(s, "hierarchical-d2d", e_agg=2).to_dict(),
        "generator": {"generator": {"name": "clustered", "n_edges": 1, "devices_per_edge": 2, "seed": 1,
                                    "spacing_m": 800.0, "d2d_range_m": 400.0},
                      "profile": {"cpu_hz": 1.5e9, "samples_per_task": 100, "heterogeneity": "device",
                                  "p_task": 0.5, "tasks": ["vqa", "shape"]}},
        "paper-format": {**{k: paper[k] for k in ("units", "area_m", "constants")},
                         "edge_servers": paper["edge_servers"][:1], "devices": first,
                         "d2d_links": [lk for lk in paper["d2d_links"] if lk["from"] in ids and lk["to"] in ids],
                         "d2d_aggregators": {"0": paper["d2d_aggregators"]["0"]}},
    }


def _containers(doc) -> list:
    """Every (container, key) of a parsed document, depth first (the document itself is not one)."""
    out, stack = [], [doc]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            out.append((node, key))
            if isinstance(value, (dict, list)):
                stack.append(value)
    return out


@st.composite
def _typo(draw, key: str) -> str:
    key = str(key)
    i = draw(st.integers(0, max(len(key) - 1, 0)))
    kind = draw(st.sampled_from(("drop", "double", "swap", "case", "suffix")))
    if kind == "drop" and key:
        return key[:i] + key[i + 1:]
    if kind == "double" and key:
        return key[:i] + key[i] + key[i:]
    if kind == "swap" and len(key) > 1:
        i = min(i, len(key) - 2)
        return key[:i] + key[i + 1] + key[i] + key[i + 2:]
    if kind == "case":
        return key.upper()
    return key + draw(st.sampled_from(("_", "s", "2", " ")))


@st.composite
def mutated(draw, doc: dict, max_ops: int = 3) -> dict:
    """``doc`` with 1 to ``max_ops`` mutations: drop, add, rename, retype, re-nest a key, or put an extreme number."""
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, max_ops))):
        places = _containers(doc)
        if not places:
            break
        node, key = places[draw(st.integers(0, len(places) - 1))]
        op = draw(st.sampled_from(OPS))
        value = copy.deepcopy(draw(st.sampled_from(PALETTE)))  # a fresh copy: the palette itself never changes
        if op == "drop":
            del node[key]
        elif op == "add":
            if isinstance(node, dict):
                node[draw(_typo(key))] = value
            else:
                node.append(value)
        elif op == "rename" and isinstance(node, dict):
            node[draw(_typo(key))] = node.pop(key)
        elif op == "renest":
            node[key] = draw(st.sampled_from(([node[key]], {"value": node[key]})))
        elif op == "extreme":
            node[key] = draw(st.sampled_from(EXTREMES))
        else:
            node[key] = value
    return doc


def _no_constant(name):
    raise ValueError(f"{name} in the output: not strict JSON")


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``hffm-opt ARGV`` in this process; checks the outcome (see the module docstring) and returns it."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    out, err = out.getvalue(), err.getvalue()
    assert "Traceback" not in err and "internal error" not in err, err
    if code == 0:
        json.loads(out, parse_constant=_no_constant)
    else:
        assert code == 2, (code, err)
        assert out == "", out
        assert len(err.splitlines()) == 1 and err.startswith(f"hffm-opt {argv[0]}: error: "), err
    return code, out, err
