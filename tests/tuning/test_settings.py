"""Tuning settings (hffm_opt.tuning.settings): the TOML file over the defaults, every error naming field, value and
rule, the search space with scheduler options only where a scheduler takes them, the digest that guards resumes."""

from __future__ import annotations

from pathlib import Path

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from tuning.tiny_study import tiny_config

from hffm_opt.tuning import DEFAULTS, TuneConfigError, load_settings, settings_from_dict, takes_option

REPO = Path(__file__).resolve().parents[2]


def test_settings_errors_name_field_value_and_rule():
    with pytest.raises(TuneConfigError, match=r"\[search\].lr = \[0.0, 0.1\]: a log-scaled range needs low > 0"):
        settings_from_dict({"search": {"lr": [0.0, 0.1]}})
    with pytest.raises(TuneConfigError, match=r"config section = 'serach'"):
        settings_from_dict({"serach": {}})
    with pytest.raises(TuneConfigError, match=r"\[defaults\].e_agg = 99: must lie in the search space"):
        settings_from_dict({"defaults": {"scheduler": "hierarchical", "e_agg": 99, "deadline_factor": 1.2,
                                         "lr": 3e-3, "local_steps": 1}})
    with pytest.raises(TuneConfigError, match=r"\[search\].options.w_X = \[0.1, 1.0\]: no scheduler"):
        settings_from_dict({"search": {"options": {"w_X": [0.1, 1.0]}}})
    with pytest.raises(TuneConfigError, match=r"\[budget\].time_s = -1"):
        settings_from_dict({"budget": {"time_s": -1}})
    with pytest.raises(TuneConfigError, match=r"\[study\].grace_s = 5: must exceed \[study\].heartbeat_s = 5"):
        settings_from_dict({"study": {"heartbeat_s": 5, "grace_s": 5}})
    with pytest.raises(TuneConfigError, match=r"\[setup\].n_edgez = 2: unknown key"):
        settings_from_dict({"setup": {"n_edgez": 2}})


def test_a_scheduler_options_range_holds_only_values_the_scheduler_accepts_of_its_type():
    options = {"coverage": {"choices": ["full", "cluster"]}}
    with pytest.raises(TuneConfigError, match=r"\[search\].options.w_U = \[-1.0, 10.0\]: every value in the range "
                                              r"must be valid \(w_U = -1.0: must be a finite number >= 0\)"):
        settings_from_dict({"search": {"options": {**options, "w_U": [-1.0, 10.0]}}})
    with pytest.raises(TuneConfigError, match=r"\[search\].options.min_trainers = \[0, 3\]: must be integers >= 1"):
        settings_from_dict({"search": {"options": {**options, "min_trainers": [0, 3]}}})
    space = settings_from_dict({"search": {"options": {**options, "min_trainers": [1, 3], "w_U": [0.0, 10.0]}}}).space
    assert isinstance(space["min_trainers"], IntDistribution)  # an integer option is drawn as an integer
    assert isinstance(space["w_U"], FloatDistribution) and not space["w_U"].log  # low 0: a linear scale


def test_choices_and_schedulers_are_each_given_once_and_every_choice_is_valid():
    """A repeated scheduler or choice would be sampled more often, an invalid choice fail (or pass as truthy) in a
    trial: both are refused when the settings load."""
    with pytest.raises(TuneConfigError, match=r"\[search\].schedulers = \['greedy', 'star', 'greedy'\]: 'greedy' is "
                                              r"given twice"):
        settings_from_dict({"search": {"schedulers": ["greedy", "star", "greedy"], "options": {}}})
    with pytest.raises(TuneConfigError, match=r"\[search\].options.edge_tiers = \{'choices': \[False, True, True\]\}: "
                                              r"each choice once"):
        settings_from_dict({"search": {"options": {"edge_tiers": {"choices": [False, True, True]}}}})
    with pytest.raises(TuneConfigError, match=r"\[search\].options.edge_tiers = \{'choices': \['yes'\]\}: every choice "
                                              r"must be valid \(edge_tiers = 'yes': must be true or false\)"):
        settings_from_dict({"search": {"options": {"edge_tiers": {"choices": ["yes"]}}}})
    with pytest.raises(TuneConfigError, match=r"every choice must be valid \(coverage = 'clusterz'"):
        settings_from_dict({"search": {"options": {"coverage": {"choices": ["full", "clusterz"]}}}})
    space = settings_from_dict({"search": {"options": {"edge_tiers": {"choices": [False, True]}}}}).space
    assert space["edge_tiers"] == CategoricalDistribution((False, True))


def test_toml_file_is_merged_over_the_defaults(tmp_path):
    s = load_settings(tiny_config(tmp_path, time_s=0.7, max_rounds=5))
    assert s.setup["benchmark"] == "synthetic" and s.setup["n_edges"] == 2
    assert s.budget == {"time_s": 0.7, "max_rounds": 5}
    assert s.study["heartbeat_s"] == 1 and s.study["seed"] == DEFAULTS["study"]["seed"]  # unset keys keep defaults
    assert s.score == DEFAULTS["score"] and s.train == DEFAULTS["train"]
    assert s.space["scheduler"] == CategoricalDistribution(("hierarchical", "greedy", "star"))
    assert s.space["e_agg"] == IntDistribution(1, 4)
    assert s.space["lr"] == FloatDistribution(1e-4, 3e-2, log=True)
    assert s.space["deadline_factor"] == FloatDistribution(0.5, 1.2, log=False)
    assert s.defaults == {"scheduler": "hierarchical", "e_agg": 2, "deadline_factor": 1.2, "lr": 3e-3,
                          "local_steps": 1}


