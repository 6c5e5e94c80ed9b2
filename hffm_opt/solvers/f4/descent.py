"""Re-parenting descent on the relay tree of a D2D cluster too large for local search by pricing every move.

From a tree and its optimal continuous decisions (a point), every move "device v takes device q as its parent" (q
the root or one of v's :data:`NEAREST` strongest usable links) is valued at a point of the moved tree that keeps
every other device's times: v's own hop up is re-timed to end when q starts sending (a leaf also re-splits its round
between compute and the hop), and its receive from q starts when q has received (the down phase), so v's subtree
keeps its schedule and no phase grows. Moves are applied in batches, best value first (a moved device keeps its
children; a device that receives a child is not moved in the same batch; no cycle), then the convex inner problem
re-optimises every time; the new tree is kept only when that priced energy is lower. It stops when no move has a
negative value, when a priced batch does not improve, or after ``max_solves`` inner problems. The root is kept.

Used where each move's value is exact at that point: aggregation in the tree (a relay sends one update) with
every device training the same modules, and no module kept at the aggregator tier (its last-round broadcast
would add a phase). Energies in J per period, times in s.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ...formulations.cluster import ClusterData, cluster_data
from ...network.channel import link_energy, transmit_time
from ...network.scenario import Scenario
from ...network.topology import link_matrix, usable_links
from ...plan import AGG, Plan
from .bounds import best_split
from .cluster import ClusterAllocation, solve_cluster, tree_times
from .structures import in_tree, reaches_root, set_structure

MAX_SOLVES = 2  # inner problems priced per descent at most
MAX_BATCHES = 2  # batches of moves between two inner problems at most
MOVE_RTOL = 1e-9  # relative to the cluster's energy: a move must gain more than this
SHIFTS = np.array([0.0, 0.3, 0.6, 0.85])  # fractions of its slack by which a new parent may shorten its own links
NEAREST = 12  # a device's candidate parents: the root and its NEAREST neighbours by link gain (both ways)


def descent_applies(scenario: Scenario, plan: Plan, e: int) -> bool:
    """Whether the moves' values are exact for cluster ``e`` of ``plan`` (module docstring)."""
    members = np.flatnonzero(plan.association == e)
    if plan.aggregator[e] < 0 or plan.relay_mode != "aggregate" or len(members) < 3:
        return False
    train = plan.train[members]
    return bool((train == train[0]).all() and not (plan.tier[e][train[0]] == AGG).any())


class TreePoint:
    """A tree's times (local indices): compute ``tau``, hop up ``hop`` and receive ``down`` per device (s), as
    :func:`~.cluster.tree_times` reads them from an allocation; the descent edits them move by move."""

    def __init__(self, data: ClusterData, alloc: ClusterAllocation):
        self.tau, self.hop, self.down = tree_times(data, alloc)


@dataclass
class Moves:
    """Every move v -> parent q valued (J per period; inf where not allowed) at a point that keeps the other devices'
    times: ``value`` as that point stands, with v's new times ``tau``, ``hop``, ``down`` (n, n); ``best`` where
    q also shortens its own hop up by ``q_hop`` and its receive by ``q_down`` (s, (n, n)), with v's times
    ``best_tau``, ``best_hop``, ``best_down``."""

    value: np.ndarray
    tau: np.ndarray
    hop: np.ndarray
    down: np.ndarray
    best: np.ndarray
    q_hop: np.ndarray
    q_down: np.ndarray
    best_tau: np.ndarray
    best_hop: np.ndarray
    best_down: np.ndarray


def _up_options(data: ClusterData, point: TreePoint, gain: np.ndarray, candidates: np.ndarray, start: np.ndarray,
                parent_start: np.ndarray, compute: np.ndarray) -> tuple:
    """(k, n, n) energy (J per period) of v's compute and hop up when its hop must end at ``parent_start[k, q]``
    (s), and v's compute and hop times: a relay keeps its own ``start[v]``, a leaf re-splits its round."""
    n, g, k = len(data.members), data.e_agg, len(parent_start)
    leaf = ~np.isin(np.arange(n), data.parent)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        tau = np.broadcast_to(point.tau[None, :, None], (k, n, n)).copy()
        hop = parent_start[:, None, :] - np.where(leaf, 0.0, start)[None, :, None]
        energy = g * (compute[None, :, None] + link_energy(data.up_bits[None, :, None], hop, data.d2d_band_hz,
                                                           gain[None], data.noise))
        full = transmit_time(data.up_bits[:, None], data.d2d_band_hz, data.pmax[:, None], gain, data.noise)
        energy = np.where(hop >= full[None], energy, np.inf)
        shift, rows, cols = np.nonzero(np.broadcast_to(leaf[:, None] & candidates, (k, n, n)))
        split, tau[shift, rows, cols], hop[shift, rows, cols] = best_split(
            data.up_bits[rows], data.d2d_band_hz, gain[rows, cols], data.pmax[rows], data.noise, data.cycles[rows],
            data.kappa[rows], data.fmax[rows], parent_start[shift, cols])
        energy[shift, rows, cols] = g * split
    return energy, tau, hop


