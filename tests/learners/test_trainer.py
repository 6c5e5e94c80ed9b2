"""The hierarchical trainer: module-wise aggregation, masks, stragglers, tiers, clock, checkpoints, determinism."""

import dataclasses

import numpy as np
import pytest
import torch

from hffm_opt.evaluate import evaluate
from hffm_opt.learners.catalogue import module_catalogue
from hffm_opt.learners.local import local_train_reference, sample_device_batches
from hffm_opt.learners.setup import learning_setup
from hffm_opt.learners.table import MultiModalTable
from hffm_opt.learners.trainer import CHECKPOINT, FederatedData, History, TrainConfig, learning_key, train, train_plans
from hffm_opt.schedulers import schedule

pytestmark = pytest.mark.usefixtures("one_torch_thread")


CFG = TrainConfig(rounds=2, lr=5e-3, local_steps=2, batch_size=8, personalised=False)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """2 clusters x 3 devices, every device with both modalities and both tasks, a small synthetic model."""
    return learning_setup("synthetic", scenario="clustered", n_edges=2, devices_per_edge=3, heterogeneity="none",
                          alpha=0.5, benchmark_kwargs={"n_samples": 900},
                          model_config={"d_model": 16, "d_ff": 32, "d_expert": 16, "n_heads": 2},
                          pretrain_kwargs={"epochs": 1, "encoder_epochs": 0}, cache=False)


def _clusters(directory) -> dict[str, torch.Tensor]:
    return torch.load(directory / CHECKPOINT, weights_only=True)["clusters"]


def _run(setup, plan, directory, config=CFG, data=None):
    hist = train(setup.scenario, plan, data or setup.data, config, checkpoint_dir=directory)
    return hist, _clusters(directory)


def _with_labels_shuffled(data: FederatedData, u: int, seed: int = 1) -> FederatedData:
    """The same data with device u's training labels permuted (same rows, same counts)."""
    t = data.train[u]
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(len(t)))
    new = MultiModalTable(t.name, t.modalities, t.tasks, t.sources, t.index, t.labels[perm], t.encoded)
    train_tables = list(data.train)
    train_tables[u] = new
    return dataclasses.replace(data, train=tuple(train_tables))


def test_aggregation_is_the_hand_computed_module_wise_weighted_mean(setup, tmp_path):
    """One edge round, per-device updates by the plain per-device reference loop, then a by-hand weighted mean
    per cluster and module over the devices that trained it: the trainer (vmapped) gives the same numbers."""
    s, data = setup.scenario, setup.data
    names = s.module_names
    plan = schedule(s, "hierarchical", e_agg=4)
    x = plan.train.copy()
    x[0, names.index("head:t0")] = False  # device 0 keeps out of head:t0 and expert:1
    x[0, names.index("expert:1")] = False
    x[4, names.index("prompt:t1")] = False
    plan = plan.replace(train=x)
    config = dataclasses.replace(CFG, rounds=1)
    _, got = _run(setup, plan, tmp_path, config)

    model = data.model
    order = np.argsort(plan.association, kind="stable")  # the trainer draws batches in cluster order
    batches = sample_device_batches([data.train[u] for u in order], 2, 8, np.random.default_rng(config.seed))
    start = {n: p.detach().unsqueeze(0).repeat(len(order), *[1] * p.dim()) for n, p in model.named_parameters()
             if p.requires_grad}
    ref = local_train_reference(model, start, x[order], batches, 2, config.lr, optimizer="adam",
                                module_names=names).params
    rows = np.array([len(t) for t in data.train], float)
    per_task = np.stack([t.label_counts() for t in data.train]).astype(float)
    checked = set()
    for n, new in ref.items():
        k = names.index(model.module_of(n))
        kind, _, key = names[k].partition(":")
        w_all = per_task[:, model.task_names.index(key)] if kind in ("prompt", "head") else rows
        for e in range(s.n_edges):
            members = [i for i, u in enumerate(order) if plan.association[u] == e and x[u, k]]
            w = np.array([w_all[order[i]] for i in members])
            want = sum(float(wi) * new[i].double() for wi, i in zip(w, members)) / w.sum()
            torch.testing.assert_close(got[n][e].double(), want, rtol=1e-4, atol=1e-5)
            checked.add(names[k])
    assert {"head:t0", "expert:1", "prompt:t1", "gate", "adapter:0"} <= checked
    # the clusters trained apart (no cloud aggregation before round 4)
    assert not torch.equal(got["heads.t0.fc.weight"][0], got["heads.t0.fc.weight"][1])


