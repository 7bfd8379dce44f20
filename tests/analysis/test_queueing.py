"""atlas_sim.analysis.queueing reproduces the project's reference table (computed independently,
see tests/reference/README.md)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from atlas_sim.analysis.queueing import MMc, erlang_c
from atlas_sim.analysis.stats import batch_means, replications

ROWS = list(csv.DictReader((Path(__file__).parents[1] / "reference" / "mmc_queue.csv").open()))


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"c{r['servers']}-rho{r['utilisation']}")
def test_formulas_match_the_reference_table(row):
    q = MMc(arrival_rate=float(row["arrival_rate"]), service_rate=float(row["service_rate"]),
            servers=int(row["servers"]))
    for name in ("P_wait", "Wq", "W", "L"):
        assert getattr(q, name) == pytest.approx(float(row[name]), abs=6e-5), name
    for name, p in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        assert q.quantile(p) == pytest.approx(float(row[name]), abs=6e-5), name


def test_textbook_special_cases():
    assert erlang_c(1, 0.8) == pytest.approx(0.8)  # M/M/1: P(wait) = rho
    q = MMc(arrival_rate=0.5, service_rate=1.0, servers=1)
    assert pytest.approx(2.0) == q.W and q.quantile(0.99) == pytest.approx(9.2103, abs=1e-4)


def test_an_unstable_queue_is_refused():
    with pytest.raises(ValueError, match="arrival_rate must be a number >= 0 and < 2"):
        MMc(arrival_rate=2.0, service_rate=1.0, servers=2)


def test_intervals():
    ci = replications([1.0, 2.0, 3.0], confidence=0.95)
    assert ci.mean == 2.0 and ci.half_width == pytest.approx(2.4841, abs=1e-4)
    assert ci.contains(0.5) and not ci.contains(4.5)
    assert batch_means(list(range(100)), batches=4).mean == pytest.approx(49.5)
    with pytest.raises(ValueError, match="number of values must be an integer >= 2"):
        replications([1.0])
