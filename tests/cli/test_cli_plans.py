import json

import pytest

from hffm_opt.cli import main


def test_paper_json_has_the_documented_keys_and_values(capsys):
    assert main(["paper", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["method"], r["e_agg"]) for r in rows] == [("star", 1), ("hier", 2), ("hier", 8), ("edge", 200),
                                                        ("hier-d2d", 2), ("hier-d2d", 8), ("edge-d2d", 200)]
    for r in rows:
        assert set(r) == {"method", "e_agg", "latency_s", "energy_j", "latency_s_consistent", "energy_j_consistent"}
    assert rows[0]["latency_s"] == pytest.approx(12.10, rel=1e-3) and rows[0]["energy_j"] == pytest.approx(387.2, rel=1e-3)
    assert rows[2]["latency_s"] == pytest.approx(5.05, rel=1e-3) and rows[2]["energy_j"] == pytest.approx(71.35, rel=1e-3)


def test_paper_table_text(capsys):
    assert main(["paper"]) == 0
    out = capsys.readouterr().out
    assert "HF-FM+D2D" in out and "12.10" in out and "387.20" in out


def test_missing_and_invalid_scenario_exit_2(tmp_path, capsys):
    assert main(["paper", "--scenario", str(tmp_path / "nope.json")]) == 2
    assert "neither an embedded scenario" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["paper", "--scenario", str(bad)]) == 2
    assert "unreadable" in capsys.readouterr().err
    bad.write_text(json.dumps({"edge_servers": [], "devices": []}))
    assert main(["paper", "--scenario", str(bad)]) == 2
    assert "error" in capsys.readouterr().err


def test_schedule_save_then_evaluate(tmp_path, capsys):
    out = tmp_path / "plan.json"
    assert main(["schedule", "--scheduler", "hierarchical-d2d", "--e-agg", "8", "--out", str(out)]) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(["evaluate", "--plan", str(out)]) == 0
    both = json.loads(capsys.readouterr().out)
    assert both["consistent"]["energy_j"] == pytest.approx(first["energy_j"])
    assert main(["evaluate", "--plan", str(tmp_path / "missing.json")]) == 2
    assert "no such file" in capsys.readouterr().err