def test_a_device_cannot_change_a_module_it_was_not_assigned(setup, tmp_path):
    """Within a round, the aggregate of a module does not depend on the data of a device not assigned to it.
    (In later rounds it may, through the modules that device did train: that is federated learning.)"""
    s = setup.scenario
    names = s.module_names
    plan = schedule(s, "hierarchical", e_agg=4)
    x = plan.train.copy()
    x[1, names.index("head:t0")] = False
    plan = plan.replace(train=x)
    one = dataclasses.replace(CFG, rounds=1)
    _, base = _run(setup, plan, tmp_path / "a", one)
    _, other = _run(setup, plan, tmp_path / "b", one, data=_with_labels_shuffled(setup.data, 1))
    e = int(plan.association[1])
    for n in base:
        module = setup.data.model.module_of(n)
        if module == "head:t0":
            assert torch.equal(base[n], other[n]), n  # device 1's data cannot reach head:t0
    # ... while the modules it trains do feel its data (the test would notice a leak)
    assert not torch.equal(base["heads.t1.fc.weight"][e], other["heads.t1.fc.weight"][e])


def test_stragglers_are_dropped_and_their_data_never_counts(setup, tmp_path):
    s = setup.scenario
    plan = schedule(s, "hierarchical", e_agg=2)
    cpu = plan.cpu_hz.copy()
    cpu[2] = 1.0  # device 2 computes at 1 Hz: far past any sensible deadline
    slow = plan.replace(cpu_hz=cpu)
    strag = slow.replace(deadline_s=60.0)
    assert evaluate(s, strag).stragglers.tolist() == [u == 2 for u in range(s.n_devices)]
    shuffled = _with_labels_shuffled(setup.data, 2)
    h, base = _run(setup, strag, tmp_path / "a")
    _, other = _run(setup, strag, tmp_path / "b", data=shuffled)
    assert all(r["participants"] == s.n_devices - 1 for r in h.records)
    assert all(torch.equal(base[n], other[n]) for n in base)
    # without the deadline device 2 takes part and its data does matter
    _, base2 = _run(setup, slow, tmp_path / "c")
    _, other2 = _run(setup, slow, tmp_path / "d", data=shuffled)
    assert any(not torch.equal(base2[n], other2[n]) for n in base2)


def test_tiers_decide_what_leaves_the_cluster(setup, tmp_path):
    s = setup.scenario
    # cluster-local experts: a catalogue marking them so, and a hierarchical plan (experts stop at the edge)
    local = s.replace(modules=module_catalogue(setup.data.model, cluster_local_experts=True))
    hier = schedule(local, "hierarchical", e_agg=2)
    h = train(local, hier, setup.data, CFG, checkpoint_dir=tmp_path / "h")
    got = _clusters(tmp_path / "h")
    model = setup.data.model
    for n, v in got.items():
        same = torch.equal(v[0], v[1])
        assert same == (not model.module_of(n).startswith("expert")), n
    assert h.records[-1]["global_round"] == 1 and h.records[-1]["bytes_by_tier"]["cloud"] > 0
    # edge only: nothing is ever shared between clusters
    _, edge = _run(setup, schedule(s, "edge-only", e_agg=2), tmp_path / "e")
    assert all(not torch.equal(v[0], v[1]) for v in edge.values())
    # star: one global average every round, so one round already leaves the clusters equal
    _, star = _run(setup, schedule(s, "star"), tmp_path / "s", dataclasses.replace(CFG, rounds=1))
    assert all(torch.equal(v[0], v[1]) for v in star.values())