def _down_options(data: ClusterData, gain: np.ndarray, end: np.ndarray, arrive: np.ndarray) -> tuple:
    """(k, n, n) energy (J per period) of v's receive from q when it starts at ``arrive[k, q]`` and ends at
    ``end[v]`` (s), and its time."""
    g = data.e_agg
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        down = end[None, :, None] - arrive[:, None, :]
        fastest = transmit_time(data.down_bits[:, None], data.d2d_band_hz, data.pmax[None, :], gain.T, data.noise)
        energy = (g - 1) * link_energy(data.down_bits[None, :, None], down, data.d2d_band_hz, gain.T[None],
                                       data.noise)
    return np.where(down >= fastest[None], energy, np.inf), down


def move_values(data: ClusterData, point: TreePoint, gain: np.ndarray, candidates: np.ndarray) -> Moves:
    """Every move to a candidate parent (``candidates`` (n, n) bool) valued at ``point`` (:class:`Moves`); the
    new parent q may shorten its own links by :data:`SHIFTS` of their slack (above the full-power time)."""
    n, g, k = len(data.members), data.e_agg, len(SHIFTS)
    path = data.path_matrix()
    child = data.parent >= 0
    idx, up = np.arange(n), np.maximum(data.parent, 0)
    up_path, down_path = path @ point.hop, path @ point.down  # time to the root, from the root
    start = float((point.tau + up_path).max()) - up_path  # when each device starts sending (root: the phase's end)
    leaf = ~np.isin(idx, data.parent)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        compute = np.where(data.cycles > 0, data.kappa * data.cycles ** 3 / point.tau ** 2, 0.0)
        hop_j = np.where(child, link_energy(data.up_bits, point.hop, data.d2d_band_hz, data.up_gain, data.noise), 0.0)
        down_j = np.where(child, link_energy(data.down_bits, point.down, data.d2d_band_hz, data.down_gain,
                                             data.noise), 0.0)
        hop_slack = np.where(child, point.hop - transmit_time(data.up_bits, data.d2d_band_hz, data.pmax, data.up_gain,
                                                              data.noise), 0.0)
        down_slack = np.where(child, point.down - transmit_time(data.down_bits, data.d2d_band_hz, data.pmax[up],
                                                                data.down_gain, data.noise), 0.0)
        q_hop = SHIFTS[:, None] * np.maximum(hop_slack, 0.0)  # (k, n): how much the new parent shortens its links
        q_down = SHIFTS[:, None] * np.maximum(down_slack, 0.0)
        extra_up = g * (np.where(child, link_energy(data.up_bits, point.hop - q_hop, data.d2d_band_hz, data.up_gain,
                                                    data.noise), 0.0) - hop_j)
        extra_down = (g - 1) * (np.where(child, link_energy(data.down_bits, point.down - q_down, data.d2d_band_hz,
                                                            data.down_gain, data.noise), 0.0) - down_j)
    now = g * (compute + hop_j) + (g - 1) * down_j
    up_j, tau, hop = _up_options(data, point, gain, candidates, start, start + q_hop, compute)
    up_j = up_j + extra_up[:, None, :]
    if g > 1:
        down_j, down = _down_options(data, gain, np.where(leaf, down_path.max(), down_path), down_path - q_down)
        down_j = down_j + extra_down[:, None, :]
    else:
        down_j, down = np.zeros((k, n, n)), np.zeros((k, n, n))
    best_up, best_down = up_j.argmin(axis=0)[None], down_j.argmin(axis=0)[None]

    def take(a: np.ndarray, which: np.ndarray) -> np.ndarray:
        return np.take_along_axis(np.broadcast_to(a, (k, n, n)), which, 0)[0]

    below = path.T.astype(bool)  # [v, q]: q in v's subtree (v's link on q's path)
    allowed = candidates & child[:, None] & ~below & (idx[None, :] != data.parent[:, None])
    now = now[:, None]
    first, best = up_j[0] + down_j[0] - now, take(up_j, best_up) + take(down_j, best_down) - now
    clean = lambda x: np.where(allowed & np.isfinite(x), x, np.inf)  # noqa: E731
    return Moves(clean(first), tau[0], hop[0], down[0], clean(best), take(q_hop[:, None, :], best_up),
                 take(q_down[:, None, :], best_down), take(tau, best_up), take(hop, best_up), take(down, best_down))


