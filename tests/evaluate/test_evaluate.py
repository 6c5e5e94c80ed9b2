import numpy as np
import pytest
from conftest import N0, tiny_scenario

from hffm_opt.errors import PlanError
from hffm_opt.evaluate import evaluate
from hffm_opt.network.channel import shannon_rate
from hffm_opt.network.scenario import PrototypeConstants
from hffm_opt.plan import Plan
from hffm_opt.schedulers import schedule

PUBLISHED = {("star", 1): (12.10, 387.2), ("hierarchical", 2): (9.59, 107.65), ("hierarchical", 8): (5.05, 71.35),
             ("edge-only", 200): (3.60, 59.25)}


@pytest.mark.parametrize("name, e_agg", list(PUBLISHED))
def test_paper_table_rows_reproduced_to_0p1_percent(paper, name, e_agg):
    m = evaluate(paper, schedule(paper, name, e_agg=e_agg), "paper")
    lat, energy = PUBLISHED[(name, e_agg)]
    assert m.latency_s == pytest.approx(lat, rel=1e-3)
    assert m.energy_j == pytest.approx(energy, rel=1e-3)


def _d2d_case(positions, gains_by_pair):
    """One cluster of 3 devices, D2D gains given per ordered pair."""
    s = tiny_scenario((3,), positions=positions, gains=np.array([2e-10, 1e-10, 5e-11]))
    g = np.array([gains_by_pair[(int(a), int(b))] for a, b in zip(s.d2d.src, s.d2d.dst)])
    return s.replace(d2d=type(s.d2d)(src=s.d2d.src, dst=s.d2d.dst, gain=g, bandwidth_hz=8e6))


def _section7_by_hand(s, arcs, up_paths, down_paths, down_tree_arcs, g):
    """Section 7's formulas written out for one cluster, aggregator 0."""
    pr = s.prototype
    S = pr.model_bits
    lat = {a: S / shannon_rate(pr.d2d_bandwidth_hz, pr.d2d_rate_power_w, s.d2d.gain[s.link_lookup(*a)], N0) for a in arcs}
    up_d = [sum(lat[a] for a in path) for path in up_paths]
    down_d = [sum(lat[a] for a in path) for path in down_paths]
    lat_up = S / shannon_rate(pr.uplink_bandwidth_hz, pr.uplink_rate_power_w, s.home_uplink_gain(), N0)
    s2c = pr.backhaul_delay_s + S / pr.backhaul_rate_bps
    up, down, loc = max(up_d), max(down_d), lat_up.mean()
    e_up = pr.d2d_energy_power_w * sum(up_d)
    e_down = pr.d2d_energy_power_w * sum(lat[a] for a in down_tree_arcs)
    latency = (s2c + (up + down) * (g - 1) + up + loc) / g
    energy = (s2c * pr.backhaul_energy_power_w + (e_up + e_down) * (g - 1) + e_up + loc * pr.uplink_energy_power_w) / g
    return latency, energy


@pytest.mark.parametrize("g", [2, 8])
def test_d2d_rows_follow_section_7_in_radius(g):
    # chain 0 - 1 - 2 with 20 m hops: 0-2 (40 m) is outside the 30 m radius; asymmetric gains
    gains = {(0, 1): 3e-9, (1, 0): 2e-9, (1, 2): 1e-9, (2, 1): 4e-9, (0, 2): 9e-9, (2, 0): 9e-9}
    s = _d2d_case([[0, 0], [20, 0], [40, 0]], gains)
    plan = schedule(s, "hierarchical-d2d", e_agg=g).replace(aggregator=np.array([0]))
    arcs = [(1, 0), (2, 1), (0, 1), (1, 2)]
    want = _section7_by_hand(s, arcs, up_paths=[[], [(1, 0)], [(2, 1), (1, 0)]],
                             down_paths=[[], [(0, 1)], [(0, 1), (1, 2)]], down_tree_arcs=[(0, 1), (1, 2)], g=g)
    m = evaluate(s, plan.replace(parent=np.array([-1, 0, 1])), "paper")
    assert (m.latency_s, m.energy_j) == pytest.approx(want, rel=1e-12)


def test_d2d_graph_is_completed_by_the_mst_when_disconnected():
    # nobody within 30 m: the MST of min(lat_uv, lat_vu) is {0-1, 0-2} (the 1-2 link is the weakest)
    gains = {(0, 1): 3e-9, (1, 0): 1e-9, (1, 2): 1e-11, (2, 1): 1e-11, (0, 2): 2e-9, (2, 0): 5e-9}
    s = _d2d_case([[0, 0], [100, 0], [0, 250]], gains)
    plan = schedule(s, "hierarchical-d2d", e_agg=2).replace(aggregator=np.array([0]), parent=np.array([-1, 0, 0]))
    arcs = [(1, 0), (0, 1), (2, 0), (0, 2)]
    want = _section7_by_hand(s, arcs, up_paths=[[], [(1, 0)], [(2, 0)]], down_paths=[[], [(0, 1)], [(0, 2)]],
                             down_tree_arcs=[(0, 1), (0, 2)], g=2)
    assert (evaluate(s, plan, "paper").latency_s, evaluate(s, plan, "paper").energy_j) == pytest.approx(want, rel=1e-12)


