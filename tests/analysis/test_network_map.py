"""The network map: every link the plan uses is drawn once, as wide as its bits, and the picture is a PNG."""

import json

import numpy as np
import pytest
from conftest import small_clustered

from hffm_opt.analysis.network_map import draw_network, plan_links
from hffm_opt.evaluate import evaluate
from hffm_opt.schedulers import schedule


@pytest.mark.parametrize("name", ["hierarchical", "hierarchical-d2d", "greedy", "random"])
def test_the_links_are_the_plans_relay_tree_and_uplinks(name):
    s = small_clustered(3, n_e=3, per=4)
    plan = schedule(s, name, e_agg=2, seed=1)
    links = plan_links(s, plan)
    child = np.flatnonzero(plan.parent >= 0)
    assert sorted(map(tuple, links["relay"])) == sorted(zip(child, plan.parent[child]))
    direct = ~plan.uses_d2d[plan.association]
    expected = [(u, plan.association[u]) for u in np.flatnonzero(direct)]
    expected += [(int(plan.aggregator[e]), e) for e in np.flatnonzero(plan.uses_d2d)]
    assert sorted(map(tuple, links["uplink"])) == sorted(expected)
    # the bits drawn per round add up to what the evaluator counts on those links over the period
    m = evaluate(s, plan)
    d2d_up = links["relay_bits"].sum() * plan.e_agg
    direct_up = links["uplink_bits"][direct[links["uplink"][:, 0]]].sum() * plan.e_agg
    aggregate = links["uplink_bits"][~direct[links["uplink"][:, 0]]].sum()
    assert direct_up + aggregate == pytest.approx(m.bits_by_part["uplink"])
    assert d2d_up <= m.bits_by_part["d2d"] * (1 + 1e-12)  # the d2d part also holds the broadcasts down the trees


def test_draw_network_writes_a_png_with_every_link_and_no_temporary(tmp_path):
    s = small_clustered(5, n_e=2, per=5)
    plan = schedule(s, "hierarchical-d2d", e_agg=8)
    out = tmp_path / "map.png"
    counts = draw_network(s, plan, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and [p.name for p in tmp_path.iterdir()] == ["map.png"]
    assert counts == {"devices": 10, "edges": 2, "aggregators": 2, "relay_links": int((plan.parent >= 0).sum()),
                      "uplinks": 2}


def test_the_plot_command_draws_a_scheduler_plan_and_refuses_a_folder(tmp_path, capsys):
    from hffm_opt.cli import main

    out = tmp_path / "map.png"
    assert main(["plot", "--scheduler", "hierarchical-d2d", "--e-agg", "8", "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["relay_links"] == 30 and out.stat().st_size > 0
    assert main(["plot", "--out", str(tmp_path)]) == 2


@pytest.mark.parametrize("name", ["hierarchical", "star", "edge-only"])
def test_a_plan_without_relay_links_is_drawn(tmp_path, name):
    s = small_clustered(5, n_e=2, per=3)
    out = tmp_path / "map.png"
    counts = draw_network(s, schedule(s, name, e_agg=1 if name == "star" else 2), out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and counts["relay_links"] == counts["aggregators"] == 0


def test_a_one_device_network_is_drawn(tmp_path):
    from hffm_opt.network import generators

    s = generators.clustered(1, 1, seed=0)
    out = tmp_path / "one.png"
    assert draw_network(s, schedule(s, "hierarchical-d2d", e_agg=2), out)["devices"] == 1
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_names_the_plan_file_of_a_bad_plan(tmp_path, capsys):
    from hffm_opt.cli import main

    s = small_clustered(5, n_e=2, per=3)
    doc = schedule(s, "hierarchical", e_agg=2).to_dict() | {"e_agg": 0, "scenario_fingerprint": ""}
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    assert main(["plot", "--plan", str(tmp_path / "bad.json"), "--out", str(tmp_path / "map.png")]) == 2
    assert capsys.readouterr().err == (f"hffm-opt plot: error: plan file '{tmp_path / 'bad.json'}': e_agg = 0: must "
                                       "be in [1, 10000]\n")
