"""The contract suite's stores: one fixture, three backends (memory, SQLite on ``tmp_path``,
PostgreSQL on the ``postgres_url`` fixture's empty database, a live test: it needs a socket)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from atlas_sim.service.store import Store
from tests.service.store.support import store_maker

KINDS = [pytest.param("memory"), pytest.param("sqlite"),
         pytest.param("postgresql", marks=pytest.mark.live)]


@pytest.fixture(params=KINDS)
def make_store(request: pytest.FixtureRequest) -> Callable[..., Store]:
    """``make_store(**kwargs)``: a new store (not opened) on this test's one database."""
    return store_maker(request.param, request)


