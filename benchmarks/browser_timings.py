"""Slider moves in the browser, from the browser tests' ``timings.json``: per notebook and per
panel, key press to new figure and table (median and 90th percentile, as the test saw it and by
the page's own clock), and each move split between the kernel (its steps, from the panels'
draw log) and the browser (comm, JupyterLab rendering the output, the image decoded and
painted: the page's time less the kernel's).

Run after the browser tests (``make browser``, or ``pytest tests/browser -k 02_``):

    .venv/bin/python benchmarks/browser_timings.py [build/browser/timings.json]
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

STEPS = ("run", "figure", "table", "png", "send")


def ms(value: float | None) -> str:
    return "-" if value is None else f"{1000 * value:.0f}"


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "build/browser/timings.json")
    notebooks: dict[str, Any] = json.loads(path.read_text())["notebooks"]
    print("per notebook, ms: key press to new figure and table, median / p90")
    print(f"{'notebook':<36}{'moves':>6}{'test saw':>14}{'in page':>14}{'kernel':>14}")
    for name, row in notebooks.items():
        if "slider_moves" not in row:
            continue
        cells = [f"{ms(row.get(f'{k}_median'))} / {ms(row.get(f'{k}_p90'))}"
                 for k in ("slider_to_output", "slider_to_paint_in_page", "kernel")]
        print(f"{name:<36}{row['slider_moves']:>6}" + "".join(f"{c:>14}" for c in cells))
    print("\nper panel, medians in ms: the kernel's steps, the browser's part, key press to paint")
    header = "".join(f"{s:>8}" for s in (*STEPS, "kernel", "browser", "in page", "p90"))
    print(f"{'panel':<50}{'moves':>6}{header}")
    for name, row in notebooks.items():
        panels: dict[str, list[dict[str, Any]]] = {}
        for move in row.get("slider_moves_each", []):
            panels.setdefault(f"{name[:2]} {move['panel']} {move['title'][:34]}", []).append(move)
        for panel, moves in panels.items():
            steps = [m["kernel_steps"] for m in moves if m.get("kernel_steps")]
            kernel = [m["kernel"] for m in moves if m.get("kernel") is not None]
            page = [m["in_page"] for m in moves if m.get("in_page") is not None]
            browser = [m["in_page"] - m["kernel"] for m in moves
                       if m.get("kernel") is not None and m.get("in_page") is not None]
            p90 = (statistics.quantiles(page, n=10, method="inclusive")[8] if len(page) > 1
                   else median(page))
            cells = [ms(median([s[step] for s in steps])) for step in STEPS]
            cells += [ms(median(kernel)), ms(median(browser)), ms(median(page)), ms(p90)]
            print(f"{panel:<50}{len(moves):>6}" + "".join(f"{c:>8}" for c in cells))


if __name__ == "__main__":
    main()