def test_missing_or_broken_toml_names_the_config_flag(tmp_path):
    with pytest.raises(TuneConfigError, match=r"--config = '.*nowhere.toml': no such file"):
        load_settings(tmp_path / "nowhere.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[budget\ntime_s = 1\n")
    with pytest.raises(TuneConfigError, match=r"--config = '.*broken.toml': not valid TOML"):
        load_settings(broken)


def test_options_join_the_space_only_through_a_scheduler_that_takes_them():
    assert takes_option("optimal", "target_latency_s") and not takes_option("hierarchical", "target_latency_s")
    assert not takes_option("no-such-scheduler", "seed")
    core = {"e_agg": 2, "deadline_factor": 1.2, "lr": 3e-3, "local_steps": 1}
    search = {"schedulers": ["hierarchical", "optimal"], "options": {"target_latency_s": [0.5, 2.0],
                                                                      "solver": {"choices": ["highs"]}}}
    s = settings_from_dict({"search": search, "defaults": {"scheduler": "hierarchical", **core}})
    assert s.options == ("target_latency_s", "solver")
    assert s.space["target_latency_s"] == FloatDistribution(0.5, 2.0, log=True)  # low > 0: log scale
    assert s.space["solver"] == CategoricalDistribution(("highs",))
    with pytest.raises(TuneConfigError, match=r"\[defaults\].target_latency_s = None: missing: the default scheduler "
                                              r"takes it \(scheduler 'optimal'\)"):
        settings_from_dict({"search": search, "defaults": {"scheduler": "optimal", "solver": "highs", **core}})
    with pytest.raises(TuneConfigError, match=r"\[defaults\].solver = 'highs': the default scheduler does not take it"):
        settings_from_dict({"search": search, "defaults": {"scheduler": "hierarchical", "solver": "highs", **core}})
    with pytest.raises(TuneConfigError, match=r"\[search\].options.e_agg = \[1, 2\]: is set by the tuner"):
        settings_from_dict({"search": {"options": {"e_agg": [1, 2]}}})


def test_digest_is_that_of_the_settings_not_of_the_file():
    shipped = load_settings(REPO / "experiments" / "closed_loop" / "config.toml")  # says it repeats DEFAULTS
    assert shipped.digest == settings_from_dict({}).digest == load_settings(None).digest
    assert settings_from_dict({"budget": {"max_rounds": 17}}).digest != shipped.digest
    assert settings_from_dict({"study": {"seed": 1}}).digest != shipped.digest


def test_w_u_is_searched_only_with_coverage_cluster():
    import optuna

    from hffm_opt.tuning.objective import suggest

    s = settings_from_dict({})
    assert "optimal" in s.space["scheduler"].choices and {"coverage", "w_U", "edge_tiers"} <= set(s.space)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    seen = set()
    for _ in range(60):
        choice = suggest(study.ask(), s)
        if choice["scheduler"] == "optimal":
            assert ("w_U" in choice) == (choice["coverage"] == "cluster"), choice
            seen.add(choice["coverage"])
        else:
            assert not {"coverage", "w_U", "edge_tiers"} & set(choice), choice
    assert seen == {"full", "cluster"}
    with pytest.raises(TuneConfigError, match=r"\[search\].options.w_U = \[1.0, 10.0\]: needs "
                                              r"\[search\].options.coverage with the choice 'cluster'"):
        settings_from_dict({"search": {"options": {"w_U": [1.0, 10.0], "coverage": {"choices": ["full"]}}}})
    core = {"e_agg": 2, "deadline_factor": 1.2, "lr": 3e-3, "local_steps": 1}
    full = settings_from_dict({"defaults": {"scheduler": "optimal", "coverage": "full", "edge_tiers": False, **core}})
    assert "w_U" not in full.defaults
    with pytest.raises(TuneConfigError, match=r"\[defaults\].w_U = None: missing"):
        settings_from_dict({"defaults": {"scheduler": "optimal", "coverage": "cluster", "edge_tiers": False, **core}})


def test_a_config_is_toml_whatever_the_case_of_its_suffix_and_else_says_it_was_read_as_json(tmp_path):
    """config.TOML is TOML; a config named otherwise is read as JSON, and the error says why (it said only 'not
    valid JSON' for a TOML file named config.cfg)."""
    upper = tmp_path / "study.TOML"
    upper.write_text('[budget]\ntime_s = 50.0\n')
    assert load_settings(upper).budget["time_s"] == 50.0
    other = tmp_path / "study.cfg"
    other.write_text('[budget]\ntime_s = 50.0\n')
    with pytest.raises(TuneConfigError, match=r"study.cfg' \(read as JSON: its name does not end in \.toml\): not "
                                              r"valid JSON"):
        load_settings(other)
