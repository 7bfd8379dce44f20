"""A crash mid-load (issue 22, "Done when"): the service, in a child process on a SQLite or
PostgreSQL store, takes orders with ``Idempotency-Key`` from concurrent clients that retry; it is
killed with SIGKILL while orders are at work, started again on the same store, and every key is
retried. Every order acknowledged with a 2xx is stored exactly once; a retry of an acknowledged
key replays its answer (``Idempotent-Replayed: true``, the same body); a key never acknowledged is
applied once (or replayed, if its order was stored before the answer was lost); no key is stuck
in flight beyond its lease. The run itself is ``experiments.datasystem.crash_run`` (written
once: notebook 03b shows its table, ``crash_demo``)."""

from __future__ import annotations

import json

import pytest

from atlas_sim.experiments.datasystem import crash_run, crash_table

pytestmark = pytest.mark.live  # child processes, sockets on 127.0.0.1

KEYS = 60  # orders, one key each
KILL_AFTER = 15  # acknowledged orders before the crash


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_crash_mid_load_loses_no_acknowledged_order_and_applies_none_twice(
        backend, tmp_path, request):
    url = (f"sqlite:///{tmp_path / 'crash.sqlite3'}" if backend == "sqlite"
           else request.getfixturevalue("postgres_url"))
    run = crash_run(orders=KEYS, kill_after=KILL_AFTER, store_url=url, seed=0)

    assert len(run.acked) >= KILL_AFTER and len(run.answers) == KEYS
    assert run.cut, "no order was at work when the service was killed"
    for key, (_, first) in run.acked.items():  # acknowledged: replayed, the very answer
        _, again, replayed = run.answers[key]
        assert replayed, key
        assert again == first, key
    numbers = {key: json.loads(body)["order"] for key, (_, body, _) in run.answers.items()}
    assert len(set(numbers.values())) == KEYS  # one order per key, none shared
    assert run.orders == KEYS  # every key stored exactly once: nothing applied twice, none lost
    assert run.stored == {key: 1 for key in run.keys}

    table = crash_table(run)["keys"]
    assert table["duplicates"] == 0 and table["lost"] == 0
    assert table["stored once"] == KEYS
    assert table["acknowledged, replayed identically"] == table["acknowledged before the kill"]
    assert table["replayed after the restart"] + table["applied after the restart"] == KEYS
