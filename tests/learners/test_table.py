"""The multi-modal table: validation, rows and batches with absent modalities, device views, pre-encoded sources."""

import numpy as np
import pytest
import torch

from hffm_opt.learners.model import build_model
from hffm_opt.learners.specs import ModalitySpec, TaskSpec
from hffm_opt.learners.table import Batch, MultiModalDataset, MultiModalTable

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MODS = (ModalitySpec("a", "vector", (2,)), ModalitySpec("b", "vector", (3,), n_tokens=1))
TASKS = (TaskSpec("ab", 2, ("a", "b")), TaskSpec("any", 3))


def table(name="t"):
    """6 rows over 4 items of ``a`` and 3 of ``b``: rows 1 and 4 lack ``b``, row 2 lacks ``a``, row 5 has no label."""
    src = {"a": torch.arange(8, dtype=torch.float32).reshape(4, 2) + 1, "b": -torch.arange(9.0).reshape(3, 3) - 1}
    index = [[0, 0], [1, -1], [-1, 2], [3, 1], [2, -1], [0, 2]]
    labels = [[1, 0], [-1, 2], [-1, 1], [0, -1], [1, 1], [-1, -1]]
    return MultiModalTable(name, MODS, TASKS, src, index, labels)


def test_rows_hold_only_their_modalities():
    t = table()
    assert isinstance(t, MultiModalDataset) and len(t) == 6
    x, y = t[1]
    assert set(x) == {"a"} and torch.equal(x["a"], t.sources["a"][1]) and y == {"ab": -1, "any": 2}
    x, _ = t[2]
    assert set(x) == {"b"} and torch.equal(x["b"], t.sources["b"][2])
    assert t.present.tolist() == [[True, True], [True, False], [False, True], [True, True], [True, False],
                                  [True, True]]
    assert t.has_modalities().tolist() == [True, True] and t.label_counts().tolist() == [3, 4]


@pytest.mark.parametrize("index,labels,match", [
    ([[0, 0]], [[0, 0], [0, 0]], "labels.shape"),
    ([[0]], [[0, 0]], "index.shape"),
    ([[4, 0]], [[0, 0]], "index"),
    ([[0, -2]], [[0, 0]], "index"),
    ([[0, 0]], [[2, 0]], r"labels\[:, ab\]"),
])
def test_bad_tables_name_the_field(index, labels, match):
    src = {"a": torch.zeros(4, 2), "b": torch.zeros(3, 3)}
    with pytest.raises(ValueError, match=match):
        MultiModalTable("bad", MODS, TASKS, src, index, labels)
    with pytest.raises(ValueError, match=r"sources\[b\]"):
        MultiModalTable("bad", MODS, TASKS, {"a": torch.zeros(4, 2), "b": torch.zeros(3, 4)}, [[0, 0]], [[0, 0]])


def test_batch_zeroes_absent_rows_and_marks_them():
    t = table()
    b = t.batch([1, 2, 3])
    assert isinstance(b, Batch) and b.encoded == {}
    assert b.present["a"].tolist() == [True, False, True] and b.present["b"].tolist() == [False, True, True]
    assert torch.equal(b.inputs["a"][0], t.sources["a"][1]) and not b.inputs["a"][1].any()
    assert not b.inputs["b"][0].any() and torch.equal(b.inputs["b"][2], t.sources["b"][1])
    assert b.labels.tolist() == [[-1, 2], [-1, 1], [0, -1]]
    assert set(t.batch([1, 4]).inputs) == {"a"}  # no row has b: left out
    assert set(t.batch([1, 4], modalities=("a", "b")).inputs) == {"a", "b"}
    assert set(t.batch([0], modalities=("b",)).inputs) == {"b"}
    assert b.model_kwargs() == {"inputs": b.inputs, "present": b.present, "encoded": None}


def test_subset_shares_sources_and_restrict_is_what_a_device_sees():
    t = table()
    s = t.subset([3, 0], "s")
    assert s.name == "s" and s.sources["a"] is t.sources["a"] and s.index.tolist() == [[3, 1], [0, 0]]
    only_a = t.restrict(modalities=[True, False])
    # b gone; 'ab' labels need b, so they go; dropped: row 2 (b only), row 3 (only an 'ab' label), row 5 (none)
    assert not only_a.present[:, 1].any() and (only_a.labels[:, 0] == -1).all()
    assert only_a.index[:, 0].tolist() == [0, 1, 2] and only_a.labels[:, 1].tolist() == [0, 2, 1]
    no_any = t.restrict(tasks=[True, False])
    # only 'ab' labels of rows with both modalities survive (row 4's needs the b it lacks): rows 0 and 3
    assert no_any.index.tolist() == [[0, 0], [3, 1]] and no_any.labels.tolist() == [[1, -1], [0, -1]]


def test_loader_covers_every_row_once():
    t = table()
    seen = torch.cat([b.labels for b in t.loader(4, shuffle=True, seed=3)])
    assert len(seen) == 6 and sorted(map(tuple, seen.tolist())) == sorted(map(tuple, t.labels.tolist()))
    assert [len(b.labels) for b in t.loader(4)] == [4, 2]
    assert [len(b.labels) for b in t.loader(4, drop_last=True)] == [4]
    assert "rows=6" in repr(t)


def test_encoded_sources_give_the_same_forward_as_raw_ones():
    t = table()
    model = build_model(MODS, TASKS, seed=0, d_model=8, n_heads=2, d_ff=8, d_expert=8, n_experts=2)
    enc = t.with_encoded(model)  # both encoders frozen by default
    assert enc.encoded == ("a", "b") and enc.sources["a"].shape == (4, 2, 8) and enc.sources["b"].shape == (3, 1, 8)
    rows = np.arange(6)
    raw, pre = t.batch(rows), enc.batch(rows)
    assert set(pre.inputs) == set() and set(pre.encoded) == {"a", "b"}
    with torch.no_grad():
        want, got = model(**raw.model_kwargs()), model(**pre.model_kwargs())
    for task in want.logits:
        torch.testing.assert_close(got.logits[task], want.logits[task], rtol=1e-5, atol=1e-6)
    assert enc.with_encoded(model).encoded == ("a", "b")  # encoding twice changes nothing
    model.apply_freeze(("backbone",))
    with pytest.raises(ValueError, match="encoder:a is trainable"):
        t.with_encoded(model, ["a"])
