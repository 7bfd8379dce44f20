"""``Cluster``: N instances of the Atlas service in this process, started and stopped together.

Each instance is its own app (``create_app``) on its own ``LiveServer`` (its own port and
thread), with its own workers, queue and admission limiter built from its ``ServerConfig``, and
its own random streams: instance ``k`` is built with ``create_app(..., seed=seed,
instance=k)``, so it draws ``rng_streams(seed, instance=k)`` (instance 0: ``rng_streams(seed)``,
what a single service with that seed draws). The simulated twin is ``Scenario(server=configs)``
or ``Scenario(server=config, instances=n)`` with the same seed.

>>> with Cluster(ServerConfig(workers=2), 3, seed=1) as cluster:       # doctest: +SKIP
...     run = run_load(cluster.urls[0], instances=cluster.urls[1:],
...                    load=Load(rate=50, requests=100))

The instances share one store when their configs say so: the same ``StoreConfig(url=...)``, or
``StoreConfig(url=None)``, for which the cluster makes ONE temporary directory when it starts
(each instance is built with ``create_app(..., store_url=...)`` naming the SQLite file in it)
and removes it when it stops. So a retry sent to another instance replays the first answer.
With ``store=None`` each instance keeps its state in its own memory, as before.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import threading
from collections.abc import Sequence

from ..config import Settings
from ..server_config import ServerConfig
from ..validation import check_int
from .app import create_app
from .server import LiveServer
from .state import store_location

__all__ = ["Cluster"]

#: The most instances a cluster starts (each is a thread and a port in this process).
MAX_INSTANCES = 16

_clusters: dict[str, Cluster] = {}  # running clusters, by name
_clusters_lock = threading.Lock()


class Cluster:
    """N live instances of the service, one ``LiveServer`` each; a context manager.

    Args:
        server: one ``ServerConfig`` (then ``instances`` identical instances) or a sequence
            of them (one instance per config; ``instances`` must then be None or its length).
        instances: how many instances (1..16) of a single config; default 1.
        settings: the ``Settings`` every instance is built with (default ``Settings()``).
        seed: the seed of every instance's streams (instance ``k``: ``rng_streams(seed,
            instance=k)``), an integer >= 0.
        name: the instances' ``LiveServer`` names are ``"<name>-0"``, ``"<name>-1"``, ...;
            starting a cluster under a running name replaces those servers.

    ``start()`` (or ``with``) starts every instance and returns once all answer; if one fails
    to start, those already started are stopped before the error is raised; a running cluster
    of the same name is stopped first (a notebook cell run twice). ``stop()`` stops them all
    (safe to call twice), leaving no thread, port, task, connection or store directory.
    Raises ``ValueError`` naming the parameter for a config that is not a ``ServerConfig`` or
    a count out of range.
    """

    def __init__(self, server: ServerConfig | Sequence[ServerConfig],
                 instances: int | None = None, *, settings: Settings | None = None,
                 seed: int = 0, name: str = "atlas-cluster") -> None:
        if isinstance(server, ServerConfig):
            count = 1 if instances is None else check_int("instances", instances, low=1,
                                                          high=MAX_INSTANCES)
            configs: tuple[ServerConfig, ...] = (server,) * count
        elif isinstance(server, Sequence) and not isinstance(server, str):
            configs = tuple(server)
            check_int("len(server)", len(configs), low=1, high=MAX_INSTANCES)
            if instances is not None and instances != len(configs):
                raise ValueError(f"instances must be None or {len(configs)} (one per config) "
                                 f"with a sequence of configs, got {instances!r}")
            for k, config in enumerate(configs):
                if not isinstance(config, ServerConfig):
                    raise ValueError(f"server[{k}] must be a ServerConfig, got {config!r}")
        else:
            raise ValueError(f"server must be a ServerConfig or a sequence of them, got "
                             f"{server!r}")
        settings = Settings() if settings is None else settings
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        self.configs = configs
        self.settings = settings
        self.seed = check_int("seed", seed, low=0)
        self.name = name
        #: the temporary directory the instances with ``StoreConfig(url=None)`` share (made by
        #: ``start()``, removed by ``stop()``), and the SQLite URL they are given; None: none
        self.store_directory: str | None = None
        store_url = None
        if any(c.store is not None and c.store.url is None for c in configs):
            self.store_directory, store_url = store_location()
        self._directory_made = False
        #: the instances' servers, instance k at index k (built, not yet started)
        self.servers: tuple[LiveServer, ...] = tuple(
            LiveServer(create_app(settings, server=config, seed=self.seed, instance=k,
                                  store_url=store_url),
                       name=f"{name}-{k}")
            for k, config in enumerate(configs))

    @property
    def urls(self) -> list[str]:
        """The instances' base URLs, instance k at index k (``RuntimeError`` if stopped)."""
        return [server.url for server in self.servers]

    @property
    def running(self) -> bool:
        """True while every instance serves."""
        return all(server.running for server in self.servers)

    def start(self) -> Cluster:
        """Start every instance (see the class docstring); returns the cluster."""
        if self.running:
            return self
        with _clusters_lock:
            previous = _clusters.get(self.name)
        if previous is not None and previous is not self:
            previous.stop()
        with _clusters_lock:
            _clusters[self.name] = self
        try:
            if self.store_directory is not None and not self._directory_made:
                os.mkdir(self.store_directory, 0o700)
                self._directory_made = True
            for server in self.servers:
                server.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every instance, even if one fails to stop (the first such error is raised
        once all were tried)."""
        error: BaseException | None = None
        for server in self.servers:
            try:
                server.stop()
            except Exception as exc:
                error = error or exc
        if self._directory_made and self.store_directory is not None:
            # every instance has closed its store (its lifespan): the shared file can go
            shutil.rmtree(self.store_directory, ignore_errors=True)
            self._directory_made = False
        with _clusters_lock:
            if _clusters.get(self.name) is self:
                del _clusters[self.name]
        if error is not None:
            raise error

    def __len__(self) -> int:
        return len(self.servers)

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = ", ".join(s.url if s.running else "stopped" for s in self.servers)
        return f"Cluster(name={self.name!r}, {len(self.servers)} instances: {where})"


def _stop_clusters() -> None:
    """Stop every running cluster (at interpreter exit: their store directories go too)."""
    with _clusters_lock:
        clusters = list(_clusters.values())
    for cluster in clusters:
        with contextlib.suppress(Exception):
            cluster.stop()


atexit.register(_stop_clusters)
