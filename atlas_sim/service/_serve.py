"""The child process of ``programs.ServiceProcess``: ``python -m atlas_sim.service._serve SPEC``.

SPEC is a pickle written by the parent into its private temporary directory: ``settings``,
``options`` (``create_app``'s keywords: ``server``, ``seed``, ``instance`` and, when given,
``store_url``), ``name``, ``port_file``, ``parent`` (the parent's PID) and ``stop_timeout``.
The child builds the app, serves it with a ``LiveServer`` on 127.0.0.1 port 0 (the same
server, connection guard and orderly stop as in a notebook), writes the port to ``port_file``
(written whole, then renamed: the parent never reads half a number), and serves until SIGTERM or
SIGINT, or until its parent is gone; then it stops the server and exits 0. Orphaned (the parent
died without stopping it: a notebook kernel killed), it also removes the parent's temporary
directory, which nobody else will.
"""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import sys
import threading
from pathlib import Path

#: Seconds between two looks at whether the parent still lives.
PARENT_CHECK = 0.5


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m atlas_sim.service._serve SPEC", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    spec = pickle.loads(Path(argv[1]).read_bytes())  # our own parent's file, mode 0700

    from .app import create_app
    from .server import LiveServer

    orphaned = False
    app = create_app(spec["settings"], **spec["options"])
    server = LiveServer(app, name=spec["name"], port=0,
                        stop_timeout=max(0.2, min(float(spec["stop_timeout"]) / 2, 5.0)))
    server.start()
    try:
        port_file = Path(spec["port_file"])
        partial = port_file.with_name(port_file.name + ".partial")
        partial.write_text(str(server.port))
        os.replace(partial, port_file)
        while not stop.wait(PARENT_CHECK):
            if os.getppid() != spec["parent"]:
                orphaned = True  # the parent died without stopping us: leave nothing behind
                break
    finally:
        server.stop()
        if orphaned:
            shutil.rmtree(Path(argv[1]).parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
