"""Full F4 with module subsets free (coverage "cluster"): the covering relaxation and the compute floor against
brute force, the bound never above the exact optimum or any plan that keeps the rule, and the balanced start."""

import dataclasses
import itertools

import numpy as np
import pytest
from conftest import small_clustered, two_by_two
from hypothesis import given, settings
from hypothesis import strategies as st

from hffm_opt import evaluate, schedule, solve
from hffm_opt.formulations.joint import covers
from hffm_opt.schedulers.optimising import joint_model
from hffm_opt.solvers.f4.balance import balanced_train
from hffm_opt.solvers.f4.bounds import Units, cover_cost
from hffm_opt.solvers.f4.subset_bound import able_modules, compute_floor, subset_bound

SEEDS = st.integers(0, 10_000)


def _assignments(able: np.ndarray):
    """Every (n, J) choice: each member a non-empty subset of its able units (nothing when it has none)."""
    per_member = []
    for row in able:
        units = np.flatnonzero(row)
        sets = [s for r in range(1, len(units) + 1) for s in itertools.combinations(units, r)] or [()]
        per_member.append(sets)
    for sets in itertools.product(*per_member):
        x = np.zeros(able.shape, bool)
        for u, s in enumerate(sets):
            x[u, list(s)] = True
        yield x


@settings(max_examples=60, deadline=None)
@given(seed=SEEDS, n=st.integers(1, 3), n_units=st.integers(1, 3), infinite=st.booleans())
def test_cover_cost_never_exceeds_the_best_assignment_and_root(seed, n, n_units, infinite):
    rng = np.random.default_rng(seed)
    able = rng.random((n, n_units)) < 0.7
    need = np.minimum(rng.integers(0, 3, n_units), able.sum(axis=0))
    nonroot = rng.uniform(0.0, 5.0, (n, n_units))
    if infinite:
        nonroot[rng.random((n, n_units)) < 0.3] = np.inf
    root, extra = nonroot * rng.uniform(0.0, 1.0, (n, n_units)), rng.uniform(0.0, 2.0, n)
    units = Units(np.ones((n, n_units)), np.ones((n, n_units)), able, need)
    best = np.inf
    for x in _assignments(able):
        if (x.sum(axis=0) < need).any():
            continue
        for r in range(n):
            with np.errstate(invalid="ignore"):
                per = np.where(x, nonroot, 0.0)
                per[r] = np.where(x[r], root[r], 0.0)
            best = min(best, per.sum() + extra[r])
    got = float(cover_cost(nonroot, root, extra, units))
    assert got <= best * (1 + 1e-12) + 1e-12
    if np.isfinite(best) and n_units == 1 and able.all() and need[0] == n:  # every member its one unit: exact
        assert got == pytest.approx(best, rel=1e-12)


def test_cover_cost_is_exact_with_one_module_each_or_one_trainer_per_module():
    # each member needs a different module and can train only it: the sum of those, the root's at its root price
    cost = np.array([[1.0, np.inf], [np.inf, 2.0]])
    able = np.isfinite(cost)
    units = Units(np.ones((2, 2)), np.ones((2, 2)), able, np.array([1, 1]))
    assert cover_cost(cost, 0.5 * cost, np.array([0.0, 0.0]), units) == pytest.approx(1.0 + 1.0)  # root: member 1
    # two members, two modules, each module once: the cheapest split (a: 1 + d: 1), not one member taking both
    cost = np.array([[1.0, 3.0], [4.0, 1.0]])
    units = Units(np.ones((2, 2)), np.ones((2, 2)), np.ones((2, 2), bool), np.array([1, 1]))
    assert cover_cost(cost, cost, np.zeros(2), units) == pytest.approx(2.0)


@settings(max_examples=40, deadline=None)
@given(seed=SEEDS, n=st.integers(1, 3), n_mod=st.integers(1, 4))
def test_compute_floor_never_exceeds_the_best_assignment(seed, n, n_mod):
    rng = np.random.default_rng(seed)
    kappa, per_work = rng.uniform(0.5, 2.0, n), rng.uniform(0.5, 2.0, n)
    work = rng.choice([0.0, 1.0, 2.0, 5.0], n_mod)
    able = rng.random((n, n_mod)) < 0.8
    need = np.minimum(rng.integers(1, 3, n_mod), able.sum(axis=0))
    best = min(((kappa * (per_work * (x @ work)) ** 3).sum() for x in _assignments(able)
                if (x.sum(axis=0) >= need).all()), default=np.inf)
    floor = compute_floor(kappa, per_work, work, able, need)
    assert 0.0 <= floor <= best * (1 + 1e-9)
    if n == 1 and able.all() and np.isfinite(best):  # one member trains everything: the floor is its cost
        assert floor == pytest.approx(best, rel=1e-6)