def test_clock_and_energy_follow_the_evaluator(setup):
    s = setup.scenario
    plan = schedule(s, "hierarchical-d2d", e_agg=2)
    m = evaluate(s, plan)
    h = train(s, plan, setup.data, dataclasses.replace(CFG, rounds=4, eval_every=2, personalised=True))
    times = [r["time_s"] for r in h.records]
    energies = [r["energy_j"] for r in h.records]
    np.testing.assert_allclose(times, [m.round_end_s[0], m.period_latency_s, m.period_latency_s + m.round_end_s[0],
                                       2 * m.period_latency_s], rtol=1e-12)
    np.testing.assert_allclose(energies[-1], 2 * m.period_energy_j, rtol=1e-12)
    assert [r["global_round"] for r in h.records] == [1, 1, 2, 2]
    assert [r["evaluated"] for r in h.records] == [False, True, False, True]
    assert h.records[0]["accuracy"] is None and 0 <= h.records[1]["accuracy"] <= 100
    assert 0 <= h.records[1]["personalised_accuracy"] <= 100


def test_checkpoint_resume_is_bit_identical(setup, tmp_path):
    s = setup.scenario
    plan = schedule(s, "hierarchical", e_agg=2)
    config = dataclasses.replace(CFG, rounds=4)
    full = train(s, plan, setup.data, config, checkpoint_dir=tmp_path / "full")

    class Stop(Exception):
        pass

    def stop_at_3(record):
        if record["round"] == 3:
            raise Stop

    with pytest.raises(Stop):  # an exception of on_round stops training and propagates
        train(s, plan, setup.data, config, checkpoint_dir=tmp_path / "cut", on_round=stop_at_3)
    assert torch.load(tmp_path / "cut" / CHECKPOINT, weights_only=True)["round"] == 2
    assert [p.name for p in (tmp_path / "cut").iterdir()] == [CHECKPOINT]  # no temporary file left
    seen = []
    resumed = train(s, plan, setup.data, config, checkpoint_dir=tmp_path / "cut", on_round=seen.append)
    assert [r["round"] for r in seen] == [3, 4]
    assert resumed.to_json() == full.to_json()
    assert all(torch.equal(a, b) for a, b in zip(_clusters(tmp_path / "full").values(),
                                                 _clusters(tmp_path / "cut").values()))
    with pytest.raises(ValueError, match="checkpoint_dir"):  # a checkpoint of another run is not resumed
        train(s, plan.replace(e_agg=4), setup.data, config, checkpoint_dir=tmp_path / "cut")


def test_same_seed_same_history_other_seed_other_history(setup):
    s = setup.scenario
    plan = schedule(s, "hierarchical", e_agg=2)
    a = train(s, plan, setup.data, CFG)
    b = train(s, plan, setup.data, CFG)
    c = train(s, plan, setup.data, dataclasses.replace(CFG, seed=1))
    assert a.to_json() == b.to_json()
    assert a.to_json() != c.to_json()