def test_consistent_hierarchical_by_hand():
    s = tiny_scenario((2,), gains=np.array([1e-10, 1e-11]))
    plan = schedule(s, "hierarchical", e_agg=2)
    m = evaluate(s, plan)
    mods = s.module_arrays
    S = mods["update_bits"][mods["trainable"]].sum()
    flops = plan.local_steps * plan.batch_size * mods["flops_per_sample"][mods["trainable"]].sum()
    cycles = flops / 4.0
    t_comp, e_comp = cycles / 1e9, 1e-28 * cycles * 1e18
    t_up = S / (1e6 * np.log2(1 + np.array([1e-10, 1e-11]) * 1.0 / (N0 * 1e6)))
    s2c = 0.1 + S / 4e6
    assert m.period_latency_s == pytest.approx(2 * (t_comp + t_up.max()) + s2c)
    assert m.period_energy_j == pytest.approx(2 * (2 * e_comp + 1.0 * t_up.sum()) + 0.8 * s2c)
    assert m.latency_s == pytest.approx(m.period_latency_s / 2)
    assert m.energy_by_part["backhaul"] == pytest.approx(0.8 * s2c)
    assert m.round_end_s[-1] == m.period_latency_s and m.round_energy_j.sum() == pytest.approx(m.period_energy_j)
    assert sum(m.latency_by_part.values()) == pytest.approx(m.period_latency_s)


def test_consistent_d2d_in_network_aggregation_by_hand():
    s = tiny_scenario((3,), d2d_gain=1e-9)
    plan = schedule(s, "hierarchical-d2d", e_agg=2).replace(aggregator=np.array([0]), parent=np.array([-1, 0, 1]))
    m = evaluate(s, plan)
    mods = s.module_arrays
    S = mods["update_bits"][mods["trainable"]].sum()
    r_d2d = 8e6 * np.log2(1 + 1e-9 * 0.2 / (N0 * 8e6))
    hop = S / r_d2d  # every link carries one aggregated update (all devices train the same modules)
    cycles = plan.batch_size * mods["flops_per_sample"][mods["trainable"]].sum() / 4.0
    t_comp = cycles / 1e9
    up = t_comp + 2 * hop  # the far leaf's update crosses two hops
    down = 2 * hop
    agg_up = S / (1e6 * np.log2(1 + 1e-10 / (N0 * 1e6)))
    s2c = 0.1 + S / 4e6
    assert m.period_latency_s == pytest.approx((up + down) + (up + agg_up + s2c))
    assert m.energy_by_part["d2d"] == pytest.approx(0.2 * hop * (2 * 2 + 2))  # 2 up-links x 2 rounds + 2 down-links
    forward = evaluate(s, plan.replace(relay_mode="forward"))
    assert forward.period_latency_s > m.period_latency_s  # store-and-forward carries two updates on the first hop


def test_stragglers_are_dropped_and_the_round_waits_for_the_deadline():
    s = tiny_scenario((3,), gains=np.array([1e-9, 1e-9, 1e-13]))
    base = schedule(s, "hierarchical", e_agg=1)
    full = evaluate(s, base)
    fast = evaluate(s, base.replace(deadline_s=full.period_latency_s * 10))
    assert not fast.stragglers.any()
    deadline = 0.5 * full.period_latency_s
    m = evaluate(s, base.replace(deadline_s=deadline))
    assert m.stragglers.tolist() == [False, False, True]
    assert m.latency_by_part["wait"] > 0
    assert m.energy_by_part["uplink"] < full.energy_by_part["uplink"]
    assert m.energy_by_part["compute"] == pytest.approx(full.energy_by_part["compute"])


def test_paper_and_consistent_agree_when_powers_coincide_and_compute_is_free():
    proto = PrototypeConstants(uplink_energy_power_w=1.0, backhaul_energy_power_w=0.8)
    s = tiny_scenario((2, 3), gains=np.array([1e-10, 3e-11, 2e-10, 5e-11, 1e-10]), proto=proto)
    s = s.replace(modules=tuple(m.__class__(**{**m.__dict__, "flops_per_sample": 0.0}) for m in s.modules))
    for name, g in (("star", 1), ("hierarchical", 2), ("hierarchical", 8)):
        plan = schedule(s, name, e_agg=g)
        a, b = evaluate(s, plan, "paper"), evaluate(s, plan)
        assert a.latency_s == pytest.approx(b.latency_s, rel=1e-12)
        assert a.energy_j == pytest.approx(b.energy_j, rel=1e-12)


