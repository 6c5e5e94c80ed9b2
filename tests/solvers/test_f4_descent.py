"""The re-parenting descent on large relay trees: each move's value is exactly the energy change of the point it
describes (recomputed here from the times, independently of the descent's own arithmetic) and no phase grows;
the descent never returns a costlier tree and its result is what ``evaluate`` prices; it runs only where those
values are exact."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hffm_opt import evaluate, schedule
from hffm_opt.formulations.cluster import cluster_data
from hffm_opt.network import generators
from hffm_opt.network.channel import link_energy, transmit_time
from hffm_opt.network.topology import link_matrix, usable_links
from hffm_opt.plan import AGG
from hffm_opt.solvers.f4.cluster import apply_allocation, solve_cluster
from hffm_opt.solvers.f4.descent import TreePoint, descend, descent_applies, move_values, with_tree
from hffm_opt.solvers.f4.structures import reaches_root, set_structure


def _tree_instance(seed: int, n: int, e_agg: int, slack: float = 1.3, relays: int = 0):
    """One cluster of ``n`` devices as a tree into its first device: a star, or with ``relays`` devices under the
    root and every other device under one of them; solved within ``slack`` x the evaluator's period."""
    sc = generators.clustered(1, n, seed=seed)
    plan = schedule(sc, "hierarchical-d2d", e_agg=e_agg, seed=seed)
    members = np.arange(n)
    tree = np.zeros(n, int) if relays == 0 else 1 + members % relays
    tree[:relays + 1] = 0
    tree[0] = -1
    plan = set_structure(plan, sc, 0, members, (0, tree))
    budget = slack * e_agg * evaluate(sc, plan).latency_s
    alloc = solve_cluster(cluster_data(sc, plan, 0), budget)
    assert alloc.feasible
    return sc, plan, budget, alloc


def _phases_and_energy(data, tau, hop, down):
    """(up phase, down phase, energy J per period without the fixed part and the aggregator's upload, (n,) time
    from each device's start of sending to the root's receipt), from times."""
    child = data.parent >= 0
    n = len(data.members)
    # the path of every node to the root, walked by hand
    onpath = np.zeros((n, n))
    for w in range(n):
        v = w
        while data.parent[v] >= 0:
            onpath[w, v] = 1.0
            v = data.parent[v]
    g = data.e_agg
    energy = g * float((data.kappa * data.cycles ** 3 / tau ** 2).sum())
    energy += g * float(link_energy(data.up_bits[child], hop[child], data.d2d_band_hz, data.up_gain[child],
                                    data.noise).sum())
    if g > 1:
        energy += (g - 1) * float(link_energy(data.down_bits[child], down[child], data.d2d_band_hz,
                                              data.down_gain[child], data.noise).sum())
    up = float((tau + onpath @ hop).max())
    return up, float((onpath @ down).max()) if g > 1 else 0.0, energy, onpath @ hop


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), e_agg=st.sampled_from([1, 2, 8]), shifted=st.booleans())
def test_a_moves_value_is_the_energy_change_of_its_point(seed, e_agg, shifted):
    sc, plan, budget, alloc = _tree_instance(seed, 16, e_agg, relays=4)
    data = cluster_data(sc, plan, 0)
    members = np.arange(16)
    usable = usable_links(sc, members)
    gain = np.where(usable, link_matrix(sc, members, sc.d2d.gain), np.nan)
    point = TreePoint(data, alloc)
    up0, down0, energy0, to_root0 = _phases_and_energy(data, point.tau, point.hop, point.down)
    moves = move_values(data, point, gain, usable)
    assert np.isfinite(moves.best).any(), "no move was valued"
    values = moves.best if shifted else moves.value  # as the point stands, a star's receives fill the down phase
    finite = np.argwhere(np.isfinite(values))
    finite = finite[np.argsort(values[tuple(finite.T)], kind="stable")]
    relay = np.isin(finite[:, 0], data.parent)
    for v, q in np.concatenate([finite[relay][:4], finite[~relay][:4]]):  # relays keep their start, leaves re-split
        parent = data.parent.copy()
        parent[v] = q
        assert reaches_root(parent, data.root)
        moved = with_tree(data, parent, gain)
        tau, hop, down = point.tau.copy(), point.hop.copy(), point.down.copy()
        if shifted:
            tau[v], hop[v], down[v] = moves.best_tau[v, q], moves.best_hop[v, q], moves.best_down[v, q]
            hop[q] -= moves.q_hop[v, q]
            down[q] -= moves.q_down[v, q]
        else:
            tau[v], hop[v], down[v] = moves.tau[v, q], moves.hop[v, q], moves.down[v, q]
        up1, down1, energy1, to_root1 = _phases_and_energy(moved, tau, hop, down)
        assert up1 <= up0 * (1 + 1e-12) and down1 <= down0 * (1 + 1e-12)
        if v in data.parent:  # a relay's hop takes all the time from its own start to its new parent's
            assert to_root1[v] == pytest.approx(to_root0[v], rel=1e-12)
        assert energy1 == pytest.approx(energy0 + values[v, q], rel=1e-9, abs=1e-15)
        child = moved.parent >= 0  # every link still within its power cap
        assert (hop[child] >= transmit_time(moved.up_bits[child], moved.d2d_band_hz, moved.pmax[child],
                                            moved.up_gain[child], moved.noise) * (1 - 1e-12)).all()
        assert (tau >= data.cycles / data.fmax * (1 - 1e-12)).all()


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 10_000), e_agg=st.sampled_from([2, 8]))
def test_descent_is_never_worse_and_evaluate_prices_its_result(seed, e_agg):
    sc, plan, budget, alloc = _tree_instance(seed, 30, e_agg)
    better, tree, solves = descend(sc, plan, 0, alloc, budget)
    assert better.feasible and better.energy_j <= alloc.energy_j
    assert (solves > 0) == (better.energy_j < alloc.energy_j)
    priced = evaluate(sc, apply_allocation(tree, {0: (np.arange(30), better)}))
    assert priced.cluster_energy_j[0] == pytest.approx(better.energy_j, rel=1e-6)
    assert priced.cluster_period_s[0] <= budget * (1 + 1e-9)