def test_history_queries_and_files(tmp_path):
    rec = [{"round": r, "global_round": r, "time_s": 10.0 * r, "energy_j": 2.0 * r, "participants": 3,
            "bytes_by_tier": {"d2d": 0.0, "edge": 1.0, "cloud": 2.0}, "evaluated": acc is not None, "accuracy": acc,
            "accuracy_by_task": None if acc is None else {"a": acc}, "personalised_accuracy": acc}
           for r, acc in zip((1, 2, 3, 4), (40.0, None, 70.0, 65.0))]
    h = History(rec, {"scheduler": "x"})
    assert h.accuracy_at(time_s=25.0) == 40.0 and h.accuracy_at(energy_j=6.0) == 70.0
    assert h.accuracy_at(time_s=5.0) is None and h.accuracy_at() == 65.0 == h.final_accuracy
    assert h.time_to(60.0) == 30.0 and h.energy_to(60.0) == 6.0 and h.time_to(71.0) is None
    csv_path, json_path = h.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.csv", "history.json"]
    assert History.from_json(json_path.read_text()).records == rec
    frame = h.to_frame()
    assert list(frame["round"]) == [1, 2, 3, 4] and "acc_a" in frame and "bytes_cloud" in frame
    assert csv_path.read_text().splitlines()[0].startswith("round,")


def test_bad_inputs_name_the_field(setup):
    with pytest.raises(ValueError, match="rounds"):
        TrainConfig(rounds=0)
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="lbfgs")
    s = setup.scenario
    plan = schedule(s, "hierarchical", e_agg=2)
    other = s.replace(modules=s.modules[::-1])
    with pytest.raises(ValueError, match="scenario.modules"):
        train(other, plan, setup.data, CFG)


def test_plans_that_learn_alike_are_trained_once_and_keep_their_own_clock(setup):
    s = setup.scenario
    config = dataclasses.replace(CFG, rounds=4, eval_every=2)
    plans = [schedule(s, "hierarchical", e_agg=2, local_steps=2, batch_size=8),
             schedule(s, "greedy", e_agg=2, local_steps=2, batch_size=8),
             schedule(s, "hierarchical", e_agg=4, local_steps=2, batch_size=8)]
    keys = [learning_key(s, p, config) for p in plans]
    assert keys[0] == keys[1] != keys[2]  # the same learning (greedy only changes how it is aggregated), not E_agg
    calls = []
    shared = train_plans(s, plans, setup.data, config, progress=lambda i, plan: calls.append(i))
    assert calls == [0, 2]  # greedy was not trained again
    direct = [train(s, p, setup.data, config) for p in plans]
    assert [h.to_json() for h in shared] == [h.to_json() for h in direct]  # exactly what training each records
    assert shared[0].records[-1]["time_s"] != shared[1].records[-1]["time_s"]
    dynamic = dataclasses.replace(config, participation=0.5)
    assert learning_key(s, plans[0], dynamic) is None  # sampled rounds depend on each plan's own price


def test_eval_rows_scores_the_seeded_subset_before_the_last_round(setup):
    """Before the last round the evaluation scores the ``eval_rows`` subset (the same as a run whose whole test set
    is that subset), the last round the whole test set (the same as without a subset)."""
    from hffm_opt.learners.evaluation import seeded_rows
    from hffm_opt.learners.trainer import EVAL_SUBSET_STREAM

    s, data = setup.scenario, setup.data
    plan = schedule(s, "hierarchical", e_agg=2, local_steps=2, batch_size=8)
    k = len(data.global_test) // 3
    config = dataclasses.replace(CFG, rounds=3, eval_every=1)
    sub = data.global_test.subset(seeded_rows(len(data.global_test), k, (config.seed, EVAL_SUBSET_STREAM)), "sub")
    with_subset = train(s, plan, data, dataclasses.replace(config, eval_rows=k)).records
    full = train(s, plan, data, config).records
    on_subset = train(s, plan, dataclasses.replace(data, global_test=sub), config).records
    keys = ("accuracy", "served_accuracy", "accuracy_by_task")
    for r in (0, 1):
        assert {x: with_subset[r][x] for x in keys} == {x: on_subset[r][x] for x in keys}
    assert {x: with_subset[2][x] for x in keys} == {x: full[2][x] for x in keys}
    assert with_subset[0]["served_accuracy"] != full[0]["served_accuracy"]  # the subset is not the whole set
    with pytest.raises(ValueError, match="eval_rows = -1"):
        dataclasses.replace(CFG, eval_rows=-1)
