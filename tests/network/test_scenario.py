import json
import math

import numpy as np
import pytest
from conftest import tiny_scenario

from hffm_opt.errors import ScenarioError
from hffm_opt.network import generators
from hffm_opt.network.generators import DeviceProfile
from hffm_opt.network.io import load_scenario, save_scenario, to_dict
from hffm_opt.network.scenario import ModuleSpec


def test_valid_tiny_scenario_builds():
    s = tiny_scenario((2, 3))
    assert s.n_devices == 5 and s.n_edges == 2
    assert s.need.shape == (5, len(s.modules))


@pytest.mark.parametrize("override, pattern", [
    ({"pmax_w": np.array([1.0, -1.0, 1.0])}, r"devices\.pmax_w\[id=1\] = -1\.0: must be in \[1e-12, 10000\] W"),
    ({"edge": np.array([0, 5, 0])}, r"devices\.edge_server\[id=1\] = 5: every device needs an existing edge server"),
    ({"ids": np.array([0, 0, 2])}, r"devices\.id = 0: ids must be unique"),
    ({"memory_bytes": np.array([1.0, 0.0, 1.0])}, r"devices\.memory_bytes\[id=1\] = 0\.0"),
    ({"samples": np.zeros((3, 2), int)}, r"devices\.samples\[id=0\].*at least one task"),
    ({"modalities": np.array([[1, 1], [0, 0], [1, 0]], bool)}, r"devices\.modalities\[id=1\].*at least one modality"),
])
def test_device_rules_name_field_value_and_rule(override, pattern):
    with pytest.raises(ScenarioError, match=pattern):
        tiny_scenario((3,), **override)


def test_d2d_link_across_clusters_rejected():
    s = tiny_scenario((2, 2))
    with pytest.raises(ScenarioError, match=r"d2d\.links\.from/to.*= \[0, 2\]: D2D links stay inside one cluster"):
        s.replace(d2d=type(s.d2d)(src=[0], dst=[2], gain=[1e-9]))


def test_d2d_link_out_of_range_rejected():
    s = tiny_scenario((2,))
    with pytest.raises(ScenarioError, match=r"length_m.*within d2d\.range_m = 5"):
        s.replace(d2d=type(s.d2d)(src=[0], dst=[1], gain=[1e-9], range_m=5.0))


def test_unknown_modality_and_task_rejected():
    s = tiny_scenario((2,))
    bad = s.modules + (ModuleSpec("encoder:audio", "encoder", "audio", 0, 8, 0, 1, 0, trainable=False),)
    with pytest.raises(ScenarioError, match=r"modules\[encoder:audio\]\.key = 'audio': unknown modality"):
        s.replace(modules=bad)
    with pytest.raises(ScenarioError, match=r"trainable module must have update_bits > 0"):
        ModuleSpec("head:x", "head", "x", 0.0)


def test_duplicate_edge_ids_and_negative_backhaul_power():
    s = tiny_scenario((1, 1))
    e = s.edges
    with pytest.raises(ScenarioError, match=r"edge_servers\.id = 3: ids must be unique"):
        type(e)(**{**e.__dict__, "ids": np.array([3, 3])})
    with pytest.raises(ScenarioError, match=r"backhaul_power_w\[id=1\] = -0\.5"):
        type(e)(**{**e.__dict__, "backhaul_power_w": np.array([0.8, -0.5])})


def test_arrays_are_read_only():
    s = tiny_scenario((2,))
    with pytest.raises(ValueError):
        s.devices.pmax_w[0] = 5.0


def _same(a, b):
    assert json.dumps(to_dict(a), sort_keys=True) == json.dumps(to_dict(b), sort_keys=True)
    for f in ("uplink_gain", "position_m", "kappa", "samples", "modalities"):
        assert np.array_equal(getattr(a.devices, f), getattr(b.devices, f), equal_nan=True)
    assert np.array_equal(a.d2d.gain, b.d2d.gain)


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_round_trip_is_lossless(tmp_path, suffix):
    s = generators.clustered(3, 5, seed=4, profile=DeviceProfile(heterogeneity="device", seed=2), d2d_range_m=250.0)
    path = save_scenario(s, tmp_path / f"s{suffix}")
    back = load_scenario(path)
    _same(s, back)
    assert back.d2d.range_m == 250.0


def test_round_trip_paper_with_unlimited_range(tmp_path, paper):
    back = load_scenario(save_scenario(paper, tmp_path / "p.toml"))
    _same(paper, back)
    assert math.isinf(back.d2d.range_m)
    assert np.array_equal(back.recorded_aggregators, paper.recorded_aggregators)


def test_paper_loader_fills_defaults(paper):
    assert paper.n_devices == 40 and paper.n_edges == 10
    assert paper.devices.modalities.all() and (paper.devices.samples == 500).all()
    trained_bits = paper.module_arrays["update_bits"][paper.module_arrays["trainable"]].sum()
    assert trained_bits == 48e6  # a device training everything sends the prototype's S
    assert paper.noise_psd_w_per_hz == pytest.approx(10 ** -23.4)
    assert paper.edges.bandwidth_hz.tolist() == [4e6] * 10
    assert paper.recorded_aggregators.tolist() == [2, 5, 11, 12, 16, 20, 26, 28, 33, 36]


