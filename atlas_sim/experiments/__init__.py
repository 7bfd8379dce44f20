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
03b the data system: home timelines         ``timelines`` (DDIA's three approaches to home
                                            timelines, live on the store, cache and event
                                            log beside a simulated twin), ``datasystem``
                                            (pool exhaustion live and simulated, a crash
                                            mid-load, consumer lag)
live sections of 01, 02 and 03              ``live`` (the in-kernel service and its
                                            simulated twins); 03's section modules run
                                            their own live points with its helpers
==========================================  =================================================

A simulated experiment describes its server with a ``ServerConfig`` (``workers``, the c of
M/M/c; ``service_time``; admission limit, timeout, dependency), the very object the live
service is built from (``create_app(server=...)``), so a simulated twin of a live run is
``Scenario(server=<that object>, path=<the route>)``: nothing is translated between the worlds.
"""

from __future__ import annotations

__all__: list[str] = []