def test_descent_improves_a_star_with_weak_links_to_its_root():
    """Devices far from the root relay through neighbours: on a 60-device cluster the descent finds a cheaper tree
    than the star it starts from (the star is what the shortest-path candidates give when every pair is in range)."""
    sc, plan, budget, alloc = _tree_instance(3, 60, 8)
    better, tree, _ = descend(sc, plan, 0, alloc, budget)
    assert better.energy_j < alloc.energy_j - 0.01 * (alloc.energy_j - cluster_data(sc, plan, 0).fixed_j)
    assert (tree.parent[1:] != 0).any()  # some device no longer sends straight to the root


def test_optimal_with_the_descent_is_no_worse_than_without(monkeypatch):
    sc = generators.clustered(2, 20, seed=5)
    with_descent = schedule(sc, "optimal", e_agg=8, seed=5)
    import hffm_opt.solvers.f4.decomposition as decomposition

    monkeypatch.setattr(decomposition, "descent_applies", lambda *args: False)
    without = schedule(sc, "optimal", e_agg=8, seed=5)
    assert evaluate(sc, with_descent).energy_j <= evaluate(sc, without).energy_j * (1 + 1e-9)
    assert evaluate(sc, with_descent).latency_s <= with_descent.meta["target_latency_s"] * (1 + 1e-9)
    assert with_descent.meta["bound"] <= evaluate(sc, with_descent).energy_j


def test_the_descent_runs_only_where_its_values_are_exact():
    sc, plan, _, _ = _tree_instance(1, 12, 8)
    assert descent_applies(sc, plan, 0)
    assert not descent_applies(sc, plan.replace(relay_mode="store-and-forward"), 0)
    partial = plan.train.copy()
    partial[3, np.flatnonzero(partial[3])[0]] = False
    assert not descent_applies(sc, plan.replace(train=partial), 0)
    tier = plan.tier.copy()
    tier[0, np.flatnonzero(plan.train[0])[0]] = AGG
    assert not descent_applies(sc, plan.replace(tier=tier), 0)
    direct = plan.replace(aggregator=np.full(1, -1), parent=np.full(12, -1))
    assert not descent_applies(sc, direct, 0)
