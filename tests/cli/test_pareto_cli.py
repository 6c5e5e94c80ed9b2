"""``hffm-opt pareto``: strict JSON, the files of --out, and bad flags refused before any work."""

import json

from hffm_opt.cli import main


def _toml(tmp_path):
    path = tmp_path / "small.toml"
    path.write_text('[generator]\nname = "clustered"\nn_edges = 1\ndevices_per_edge = 3\nseed = 5\n')
    return str(path)


def test_json_and_out(tmp_path, capsys):
    out = tmp_path / "front"
    code = main(["pareto", "--scenario", _toml(tmp_path), "--e-agg", "2", "--points", "3", "--schedulers",
                 "hierarchical,greedy", "--json", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0 and captured.err == ""
    doc = json.loads(captured.out)
    assert list(doc) == ["front", "heuristics"] and len(doc["front"]) == 3
    assert list(doc["front"][0]) == ["latency_s", "energy_j", "access_energy_j", "bound_j", "gap", "status"]
    assert [h["scheduler"] for h in doc["heuristics"]] == ["hierarchical", "greedy"]
    assert list(doc["heuristics"][0]) == ["scheduler", "latency_s", "energy_j", "access_energy_j"]
    assert sorted(p.name for p in out.iterdir()) == ["cells", "front.csv", "heuristics.csv", "pareto.png"]
    assert (out / "front.csv").read_text().splitlines()[0] == "latency_s,energy_j,access_energy_j,bound_j,gap,status"


def test_bad_flags_exit_2_with_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for argv in (["pareto", "--points", "1"], ["pareto", "--out", str(blocker)],
                 ["pareto", "--schedulers", "greedy,nope"], ["pareto", "--scenario", str(tmp_path / "none.json")]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "error" in err[0], argv
