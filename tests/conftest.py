"""Shared builders and fixtures of the whole suite: hand-made scenarios whose numbers can be checked by hand
(:func:`tiny_scenario`), small generated clustered scenarios (:func:`small_clustered`), the paper scenario, and one
torch thread. Test modules import the builders with ``from conftest import ...``."""

import dataclasses
import os

import numpy as np
import pytest
from hypothesis import settings

from hffm_opt.network import generators
from hffm_opt.network.generators import paper_scenario, synthetic_catalogue
from hffm_opt.network.scenario import D2DLinks, Devices, EdgeServers, PrototypeConstants, Scenario

# Property tests draw the same examples on every run (a red CI is then a real, reproducible failure);
# HFFM_HYPOTHESIS=explore draws fresh ones, to hunt for new counter-examples by hand.
settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HFFM_HYPOTHESIS", "repeatable"))

N0 = 1e-20  # W/Hz, a round number for hand computation


def tiny_scenario(n_per_edge=(3,), gains=None, d2d_gain=1e-9, positions=None, proto=None, **device_overrides):
    """Edges with ``n_per_edge`` devices each; all ordered D2D pairs inside a cluster with gain ``d2d_gain``."""
    n_e, n = len(n_per_edge), sum(n_per_edge)
    edge = np.repeat(np.arange(n_e), n_per_edge)
    pos = np.array(positions, float) if positions is not None else np.stack([np.arange(n) * 10.0, np.zeros(n)], 1)
    g = np.full((n, n_e), np.nan)
    g[np.arange(n), edge] = gains if gains is not None else 1e-10
    fields = dict(ids=np.arange(n), position_m=pos, edge=edge, cpu_hz=np.full(n, 1e9), flops_per_cycle=np.full(n, 4.0),
                  kappa=np.full(n, 1e-28), memory_bytes=np.full(n, 8e9), pmax_w=np.full(n, 1.0), uplink_gain=g,
                  modalities=np.ones((n, 2), bool), samples=np.full((n, 2), 100))
    fields.update(device_overrides)
    src, dst = [], []
    for e in range(n_e):
        m = np.flatnonzero(edge == e)
        src += [a for a in m for b in m if a != b]
        dst += [b for a in m for b in m if a != b]
    proto = proto or PrototypeConstants()
    edges = EdgeServers(ids=np.arange(n_e), position_m=np.zeros((n_e, 2)), bandwidth_hz=np.array(n_per_edge) * 1e6,
                        downlink_power_w=np.zeros(n_e), backhaul_delay_s=np.full(n_e, 0.1),
                        backhaul_rate_bps=np.full(n_e, 4e6), backhaul_power_w=np.full(n_e, 0.8))
    return Scenario(name="tiny", modalities=("image", "text"), tasks=("vqa", "shape"),
                    modules=synthetic_catalogue(("image", "text"), ("vqa", "shape"), proto.model_bits),
                    edges=edges, devices=Devices(**fields),
                    d2d=D2DLinks(src=src, dst=dst, gain=np.full(len(src), d2d_gain), bandwidth_hz=8e6),
                    noise_psd_w_per_hz=N0, prototype=proto)


def small_clustered(seed, n_e=2, per=3):
    """``n_e`` clusters of ``per`` devices, 800 m apart, 250 m radius (small enough for exact enumeration)."""
    return generators.clustered(n_e, per, seed=seed, spacing_m=800.0, cluster_radius_m=250.0)


@pytest.fixture(scope="session")
def paper():
    return paper_scenario()


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread: tiny models on a shared 2-core machine run several times faster so."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TWO_BY_TWO_TRAINED = ("head:vqa", "expert:0")


def two_by_two(d2d: bool, seed: int = 0):
    """2 edges x 2 devices, each device in reach of both edges (weaker to the far one), two trainable modules; D2D
    links inside the home clusters (too weak to be of use unless ``d2d``)."""
    rng = np.random.default_rng(seed)
    sc = tiny_scenario((2, 2), gains=1e-10, d2d_gain=1e-9 if d2d else 1e-16)
    gain = np.where(np.isfinite(sc.devices.uplink_gain), sc.devices.uplink_gain, 10 ** rng.uniform(-11, -10, (4, 2)))
    gain = gain * rng.uniform(0.5, 2.0, gain.shape)
    mods = tuple(dataclasses.replace(m, trainable=m.name in TWO_BY_TWO_TRAINED) for m in sc.modules)
    return sc.replace(modules=mods, devices=dataclasses.replace(sc.devices, uplink_gain=gain))
