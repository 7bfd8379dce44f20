"""The workbook's experiments: pure run functions, plots and slider panels, one module per
notebook, so that notebook cells stay a few lines long and everything is tested."""

from __future__ import annotations

__all__: list[str] = []
