"""A map of a plan on its network: edge servers, devices coloured by cluster, D2D aggregators, relay-tree links and
uplinks, each line as wide as the bits it carries per edge round (the evaluator's consistent accounting, read from
:func:`hffm_opt.formulations.cluster.cluster_data`). Positions in metres."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._io import atomic_path
from ..evaluate import evaluate
from ..formulations.cluster import cluster_data
from ..network.scenario import Scenario
from ..plan import Plan

MAX_WIDTH = 4.0  # points: the width of the busiest link; others scale by their bits


def plan_links(scenario: Scenario, plan: Plan) -> dict:
    """The links a plan uses in one edge round: ``relay`` (k, 2) device indices (child, parent) and their bits,
    ``uplink`` (m, 2) (device, edge) and their bits (every device of a cluster without D2D; the aggregator of a D2D
    cluster, with the aggregate it sends once per period)."""
    relay, relay_bits, uplink, uplink_bits = [], [], [], []
    for e in range(scenario.n_edges):
        d = cluster_data(scenario, plan, e)
        if len(d.members) == 0:
            continue
        if d.uses_d2d:
            child = np.flatnonzero(d.parent >= 0)
            relay.append(np.stack([d.members[child], d.members[d.parent[child]]], axis=1))
            relay_bits.append(d.up_bits[child])
            uplink.append(np.array([[d.members[d.root], e]]))
            uplink_bits.append(np.array([d.agg_bits]))
        else:
            sends = np.flatnonzero(d.up_bits > 0)
            uplink.append(np.stack([d.members[sends], np.full(sends.size, e)], axis=1))
            uplink_bits.append(d.up_bits[sends])

    return {"relay": np.concatenate(relay) if relay else np.zeros((0, 2), int),
            "relay_bits": np.concatenate(relay_bits) if relay_bits else np.zeros(0),
            "uplink": np.concatenate(uplink) if uplink else np.zeros((0, 2), int),
            "uplink_bits": np.concatenate(uplink_bits) if uplink_bits else np.zeros(0)}


def draw_network(scenario: Scenario, plan: Plan, path) -> dict:
    """Draw ``plan`` on ``scenario``'s map into the PNG ``path`` (atomically); returns the counts drawn
    (``devices``, ``edges``, ``aggregators``, ``relay_links``, ``uplinks``). The plan is checked by ``evaluate``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import colormaps
    from matplotlib.collections import LineCollection

    metrics = evaluate(scenario, plan)
    links = plan_links(scenario, plan)
    dev_xy, edge_xy = scenario.devices.position_m, scenario.edges.position_m
    top = max(float(links["relay_bits"].max(initial=0.0)), float(links["uplink_bits"].max(initial=0.0)), 1.0)
    palette = colormaps["tab20"].colors
    fig, ax = plt.subplots(figsize=(7, 7))
    for kind, ends_xy, style in (("uplink", edge_xy, dict(colors="0.55", alpha=0.6, label="uplink")),
                                 ("relay", dev_xy, dict(colors="tab:red", alpha=0.8, label="D2D relay link"))):
        if len(links[kind]):  # an empty, labelled collection breaks the legend
            ax.add_collection(LineCollection(np.stack([dev_xy[links[kind][:, 0]], ends_xy[links[kind][:, 1]]], 1),
                                             linewidths=0.3 + MAX_WIDTH * links[f"{kind}_bits"] / top, **style))
    colours = np.array(palette)[plan.association % len(palette)]
    ax.scatter(dev_xy[:, 0], dev_xy[:, 1], s=10, c=colours, zorder=3, label="device (colour = cluster)")
    aggregators = plan.aggregator[plan.aggregator >= 0]
    if aggregators.size:
        ax.scatter(dev_xy[aggregators, 0], dev_xy[aggregators, 1], s=90, marker="*", c="gold", edgecolors="k",
                   linewidths=0.5, zorder=4, label="D2D aggregator")
    ax.scatter(edge_xy[:, 0], edge_xy[:, 1], s=60, marker="s", c="k", zorder=5, label="edge server")
    ax.set_aspect("equal")
    ax.autoscale_view()
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.set_title(f"{plan.scheduler or 'plan'} on {scenario.name}: {metrics.latency_s:.3g} s, "
                 f"{metrics.energy_j:.3g} J per edge round (line width: bits per round)", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    with atomic_path(Path(path), ".png") as tmp:
        fig.savefig(tmp, dpi=130)
    plt.close(fig)
    return {"devices": scenario.n_devices, "edges": scenario.n_edges, "aggregators": int(aggregators.size),
            "relay_links": int(len(links["relay"])), "uplinks": int(len(links["uplink"]))}
