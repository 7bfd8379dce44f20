"""Test-only routes and a server factory for the service tests.

The extra routes are added to the app that ``create_app`` returns, so they sit behind the real
middleware stack: ``/test/boom`` raises, ``/test/slow`` counts its progress step by step,
``/test/gate`` holds requests in flight until ``/admin/test/release`` opens the gate (under
``/admin`` so that shedding never refuses the release).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import threading
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI

from atlas_sim.config import Settings
from atlas_sim.server_config import ServerConfig
from atlas_sim.service import LiveServer, create_app
from atlas_sim.workload import Distribution

_names = itertools.count()


@dataclass
class Probe:
    """What the test routes report back to the test thread."""

    steps: int = 0
    slow_cancelled: threading.Event = field(default_factory=threading.Event)
    slow_finished: bool = False
    at_gate: int = 0
    gate: asyncio.Event | None = None


def add_test_routes(app: FastAPI) -> Probe:
    probe = Probe()

    @app.get("/test/boom")
    async def boom() -> dict[str, Any]:
        raise RuntimeError("secret internal detail")

    @app.get("/test/slow")
    async def slow() -> dict[str, Any]:
        try:
            for _ in range(1000):
                probe.steps += 1
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            probe.slow_cancelled.set()
            raise
        probe.slow_finished = True
        return {"steps": probe.steps}

    @app.get("/test/gate")
    async def gate() -> dict[str, Any]:
        if probe.gate is None:
            probe.gate = asyncio.Event()  # made on the server's own loop
        probe.at_gate += 1
        await probe.gate.wait()
        return {"ok": True}

    @app.post("/admin/test/release")
    async def release() -> dict[str, Any]:
        if probe.gate is not None:
            probe.gate.set()
        return {"released": probe.at_gate}

    return probe


def server_config(settings: Settings | None = None, *,
                  dependency_latency: Distribution | None = None,
                  **fields: Any) -> ServerConfig:
    """``settings.server_config()`` (the live defaults) with ``fields`` replaced, and its
    dependency's latency if ``dependency_latency`` is given."""
    config = (settings or Settings()).server_config()
    if dependency_latency is not None:
        assert config.dependency is not None
        fields["dependency"] = dataclasses.replace(config.dependency, latency=dependency_latency)
    return dataclasses.replace(config, **fields)


_APP_OPTIONS = frozenset({"seed", "instance", "max_body_bytes", "allowed_hosts", "title"})


def start_server(settings: Settings | None = None, **options: Any) -> tuple[LiveServer, Probe]:
    """A started LiveServer (unique name) around ``create_app`` plus the test routes; options
    are ``create_app``'s (``seed=``, ``max_body_bytes=``...) or ``server_config``'s
    (``workers=2``, ``service_time=...``, ``dependency_latency=...``)."""
    settings = settings or Settings()
    app_options = {k: v for k, v in options.items() if k in _APP_OPTIONS}
    fields = {k: v for k, v in options.items() if k not in _APP_OPTIONS}
    app = create_app(settings, server=server_config(settings, **fields), **app_options)
    probe = add_test_routes(app)
    server = LiveServer(app, name=f"test-{next(_names)}").start()
    return server, probe
