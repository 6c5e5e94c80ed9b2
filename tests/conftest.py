"""Shared fixtures."""

import pytest

from hffm_opt.generators import paper_scenario


@pytest.fixture(scope="session")
def paper():
    return paper_scenario()


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread: tiny models on a shared 2-core machine run several times faster so."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
