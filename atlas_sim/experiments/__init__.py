"""The workbook's experiments: pure run functions, tables, plots and slider panels, so that
notebook cells stay a few lines long and everything is tested.

One module per notebook section, imported by module (``from atlas_sim.experiments import
retries``):

==========================================  =================================================
notebook                                    modules
==========================================  =================================================
00 welcome                                  ``welcome``
01 reliability: faults and retries          ``faults``, ``retries``
02 reliability: breakers and timeouts       ``breakers``
03 scalability: load and latency            ``load``, ``percentiles``, ``queueing``,
                                            ``omission``, ``tail``
live sections of 01, 02 and 03              ``live`` (the in-kernel service and its
                                            simulated twins)
==========================================  =================================================
"""

from __future__ import annotations

__all__: list[str] = []
