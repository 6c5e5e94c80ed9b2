"""Availability (Bernoulli, trace files) and client sampling: the draws of their own seeded streams, strict
trace reading; the new TrainConfig fields are checked; History queries by metric."""

import math

import numpy as np
import pytest

from hffm_opt.errors import ConfigError
from hffm_opt.learners.history import History
from hffm_opt.learners.participation import Participation, read_trace, stream
from hffm_opt.learners.trainer import TrainConfig


def _trace(tmp_path, text):
    p = tmp_path / "trace.csv"
    p.write_text(text)
    return p


def test_trace_intervals_are_inclusive_and_one_based(tmp_path):
    p = _trace(tmp_path, "device,start_round,end_round\n0,1,2\n2,2,2\n0,4,5\n\n")
    who = Participation(3, trace=p)
    got = [who.available(r).tolist() for r in range(1, 7)]
    assert got == [[True, False, False], [True, False, True], [False, False, False], [True, False, False],
                   [True, False, False], [False, False, False]]
    assert not who.everyone and who.fingerprint() != ""


@pytest.mark.parametrize("text,match", [
    ("", "header"),
    ("dev,start_round,end_round\n0,1,2\n", "header"),
    ("device,start_round,end_round\n0,1\n", "line 2"),
    ("device,start_round,end_round\n0,x,2\n", "start_round = 'x'"),
    ("device,start_round,end_round\n3,1,2\n", r"device = 3: must be a device index in \[0, 3\)"),
    ("device,start_round,end_round\n-1,1,2\n", "device = -1"),
    ("device,start_round,end_round\n0,0,2\n", "start_round = 0"),
    ("device,start_round,end_round\n1,5,4\n", "end_round = 4: must be >= start_round = 5"),
    ("device,start_round,end_round\n1,1.5,4\n", "start_round = '1.5'"),
    ("device,start_round,end_round\n0,1,99999999999999999999\n", "end_round = 99999999999999999999: must be at most"),
])
def test_bad_traces_name_line_field_and_rule(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        read_trace(_trace(tmp_path, text), 3)


def test_missing_trace_file(tmp_path):
    with pytest.raises(ConfigError, match="availability_trace.*cannot be read"):
        read_trace(tmp_path / "nope.csv", 3)


def test_bernoulli_availability_is_the_availability_stream():
    p = np.array([0.2, 0.9, 0.5, 1.0])
    who = Participation(4, availability=p, seed=7)
    rng = np.random.default_rng(np.random.SeedSequence(7, spawn_key=(2,)))  # stream 2: availability
    for r in range(1, 4):
        assert who.available(r).tolist() == (rng.random(4) < p).tolist()
    assert Participation(4, availability=1.0).available(1).all() and Participation(4).everyone


def test_sampling_draws_ceil_of_the_fraction_from_the_eligible_devices():
    eligible = np.array([True, False, True, True, True, False, True])  # 5 eligible
    who = Participation(7, participation=0.5, seed=3)
    rng = stream(3, "sampling")
    for _ in range(3):
        got = who.sample(eligible)
        assert got.sum() == math.ceil(0.5 * 5) and not (got & ~eligible).any()
        want = np.zeros(7, bool)
        want[rng.choice(np.flatnonzero(eligible), size=3, replace=False)] = True
        assert got.tolist() == want.tolist()
    assert Participation(7, participation=0.3).sample(np.zeros(7, bool)).sum() == 0
    assert Participation(10, participation=0.3).sample(np.ones(10, bool)).sum() == 3  # 0.3 x 10 is 3, not 4


def test_streams_are_independent_of_the_minibatch_generator():
    a, b, c = (stream(0, n).random(3) for n in ("fading", "availability", "sampling"))
    base = np.random.default_rng(0).random(3)
    assert len({tuple(x) for x in (a, b, c, base)}) == 4


def test_state_round_trip_continues_the_same_draws():
    who = Participation(5, availability=0.5, participation=0.6, seed=1)
    who.available(1)
    saved = who.state()
    first = [who.available(2).tolist(), who.sample(np.ones(5, bool)).tolist()]
    again = Participation(5, availability=0.5, participation=0.6, seed=1)
    again.load_state(saved)
    assert [again.available(2).tolist(), again.sample(np.ones(5, bool)).tolist()] == first


@pytest.mark.parametrize("field,value", [
    ("edge_optimizer", "sgd"), ("cloud_optimizer", "adam"), ("server_lr", 0.0), ("server_lr", float("nan")),
    ("server_momentum", 1.0), ("server_momentum", -0.1), ("server_betas", (0.9,)), ("server_betas", (0.9, 1.0)),
    ("server_eps", 0.0), ("prox_mu", -1.0), ("prox_mu", float("inf")), ("fading", "fast"), ("availability", 1.5),
    ("availability", (0.5, -0.1)), ("availability", ()), ("participation", 0.0), ("participation", 1.2),
    ("eval_split", "train"), ("availability_trace", 3), ("rounds", 2.5),
])
def test_bad_config_values_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**{field: value})


def test_config_normalises_and_knows_when_rounds_differ(tmp_path):
    c = TrainConfig(availability=[0.5, 1.0], server_betas=[0.8, 0.9])
    assert c.availability == (0.5, 1.0) and c.server_betas == (0.8, 0.9) and c.dynamic
    assert not TrainConfig().dynamic and TrainConfig(fading="block").dynamic and TrainConfig(participation=0.5).dynamic
    assert TrainConfig(availability_trace=tmp_path / "t.csv").availability_trace == str(tmp_path / "t.csv")
    with pytest.raises(ConfigError, match="availability_trace"):
        TrainConfig(availability=0.5, availability_trace="t.csv")


def test_history_queries_by_metric(tmp_path):
    rec = [{"round": r, "global_round": r, "time_s": 10.0 * r, "energy_j": 2.0 * r,
            "bytes_by_tier": {"d2d": 0.0, "edge": 1.0, "cloud": 2.0}, "evaluated": True, "accuracy": acc,
            "accuracy_by_task": {"a": acc}, "served_accuracy": served, "served_accuracy_by_task": {"a": served},
            "personalised_accuracy": None}
           for r, acc, served in ((1, 40.0, 55.0), (2, 60.0, 50.0), (3, 70.0, 80.0))]
    h = History(rec)
    assert h.time_to(60.0) == 20.0 and h.time_to(60.0, metric="served_accuracy") == 30.0
    assert h.energy_to(52.0, metric="served_accuracy") == 2.0 and h.energy_to(52.0) == 4.0
    assert h.time_to(10.0, metric="personalised_accuracy") is None
    assert h.accuracy_at(time_s=25.0, metric="served_accuracy") == 50.0 and h.final("served_accuracy") == 80.0
    frame = h.to_frame()
    assert list(frame["served_a"]) == [55.0, 50.0, 80.0] and list(frame["acc_a"]) == [40.0, 60.0, 70.0]
    with pytest.raises(ConfigError, match="metric"):
        h.time_to(50.0, metric="loss")


def test_a_pipe_or_folder_is_refused_without_reading_it(tmp_path):
    """Reading a FIFO blocked until a writer came (train hung); a folder gave the OS's message."""
    import os

    os.mkfifo(tmp_path / "pipe.csv")
    for path in (tmp_path / "pipe.csv", tmp_path):
        with pytest.raises(ConfigError, match="not a regular file"):
            read_trace(path, 3)
