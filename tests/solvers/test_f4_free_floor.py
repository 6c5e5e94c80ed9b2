"""The least latency of full F4 with placement or tiers free: the fastest placement keeps the rules and is never
slower than the start's; the floor it claims is never above what any placement and tier choice reaches."""

import dataclasses

import numpy as np
import pytest
from conftest import small_clustered
from hypothesis import given, settings
from hypothesis import strategies as st

from hffm_opt import evaluate, schedule
from hffm_opt.formulations.joint import covers, edge_allowed
from hffm_opt.plan import AGG, CLOUD, EDGE
from hffm_opt.schedulers.optimising import joint_model
from hffm_opt.solvers.f4.free_floor import fastest_placement, free_latency_floor
from hffm_opt.solvers.f4.objectives import least_latency
from hffm_opt.solvers.f4.subset_bound import able_modules

SEEDS = st.integers(0, 10_000)


@settings(max_examples=8, deadline=None)
@given(seed=SEEDS, e_agg=st.sampled_from([1, 2, 8]), per=st.integers(2, 4),
       coverage=st.sampled_from(["full", "cluster"]), edge_tiers=st.booleans())
def test_the_fastest_placement_keeps_the_rules_and_is_never_slower(seed, e_agg, per, coverage, edge_tiers):
    sc = small_clustered(seed, n_e=2, per=per)
    model = joint_model(sc, e_agg=e_agg, seed=seed, coverage=coverage, edge_tiers=edge_tiers)
    fast = fastest_placement(model)
    assert covers(sc, np.arange(sc.n_devices), fast.association, fast.train, model.min_trainers)
    assert not (fast.train & ~model.start.train).any()  # nobody trains more than before
    kept = edge_allowed(sc, edge_tiers)
    assert (fast.tier[:, ~kept] == model.start.tier[:, ~kept]).all()
    assert (fast.tier[:, kept] != CLOUD).all()
    assert least_latency(sc, fast, 200).upper <= least_latency(sc, model.start, 200).upper * (1 + 1e-12)
    evaluate(sc, fast)  # a plan the evaluator prices


@settings(max_examples=8, deadline=None)
@given(seed=SEEDS, e_agg=st.sampled_from([1, 2, 8]), per=st.integers(2, 3), edge_tiers=st.booleans(),
       d2d=st.booleans())
def test_the_free_floor_is_never_above_a_placement_that_keeps_the_rules(seed, e_agg, per, edge_tiers, d2d):
    sc = small_clustered(seed, n_e=2, per=per)
    model = joint_model(sc, e_agg=e_agg, seed=seed, coverage="cluster", edge_tiers=edge_tiers)
    fast_model, floor = free_latency_floor(model, 200)
    assert 0 < floor.lower <= floor.upper * (1 + 1e-9)
    assert floor.upper <= least_latency(sc, model.start, 200).upper * (1 + 1e-12)
    assert fast_model.start.train.shape == model.start.train.shape
    rng = np.random.default_rng(seed)
    able, kept = able_modules(sc), edge_allowed(sc, edge_tiers)
    start = schedule(sc, "hierarchical-d2d" if d2d else "hierarchical", e_agg=e_agg, seed=seed)
    for _ in range(4):  # random module sets and tiers within the rules: their least latency is never below the floor
        train = able & (rng.random(able.shape) < 0.5)
        train[np.arange(sc.n_devices), np.argmax(able, axis=1)] |= able.any(axis=1)
        tier = np.where(kept[None, :] & (rng.random(start.tier.shape) < 0.5), EDGE, start.tier)
        tier = np.where(kept[None, :] & (start.aggregator[:, None] >= 0) & (rng.random(tier.shape) < 0.3), AGG, tier)
        plan = start.replace(train=train, tier=tier.astype(start.tier.dtype))
        if covers(sc, np.arange(sc.n_devices), plan.association, train, 1):
            assert floor.lower <= least_latency(sc, plan, 200).upper * (1 + 1e-9)
            assert floor.lower <= evaluate(sc, plan).latency_s * (1 + 1e-9)


def test_the_free_floor_is_the_fixed_one_when_nothing_is_free_but_the_association():
    sc = small_clustered(3, n_e=2, per=3)
    model = joint_model(sc, e_agg=2, association="optimise")
    same, floor = free_latency_floor(model, 200)
    assert floor.lower == 0.0  # no floor over associations
    assert floor.upper == least_latency(sc, model.start, 200).upper
    assert dataclasses.replace(same, start=model.start) == model


def test_on_a_compute_bound_instance_the_spread_placement_is_fast_and_the_floor_tight():
    """Tiny updates and edge tiers: a round is the members' compute. Spreading the modules over the three members
    of each cluster cuts the least latency about threefold, and the floor (the members' full speed, the work shared
    perfectly) is within 1 % of it."""
    sc = small_clustered(0, n_e=2, per=3)
    sc = sc.replace(modules=tuple(dataclasses.replace(m, update_bits=1e3) for m in sc.modules))
    model = joint_model(sc, e_agg=2, coverage="cluster", edge_tiers=True)
    _, floor = free_latency_floor(model, 200)
    assert floor.upper < 0.4 * least_latency(sc, model.start, 200).upper
    assert 0.99 * floor.upper <= floor.lower <= floor.upper * (1 + 1e-9)
    dev, start = sc.devices, model.start  # the floor: each cluster's needed work over its members' total speed
    cycles_per_flop = start.local_steps * np.minimum(start.batch_size, dev.samples.sum(axis=1)) / dev.flops_per_cycle
    flops = sc.module_arrays["flops_per_sample"]
    rounds = [(start.train[start.association == e].any(axis=0) @ flops)
              / (dev.cpu_hz / cycles_per_flop)[start.association == e].sum() for e in range(sc.n_edges)]
    assert floor.lower == pytest.approx(max(rounds), rel=1e-9)
