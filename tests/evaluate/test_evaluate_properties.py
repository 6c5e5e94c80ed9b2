"""Property tests over generated scenarios: every baseline plan is valid and priced positive and finite."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hffm_opt.errors import PlanError
from hffm_opt.evaluate import evaluate
from hffm_opt.network import generators
from hffm_opt.network.generators import DeviceProfile
from hffm_opt.network.scenario import PrototypeConstants
from hffm_opt.schedulers import schedule

BASELINES = ("star", "hierarchical", "edge-only", "hierarchical-d2d", "edge-only-d2d")

scenarios = st.builds(
    lambda kind, seed, n_e, per, het: (generators.paper(seed=seed, n_edges=n_e, devices_per_edge=per,
                                                        profile=DeviceProfile(heterogeneity=het, seed=seed))
                                       if kind == "paper" else
                                       generators.clustered(n_e, per, seed=seed, d2d_range_m=None,
                                                            profile=DeviceProfile(heterogeneity=het, seed=seed))),
    st.sampled_from(["paper", "clustered"]), st.integers(0, 10_000), st.integers(1, 5), st.integers(1, 6),
    st.sampled_from(["none", "device", "cluster"]))


@settings(max_examples=25, deadline=None)
@given(s=scenarios, name=st.sampled_from(BASELINES), e_agg=st.integers(1, 10), seed=st.integers(0, 100))
def test_every_baseline_plan_passes_and_is_positive_and_finite(s, name, e_agg, seed):
    plan = schedule(s, name, e_agg=e_agg, seed=seed)
    for accounting in ("consistent", "paper"):
        m = evaluate(s, plan, accounting)
        assert np.isfinite(m.latency_s) and m.latency_s > 0
        assert np.isfinite(m.energy_j) and m.energy_j > 0
        assert m.round_energy_j.sum() == pytest.approx(m.period_energy_j)
        assert np.all(np.diff(m.round_end_s) >= -1e-12) and m.round_end_s[-1] == pytest.approx(m.period_latency_s)
        assert all(v >= 0 for v in m.energy_by_part.values())


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), n_e=st.integers(1, 4), per=st.integers(1, 5), e_agg=st.integers(1, 12),
       name=st.sampled_from(["star", "hierarchical"]))
def test_paper_and_consistent_agree_where_powers_coincide(seed, n_e, per, e_agg, name):
    proto = PrototypeConstants(uplink_energy_power_w=1.0, d2d_energy_power_w=0.2)
    s = generators.clustered(n_e, per, seed=seed, proto=proto)
    s = s.replace(modules=tuple(m.__class__(**{**m.__dict__, "flops_per_sample": 0.0}) for m in s.modules))
    plan = schedule(s, name, e_agg=e_agg)
    a, b = evaluate(s, plan, "paper"), evaluate(s, plan)
    assert a.latency_s == pytest.approx(b.latency_s, rel=1e-9)
    assert a.energy_j == pytest.approx(b.energy_j, rel=1e-9)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), frac=st.floats(0.05, 2.0))
def test_a_deadline_never_raises_latency_or_energy(seed, frac):
    s = generators.clustered(3, 5, seed=seed)
    plan = schedule(s, "hierarchical-d2d", e_agg=2)
    free = evaluate(s, plan)
    tight = plan.replace(deadline_s=frac * free.period_latency_s / 2)
    try:
        m = evaluate(s, tight)
    except PlanError as exc:  # a deadline every training device misses is refused, never priced
        assert "no training device meets it" in str(exc)
    else:
        assert m.period_latency_s <= free.period_latency_s + 1e-9
        assert m.period_energy_j <= free.period_energy_j + 1e-9
    loose = evaluate(s, plan.replace(deadline_s=free.period_latency_s))
    assert not loose.stragglers.any() and loose.period_latency_s == pytest.approx(free.period_latency_s)