def _apply_batch(data: ClusterData, point: TreePoint, moves: Moves, tol: float) -> tuple[np.ndarray, int]:
    """Apply the best moves of one batch to ``point`` (in place): the new parent array and the moves made. The
    first move into a parent may shorten that parent's links (its ``best`` value); later ones into the same parent
    take the value as the point stood (the parent then starts sending later and has received earlier: only more
    time for them)."""
    parent = data.parent.copy()
    moved, targets, made = set(), set(), 0
    for flat in np.argsort(moves.best, axis=None, kind="stable"):
        v, q = divmod(int(flat), len(parent))
        if not moves.best[v, q] < -tol:
            break
        if v in moved or v in targets or q in moved:
            continue
        first = q not in targets
        if not first and not moves.value[v, q] < -tol:
            continue
        old = parent[v]
        parent[v] = q
        if not reaches_root(parent, data.root):
            parent[v] = old
            continue
        if first:
            point.tau[v], point.hop[v] = moves.best_tau[v, q], moves.best_hop[v, q]
            point.down[v] = moves.best_down[v, q]
            point.hop[q] -= moves.q_hop[v, q]
            point.down[q] -= moves.q_down[v, q]
        else:
            point.tau[v], point.hop[v], point.down[v] = moves.tau[v, q], moves.hop[v, q], moves.down[v, q]
        moved.add(v)
        targets.add(q)
        made += 1
    return parent, made


def with_tree(data: ClusterData, parent: np.ndarray, gain: np.ndarray) -> ClusterData:
    """``data`` with the relay tree ``parent`` (local): each link's gains and the broadcasting parent's power cap."""
    child, up, idx = parent >= 0, np.maximum(parent, 0), np.arange(len(parent))
    return replace(data, parent=parent, up_gain=np.where(child, gain[idx, up], 1.0),
                   down_gain=np.where(child, gain[up, idx], 1.0), down_pmax=np.where(child, data.pmax[up], 1.0))


def descend(scenario: Scenario, plan: Plan, e: int, alloc: ClusterAllocation, budget_s: float,
            max_solves: int = MAX_SOLVES, round_cap_s: float = np.inf) -> tuple[ClusterAllocation, Plan, int]:
    """Improve cluster ``e``'s relay tree in ``plan`` (priced as ``alloc`` within the period budget ``budget_s``,
    each edge round but the last within ``round_cap_s``) by the module docstring's descent: (allocation, plan,
    inner problems priced). Never worse than the input."""
    members = np.flatnonzero(plan.association == e)
    gain = link_matrix(scenario, members, scenario.d2d.gain, fill=np.inf)
    usable = usable_links(scenario, members)
    gain = np.where(usable, gain, np.nan)
    both = np.where(usable, np.fmin(gain, gain.T), -np.inf)
    nearest = np.zeros_like(usable)
    np.put_along_axis(nearest, np.argsort(-both, axis=1, kind="stable")[:, :NEAREST], True, axis=1)
    root = int(np.flatnonzero(members == plan.aggregator[e])[0])
    candidates = usable & (nearest | (np.arange(len(members)) == root)[None, :])
    solves = 0
    while solves < max_solves:
        data = cluster_data(scenario, plan, e)
        point, trial, made = TreePoint(data, alloc), data, 0
        for _ in range(MAX_BATCHES):
            parent, count = _apply_batch(trial, point, move_values(trial, point, gain, candidates),
                                         MOVE_RTOL * alloc.energy_j)
            if count == 0:
                break
            made += count
            trial = with_tree(trial, parent, gain)
        if made == 0:
            break
        candidate = set_structure(plan, scenario, e, members, (int(members[data.root]), in_tree(trial.parent, members)))
        priced = solve_cluster(cluster_data(scenario, candidate, e, round_cap_s), budget_s)
        solves += 1
        if not (priced.feasible and priced.energy_j < alloc.energy_j * (1 - MOVE_RTOL)):
            break
        alloc, plan = priced, candidate
    return alloc, plan, solves
