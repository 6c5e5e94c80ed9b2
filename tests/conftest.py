"""Shared fixtures."""

import pytest

from hffm_opt.generators import paper_scenario


@pytest.fixture(scope="session")
def paper():
    return paper_scenario()
