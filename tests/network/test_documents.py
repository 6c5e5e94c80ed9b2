"""The document helpers' uniqueness rule (network.documents.first_repeat), against its definition."""

from hypothesis import given
from hypothesis import strategies as st

from hffm_opt.network.documents import first_repeat

ITEMS = st.lists(st.one_of(st.integers(-3, 3), st.sampled_from(["a", "b"]), st.lists(st.integers(0, 1), max_size=2)),
                 max_size=12)


@given(ITEMS)
def test_first_repeat_is_the_first_item_an_earlier_one_equals(items):
    expected = next((x for i, x in enumerate(items) if x in items[:i]), None)
    got = first_repeat(iter(items))  # any iterable, read once
    assert got == expected and (got is None) == (expected is None)

