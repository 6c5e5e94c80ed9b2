"""Relay depth in the tree bound: a member's update climbs its parent's whole path to the root, and its modules
come down the whole path to its parent, so a member far from the root has less than the phase for its own hop.

Every D2D hop takes at least its link's least time: the sender at full power on the link band B_d, carrying at
least the sender's own update on the way up (an aggregate holds it) and the receiver's own modules on the way down.
So in any relay tree rooted at r, the path from a member's parent p takes at least ``dist_up[p, r]`` and the path
to p at least ``dist_down[r, p]``, the shortest paths in those least times (both 0 at the root). A member
computes and sends its update within ``U - dist_up[p, r]`` on the link to p and receives its modules within
``D - dist_down[r, p]`` on the link from p. Per root the least over p is taken among the member's
:data:`CANDIDATES` strongest links (the root among them when it is one); any other parent, the root included,
has no stronger gain than the next strongest link and its path takes no less than 0, so the member's cost within
the whole phase on that gain bounds it. For :func:`~.bounds.tree_lower_bound` when every member trains its own
module set. Units: s, J.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse.csgraph import csgraph_from_dense, dijkstra

from ...formulations.cluster import ClusterData
from ...network.channel import link_energy, shannon_rate
from ...network.scenario import Scenario
from ...network.topology import link_matrix, usable_links

CANDIDATES = 6  # parents per member priced with their path (the strongest links); the rest by the next gain
TABLE_POINTS = 48  # evenly spaced times of the up-phase cost table, from the window's start to the longest phase
WINDOW_S = 2.0  # s: the table starts this far below the focus, less the longest path (below it: its first cost)


def _strongest(gain: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of ``gain`` (NaN: no link): the column indices of its :data:`CANDIDATES` largest gains (n, K), those
    gains (NaN where a row has fewer links) and the next largest gain (n,) (NaN where none)."""
    n = gain.shape[0]
    k = min(CANDIDATES, n)
    order = np.argsort(-np.where(np.isnan(gain), -np.inf, gain), axis=1, kind="stable")
    rows = np.arange(n)[:, None]
    cand, cand_gain = order[:, :k], gain[rows, order[:, :k]]
    following = gain[np.arange(n), order[:, k]] if n > k else np.full(n, np.nan)
    return cand, cand_gain, following


class DepthBound:
    """One cluster's depth-aware per-root costs (module docstring); ``d`` is the cluster without D2D (its own
    update bits, compute and constants); the table of each member's least compute-and-send energy per gain and
    time (``split_energy``, :func:`~.bounds.split_energy`) spans ``max_up_s`` (s, the longest up phase) from
    :data:`WINDOW_S` below ``focus_s`` (s, the up phase the plain relaxation prefers) less the longest path."""

    def __init__(self, scenario: Scenario, d: ClusterData, focus_s: float, max_up_s: float, split_energy):
        self.d = d
        ok = usable_links(scenario, d.members)
        gain = np.where(ok, link_matrix(scenario, d.members, scenario.d2d.gain), np.nan)
        rate = shannon_rate(d.d2d_band_hz, d.pmax[:, None], np.where(ok, gain, 1.0), d.noise)
        with np.errstate(divide="ignore", invalid="ignore"):
            up_s = np.where(ok, d.up_bits[:, None] / rate, np.inf)  # [a, b]: a's own update on a -> b
            down_s = np.where(ok, d.up_bits[None, :] / rate, np.inf)  # [a, b]: b's own modules on a -> b
        self.dist_up = dijkstra(csgraph_from_dense(up_s, null_value=np.inf), directed=True)  # [p, r]
        self.dist_down = dijkstra(csgraph_from_dense(down_s, null_value=np.inf), directed=True)  # [r, p]
        self.up_cand, up_gain, up_next = _strongest(gain)
        self.down_cand, self.down_gain, self.down_next = _strongest(gain.T)
        gains = np.concatenate([up_gain, up_next[:, None]], axis=1)  # (n, K + 1): the candidates, then the next
        longest = float(np.max(self.dist_up, where=np.isfinite(self.dist_up), initial=0.0))
        self.table_s = np.linspace(max(focus_s - WINDOW_S - longest, 0.0), max_up_s, TABLE_POINTS + 1)[1:]
        n, m, t = len(d.members), gains.shape[1], len(self.table_s)
        each = np.repeat(np.arange(n), m * t)
        energy = split_energy(d.up_bits[each], d.d2d_band_hz, gains.reshape(-1).repeat(t), d.pmax[each], d.noise,
                              d.cycles[each], d.kappa[each], d.fmax[each], np.tile(self.table_s, n * m))
        self.table = energy.reshape(n, m, t)  # [u, j, w]: u computes and sends on gain j within table_s[w]

    def _at(self, within_s: np.ndarray, member, j) -> np.ndarray:
        """The table's cost of ``member`` on gain ``j`` at the first tabled time not below ``within_s`` (no more
        than the cost within ``within_s``: costs fall with time; 0 beyond the table); inf where the time is not
        positive."""
        first, step, t = self.table_s[0], self.table_s[1] - self.table_s[0], len(self.table_s)
        with np.errstate(invalid="ignore"):
            w = np.ceil(np.maximum(within_s - first, 0.0) / step)  # the first point not below (rounding: above)
        inside = w < t
        flat = (member * self.table.shape[1] + j) * t + np.where(inside, w, 0).astype(np.intp)
        cost = self.table.ravel()[flat]
        return np.where(within_s > 0, np.where(inside, cost, 0.0), np.inf)

    def up_costs(self, up_s: np.ndarray) -> np.ndarray:
        """(k, r, n) each non-root member's compute and own hop per edge round, for each up phase ``up_s`` (k,) and
        root r (0 for the root itself)."""
        n, k = len(self.d.members), self.up_cand.shape[1]
        members = np.arange(n)[None, None, :, None]
        within = up_s[:, None, None, None] - self.dist_up[self.up_cand].transpose(2, 0, 1)[None]  # (k, r, u, K)
        via = self._at(within, members, np.arange(k)[None, None, None, :]).min(axis=-1, initial=np.inf)
        other = self._at(np.broadcast_to(up_s[:, None, None], (len(up_s), 1, n)), np.arange(n)[None, None, :], k)
        cost = np.minimum(via, other)
        cost[:, np.arange(n), np.arange(n)] = 0.0
        return cost

    def down_costs(self, down_s: np.ndarray) -> np.ndarray:
        """(k, r, n) each non-root member receiving its own modules per regular edge round, for each down phase
        ``down_s`` (k,) and root r (0 for the root itself)."""
        d, n = self.d, len(self.d.members)
        within = down_s[:, None, None, None] - self.dist_down[:, self.down_cand][None]  # (k, r, v, K)
        with np.errstate(all="ignore"):
            via = link_energy(d.up_bits[None, None, :, None], within, d.d2d_band_hz, self.down_gain[None, None],
                              d.noise)
            other = link_energy(d.up_bits[None, :], down_s[:, None], d.d2d_band_hz, self.down_next[None, :],
                                d.noise)
        via = np.where((within > 0) & np.isfinite(via), via, np.inf).min(axis=-1, initial=np.inf)
        other = np.where((down_s[:, None] > 0) & np.isfinite(other), other, np.inf)[:, None, :]
        cost = np.minimum(via, other)
        cost[:, np.arange(n), np.arange(n)] = 0.0
        return cost
