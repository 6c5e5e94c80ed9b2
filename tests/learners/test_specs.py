"""Modality and task specs: validation, normalised fields, and the name lookups of :class:`SpecNames`."""

from dataclasses import dataclass

import pytest

from hffm_opt.learners.specs import ModalitySpec, SpecNames, TaskSpec


def test_modality_spec_accepts_images_and_vectors_and_stores_int_shapes():
    img = ModalitySpec("image", "image", [3.0, 64, 64], n_tokens=9)
    assert img.shape == (3, 64, 64) and all(type(s) is int for s in img.shape)
    vec = ModalitySpec("text_2", "vector", (384,), n_tokens=1, hidden=0, fixed=True)
    assert vec.shape == (384,) and vec.fixed and vec.hidden == 0
    assert ModalitySpec("v", "vector", (4,)) == ModalitySpec("v", "vector", [4])  # frozen value objects


@pytest.mark.parametrize("args,kwargs,match", [
    (("bad.name", "vector", (3,)), {}, "identifier"),
    (("2d", "vector", (3,)), {}, "identifier"),
    (("img", "image", (3, 8, 8)), {"n_tokens": 3}, "grid"),
    (("img", "image", (8, 8)), {"n_tokens": 4}, "channels"),
    (("vec", "vector", (2, 3)), {}, "dim"),
    (("aud", "audio", (16,)), {}, "kind"),
    (("vec", "vector", (3,)), {"n_tokens": 0}, "n_tokens"),
])
def test_modality_spec_rejects_what_no_encoder_can_take(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ModalitySpec(*args, **kwargs)


def test_task_spec_validation_and_requires_tuple():
    t = TaskSpec("vqa", 13, ["image", "text"])
    assert t.requires == ("image", "text") and TaskSpec("any", 2).requires == ()
    with pytest.raises(ValueError, match="n_classes"):
        TaskSpec("one", 1)
    with pytest.raises(ValueError, match="identifier"):
        TaskSpec("a-b", 2)


def test_spec_names_follow_spec_order():
    @dataclass
    class Holder(SpecNames):
        modalities: tuple
        tasks: tuple

    h = Holder((ModalitySpec("b", "vector", (1,)), ModalitySpec("a", "vector", (1,))),
               (TaskSpec("z", 2), TaskSpec("y", 3), TaskSpec("x", 2)))
    assert h.modality_names == ("b", "a") and h.task_names == ("z", "y", "x")
