"""Plans from a bad-input sweep: each fault is refused with one line naming the field, the value and the rule, and
the line points at the part of the plan that is wrong."""

import json

import numpy as np
import pytest
from conftest import small_clustered, tiny_scenario

from hffm_opt.errors import PlanError
from hffm_opt.evaluate import evaluate
from hffm_opt.plan import Plan
from hffm_opt.schedulers import schedule


@pytest.fixture(scope="module")
def d2d():
    """A scenario, its hierarchical-d2d plan and that plan as a document."""
    s = small_clustered(3, n_e=2, per=4)
    plan = schedule(s, "hierarchical-d2d", e_agg=2).for_scenario(s)
    return s, plan, plan.to_dict()


def _refused_document(doc: dict, change, match: str):
    doc = json.loads(json.dumps(doc))
    change(doc)
    with pytest.raises(PlanError, match=match):
        Plan.from_dict(doc)


def test_a_plan_that_trains_nothing_is_refused_not_priced_as_zero():
    s = tiny_scenario((3, 2))
    plan = schedule(s, "hierarchical", e_agg=2)
    with pytest.raises(PlanError, match=r"^train = <all 0>: no device trains any module; nothing to price$"):
        evaluate(s, plan.replace(train=np.zeros_like(plan.train)))
    idle = plan.train.copy()
    idle[0] = False  # one idle device is a legitimate plan
    assert evaluate(s, plan.replace(train=idle)).energy_j > 0


def test_an_uplink_that_carries_bits_needs_the_least_bandwidth_of_a_scenario(d2d):
    s, plan, _ = d2d
    direct = schedule(s, "hierarchical", e_agg=2)
    band = direct.bandwidth_hz.copy()
    band[1] = 1e-300
    with pytest.raises(PlanError, match=r"^bandwidth_hz\[1\] = 1e-300: an uplink that carries bits needs b_u >= 1 Hz"):
        evaluate(s, direct.replace(bandwidth_hz=band))
    root = int(plan.aggregator[0])
    band = plan.bandwidth_hz.copy()
    band[root] = 0.5
    with pytest.raises(PlanError, match=rf"^bandwidth_hz\[{root}\] = 0.5: an uplink that carries bits"):
        evaluate(s, plan.replace(bandwidth_hz=band))
    # a device that sends nothing may keep a sliver of bandwidth (the fast allocator leaves such shares)
    train, band = direct.train.copy(), direct.bandwidth_hz.copy()
    train[1], band[1] = False, 1e-300
    evaluate(s, direct.replace(train=train, bandwidth_hz=band))


@pytest.mark.parametrize("field", ["power_w", "d2d_power_w", "cpu_hz"])
def test_a_rate_next_to_zero_is_refused_not_priced_as_an_astronomic_latency(d2d, field):
    """A power of 1e-300 W used to be priced as a latency of 2.3e293 s; the optimiser's longest targets (1e9 s per
    edge round) still pass, their powers well below a picowatt."""
    s, plan, _ = d2d
    if field != "d2d_power_w":
        plan = schedule(s, "hierarchical", e_agg=2)
    device = int(np.flatnonzero(plan.parent >= 0)[0]) if field == "d2d_power_w" else 1
    values = getattr(plan, field).copy()
    values[device] = 1e-300
    with pytest.raises(PlanError, match=r"ready time = (inf|\S+e\+\d+) s: its update never arrives within 1e\+15 s"):
        evaluate(s, plan.replace(**{field: values}))


def test_a_device_is_not_its_own_relay_parent(d2d):
    s, plan, _ = d2d
    u = int(np.flatnonzero(plan.parent >= 0)[0])
    parent = plan.parent.copy()
    parent[u] = u
    with pytest.raises(PlanError, match=rf"^parent\[{u}\] = {u}: a device cannot be its own relay parent$"):
        evaluate(s, plan.replace(parent=parent))


def test_a_relay_parent_in_a_cluster_without_aggregator_names_the_cluster(d2d):
    s, plan, _ = d2d
    u = int(np.flatnonzero((plan.parent >= 0) & (plan.association == 1))[0])
    aggregator = plan.aggregator.copy()
    aggregator[1] = -1
    with pytest.raises(PlanError, match=rf"^parent\[{u}\] = {plan.parent[u]}: a device outside a D2D cluster has no "
                                        r"relay parent \(its edge server 1 has aggregator -1\)$"):
        evaluate(s, plan.replace(aggregator=aggregator))


def test_a_short_row_of_train_is_named_by_its_own_index(d2d):
    _, _, doc = d2d
    width = len(doc["train"][0])
    _refused_document(doc, lambda d: d["train"].__setitem__(0, d["train"][0][:-1]),
                      rf"^train\[0\] = .*: must be a list of {width} items, not {width - 1}$")


def test_a_boolean_in_the_train_matrix_is_refused(d2d):
    _, _, doc = d2d
    _refused_document(doc, lambda d: d["train"][0].__setitem__(3, True),
                      r"^train\[0\]\[3\] = True: must be an integer, not a boolean$")


def test_a_missing_format_says_missing(d2d):
    _, _, doc = d2d
    _refused_document(doc, lambda d: d.pop("format"), r"^format = <missing>: a plan file must have format")


def test_a_plan_file_must_name_its_scenario(d2d, tmp_path):
    s, _, doc = d2d
    _refused_document(doc, lambda d: d.pop("scenario_fingerprint"),
                      r"^scenario_fingerprint = <missing>: a plan file must name the scenario it was made for")
    hand = dict(doc, scenario_name="", scenario_fingerprint="")  # a hand-made plan says so: it fits any scenario
    evaluate(small_clustered(4, n_e=2, per=4), Plan.from_dict(hand))
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({k: v for k, v in doc.items() if k != "scenario_fingerprint"}))
    with pytest.raises(PlanError, match=r"^plan file '.*plan\.json': scenario_fingerprint = <missing>"):
        Plan.load(path)