def _subset_model(sc, **options):
    return joint_model(sc, e_agg=2, target_from="hierarchical", coverage="cluster", **options)


@pytest.mark.parametrize("d2d, seed", [(False, 0), (False, 1), (True, 3), (True, 4)])
def test_subset_bound_never_exceeds_the_exact_optimum(d2d, seed):
    sc = two_by_two(d2d=d2d, seed=seed)
    model = _subset_model(sc)
    exact = solve(model, "exact")
    assert exact.status in ("optimal", "feasible"), exact.message  # every choice enumerated (feasible: a conic one)
    budget = 2 * model.target_latency_s
    bound, fixed = subset_bound(model, model.start, budget, None)
    assert 0 < fixed <= bound <= exact.objective * (1 + 1e-9)
    free, _ = subset_bound(model, model.start, budget, np.ones((sc.n_devices, sc.n_edges), bool))
    assert free <= exact.objective * (1 + 1e-9)


@settings(max_examples=6, deadline=None)
@given(seed=SEEDS, e_agg=st.sampled_from([1, 2, 8]), per=st.integers(2, 4), trainers=st.integers(1, 2))
def test_subset_bound_never_exceeds_a_plan_that_keeps_the_rule(seed, e_agg, per, trainers):
    sc = small_clustered(seed, n_e=2, per=per)
    model = joint_model(sc, e_agg=e_agg, seed=seed, coverage="cluster", min_trainers=trainers)
    rng = np.random.default_rng(seed)
    able = able_modules(sc)
    plans = [schedule(sc, name, e_agg=e_agg, seed=seed) for name in ("hierarchical", "hierarchical-d2d", "greedy")]
    for _ in range(3):  # random module sets that keep the rule, each at its own best structures and allocation
        train = able & (rng.random(able.shape) < 0.5)
        train[np.arange(sc.n_devices), np.argmax(able, axis=1)] |= able.any(axis=1)
        plan = model.start.replace(train=train)
        if covers(sc, np.arange(sc.n_devices), plan.association, train, trainers):
            res = solve(dataclasses.replace(joint_model(sc, e_agg=e_agg, seed=seed), start=plan), "fast")
            plans += [plan] + ([res.plan] if res.ok else [])
    for plan in plans:
        m = evaluate(sc, plan)
        bound, _ = subset_bound(model, plan, m.period_latency_s * (1 + 1e-9), None)
        assert bound <= m.energy_j * (1 + 1e-9)


def test_balanced_train_keeps_the_rule_and_spreads_the_compute():
    sc = small_clustered(1, n_e=2, per=3)
    plan = schedule(sc, "hierarchical", e_agg=2)
    able = able_modules(sc)
    train = plan.train.copy()
    for e in range(sc.n_edges):
        members = np.flatnonzero(plan.association == e)
        train[members] = balanced_train(sc, plan, members, able[members], 1)
    assert covers(sc, np.arange(sc.n_devices), plan.association, train, 1)
    assert not (train & ~able).any()
    cycles = plan.replace(train=train).round_cycles(sc)
    one = plan.train & False
    one[np.arange(sc.n_devices), np.argmax(able, axis=1)] = True  # everyone its first module ...
    for e in range(sc.n_edges):  # ... and one member per cluster all the rest: what F1 at fixed speeds gave
        members = np.flatnonzero(plan.association == e)
        one[members[0]] = able[members[0]]
    lumped = plan.replace(train=one).round_cycles(sc)
    kappa = sc.devices.kappa
    assert (kappa * cycles ** 3).sum() < 0.5 * (kappa * lumped ** 3).sum()


def test_full_f4_with_module_subsets_free_claims_a_bound_that_holds():
    sc = small_clustered(1, n_e=2, per=3)
    res = solve(_subset_model(sc), "fast")
    assert res.ok and res.bound is not None
    assert res.bound <= res.objective and res.summary()["gap_controllable"] is not None
    weighted = solve(_subset_model(sc, w_U=1.0), "fast")
    assert weighted.bound is None  # the score is not the energy: no bound claimed