def _mutations(s):
    p = schedule(s, "hierarchical-d2d", e_agg=2).replace(aggregator=np.array([0, 3]), parent=np.array([-1, 0, 1, -1, 3]))
    train_frozen = p.train.copy()
    train_frozen[0, list(s.module_names).index("encoder:image")] = True
    tier_bad = p.tier.copy()
    tier_bad[0, 0] = 7
    return p, [
        ("e_agg", p.replace(e_agg=0), "e_agg = 0"),
        ("mode", p.replace(mode="ring"), "mode = 'ring'"),
        ("star e_agg", p.replace(mode="star", e_agg=3), "star plan"),
        ("deadline", p.replace(deadline_s=-1.0), "deadline_s = -1.0"),
        ("association", p.replace(association=np.array([0, 0, 0, 1, 7])), r"association\[4\] = 7"),
        ("association gain", p.replace(association=np.array([0, 0, 0, 1, 0])), "no uplink gain"),
        ("frozen", p.replace(train=train_frozen), "frozen modules cannot be trained"),
        ("power", p.replace(power_w=np.array([1, 1, 1, 1, 2.0])), r"power_w\[4\] = 2.0: exceeds"),
        ("d2d power", p.replace(d2d_power_w=np.array([1, 1, 3.0, 1, 1])), r"d2d_power_w\[2\] = 3.0"),
        ("cpu", p.replace(cpu_hz=np.array([2e9, 1e9, 1e9, 1e9, 1e9])), r"cpu_hz\[0\]"),
        ("bandwidth sum", p.replace(bandwidth_hz=np.full(5, 2e6)), "exceed the edge bandwidth"),
        ("uploader bandwidth", p.replace(bandwidth_hz=np.array([0.0, 1e6, 1e6, 1e6, 1e6])), "uploads needs b_u > 0"),
        ("tier index", p.replace(tier=tier_bad), "tiers index"),
        ("aggregator tier", p.replace(aggregator=np.array([0, -1]), parent=np.array([-1, 0, 1, -1, -1]),
                                      tier=np.zeros_like(p.tier)), "'aggregator' tier needs a D2D aggregator"),
        ("aggregator cluster", p.replace(aggregator=np.array([3, 3])), "aggregator must be associated"),
        ("cycle", p.replace(parent=np.array([-1, 2, 1, -1, 3])), "cycle or does not reach"),
        ("cross-cluster relay", p.replace(parent=np.array([-1, 0, 3, -1, 3])), "inside the cluster"),
        ("missing parent", p.replace(parent=np.array([-1, -1, 1, -1, 3])), "needs a parent"),
        ("root parent", p.replace(parent=np.array([1, 0, 1, -1, 3])), "root of its tree"),
        ("shape", p.replace(bandwidth_hz=np.ones(3)), r"bandwidth_hz.shape"),
    ]


def test_every_check_fires_on_a_plan_built_to_violate_it():
    s = tiny_scenario((3, 2))
    p, cases = _mutations(s)
    evaluate(s, p)  # the unmutated plan is valid
    for label, bad, pattern in cases:
        with pytest.raises(PlanError, match=pattern):
            evaluate(s, bad)


def test_memory_range_and_need_checks():
    s = tiny_scenario((3, 2), memory_bytes=np.array([8e9, 8e9, 1e3, 8e9, 8e9]))
    p = schedule(s, "hierarchical", e_agg=2)
    with pytest.raises(PlanError, match=r"devices\[id=2\]\.memory_bytes = 1000\.0: the modules it holds .* take 6\.2"):
        evaluate(s, p)
    s2 = tiny_scenario((3,), samples=np.array([[100, 100], [100, 0], [100, 100]]))
    p2 = schedule(s2, "hierarchical", e_agg=2)
    x = p2.train.copy()
    x[1, list(s2.module_names).index("head:shape")] = True
    with pytest.raises(PlanError, match=r"train\[1\].*Need\(u\)"):
        evaluate(s2, p2.replace(train=x))
    # a relay link that the scenario does not list (out of range) is refused
    s3 = tiny_scenario((3,))
    keep = ~((s3.d2d.src == 2) & (s3.d2d.dst == 0))
    s3 = s3.replace(d2d=type(s3.d2d)(src=s3.d2d.src[keep], dst=s3.d2d.dst[keep], gain=s3.d2d.gain[keep]))
    p3 = schedule(s3, "hierarchical-d2d", e_agg=2).replace(aggregator=np.array([0]), parent=np.array([-1, 0, 0]))
    with pytest.raises(PlanError, match="listed D2D link in both directions"):
        evaluate(s3, p3)


def test_plan_json_round_trip(tmp_path, paper):
    p = schedule(paper, "hierarchical-d2d", e_agg=8)
    p.save(tmp_path / "plan.json")
    q = Plan.load(tmp_path / "plan.json")
    for f in ("train", "tier", "parent", "aggregator", "bandwidth_hz", "power_w"):
        assert np.array_equal(getattr(p, f), getattr(q, f))
    assert evaluate(paper, q).period_energy_j == evaluate(paper, p).period_energy_j
    with pytest.raises(PlanError, match="format"):
        Plan.from_dict({"format": "other"})