def test_paper_format_errors_name_the_field(tmp_path):
    data = generators.embedded_paper_data()
    data["devices"][3]["edge_server"] = 99
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(data))
    with pytest.raises(ScenarioError, match=r"devices\[id=3\]\.edge_server = 99"):
        load_scenario(p)
    del data["constants"]
    p.write_text(json.dumps(data))
    with pytest.raises(ScenarioError, match="constants"):
        load_scenario(p)


@pytest.mark.parametrize("section, key, value, message", [
    (None, "model_bits", 0, r"^constants\.model_bits = 0\.0: must be in \[1, "),
    ("uplink", "bandwidth_hz", -1, r"^constants\.uplink\.bandwidth_hz = -1\.0: must be in \[1, "),
    ("backhaul", "fixed_delay_s", -2, r"^constants\.backhaul\.fixed_delay_s = -2\.0: must be in \[0, "),
])
def test_a_paper_format_constant_out_of_range_is_named_by_its_key_in_the_file(tmp_path, section, key, value, message):
    """The rule is the prototype's; the name is the file's (it used to say e.g. prototype.uplink_bandwidth_hz)."""
    data = generators.embedded_paper_data()
    (data["constants"] if section is None else data["constants"][section])[key] = value
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(data))
    with pytest.raises(ScenarioError, match=message):
        generators.from_paper_format(json.loads(p.read_text()))


@pytest.mark.parametrize("change,message", [
    (lambda d: d.update(devices=[], d2d_links=[], d2d_aggregators={}), r"devices = \[\]: a scenario needs at least"),
    (lambda d: d.update(edge_servers=[]), r"edge_servers = \[\]: a scenario needs at least one"),
    (lambda d: d["devices"][1].update(id=0), r"devices\[id=0\]: the id appears more than once"),
    (lambda d: d["edge_servers"][2].update(id=1), r"edge_servers\[id=1\]: the id appears more than once"),
    (lambda d: d.update(format="hffm-opt/plan"), r"format = 'hffm-opt/plan': a scenario file has format"),
    # numbers in other units, or a position outside the stated area, would change every distance-based gain
    (lambda d: d["units"].update(position="km"), r"units\.position = 'km': must be 'm' \(the format's numbers"),
    (lambda d: d["units"].update(weight="kg"), r"units\.weight = 'kg': unknown key"),
    (lambda d: d["devices"][0].update(position=[-1e6, 9e6]), r"devices\[id=0\]\.position = \[-1000000\.0, 9000000\.0\]:"
                                                          r" outside the area, \[0, 5000\] m"),
    (lambda d: d["edge_servers"][1].update(position=[1e7, 10.0]), r"edge_servers\[id=1\]\.position = .*outside"),
    (lambda d: d.update(area_m=1.0), r"devices\[id=0\]\.position = .*: outside the area, \[0, 1\] m"),
])
def test_paper_format_without_devices_or_with_repeated_ids_is_refused(tmp_path, change, message):
    data = generators.embedded_paper_data()
    change(data)
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(data))
    with pytest.raises(ScenarioError, match=message):
        load_scenario(p)


def test_generator_config_toml(tmp_path):
    p = tmp_path / "cfg.toml"
    p.write_text('[generator]\nname = "clustered"\nn_edges = 4\ndevices_per_edge = 6\nseed = 1\n'
                 '[profile]\nheterogeneity = "cluster"\ntasks = ["a", "b", "c"]\n')
    s = load_scenario(p)
    assert s.n_devices == 24 and s.tasks == ("a", "b", "c")
    tasks = s.devices.tasks
    for e in range(4):  # cluster heterogeneity: one task set per cluster
        assert (tasks[s.cluster(e)] == tasks[s.cluster(e)][0]).all()
    p.write_text('[generator]\nname = "nope"\n')
    with pytest.raises(ScenarioError, match=r"generator\.name = 'nope'"):
        load_scenario(p)


def test_paper_generator_follows_the_distribution():
    s = generators.paper(seed=7)
    e = s.edges.position_m
    d = np.linalg.norm(e[:, None] - e[None], axis=-1)
    assert d[~np.eye(10, dtype=bool)].min() >= 500.0
    assert ((s.devices.position_m >= 0) & (s.devices.position_m <= 5000)).all()
    assert np.bincount(s.devices.edge).tolist() == [4] * 10
    again = generators.paper(seed=7)
    assert np.array_equal(s.devices.uplink_gain, again.devices.uplink_gain)
    assert not np.array_equal(s.devices.uplink_gain, generators.paper(seed=8).devices.uplink_gain)


def test_clustered_scales_and_is_seeded():
    s = generators.clustered(100, 100, seed=3)
    assert s.n_devices == 10_000 and s.n_edges == 100
    assert len(s.d2d) == 100 * 100 * 99
    assert np.isfinite(s.devices.uplink_gain).all()
    t = generators.clustered(100, 100, seed=3)
    assert np.array_equal(s.d2d.gain, t.d2d.gain)


def test_heterogeneity_profile_draws_subsets():
    s = generators.clustered(5, 20, seed=0, profile=DeviceProfile(heterogeneity="device", p_modality=0.5, p_task=0.5))
    assert s.devices.modalities.any(axis=1).all() and s.devices.tasks.any(axis=1).all()
    assert not s.devices.modalities.all()  # some device lacks a modality
    assert (s.need[:, list(s.module_names).index("encoder:image")] == s.devices.modalities[:, 0]).all()
