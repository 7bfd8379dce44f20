"""Speed of the live service: middleware cost, load-generator accuracy, server stop time.

Measures, in one run:

1. Throughput (requests/s) of the live service's full pure-ASGI stack (``create_app``) against a
   bare FastAPI app serving the same two routes without it: ``GET /health`` and
   ``GET /api/work?service_time=0`` (Atlas with ``--workers`` work slots, more than the
   connections, so nobody queues for a slot). One method, pinned: each app is its own uvicorn
   process pinned to core 0 (``taskset -c 0``), the load is ``wrk -t1 -c<connections>``
   pinned to core 1; each sample is a 1 s warm-up and ``--seconds`` measured; the apps
   alternate (order rotated each round), ``--repeats`` rounds; reported: medians, and the
   ratio Atlas/bare of each round's pair (and their median). Target (recorded, not asserted):
   >= 0.95 on both paths. ``--base /work/wt-base`` adds a third server, Atlas from that
   checkout (``PYTHONPATH``), so a change and main are measured A/B in one quiet run;
   ``--teaching`` adds the same layers written as BaseHTTPMiddleware
   (``atlas_sim.service.teaching``). Needs ``wrk`` and ``taskset`` (Debian: ``wrk``,
   ``util-linux``) and 2 cores; without them this part says so and is skipped.
2. In process, no HTTP: microseconds per request of each app called directly as ASGI with a
   synthetic scope (thread CPU time, so other processes on a shared machine count less),
   bare and Atlas interleaved, ``--rounds`` rounds, minimum of the rounds' means; and each
   layer's cost (the stack with that layer left out). Each checkout in its own process.
3. The open-loop generator (``run_load``) holding 500 requests/s for 10 s against the service
   in this process: send lag p50/p99/max, in the same process and split over 1 and 2 child
   processes (``processes=``).
   Target: p99 send lag < 5 ms.
4. ``LiveServer.stop()`` duration, idle and with a request in flight.

Usage::

    python benchmarks/bench_service.py                  # everything, markdown on stdout
    python benchmarks/bench_service.py --output /tmp/service.md   # then into BENCHMARKS.md
    python benchmarks/bench_service.py --skip-generator --skip-stop --base /work/wt-base
                                                        # middleware only, A/B against main
    python benchmarks/bench_service.py --skip-throughput --generator-repeats 5   # generator only
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse

HERE = Path(__file__).resolve()
TREE = HERE.parents[1]  # this checkout
PATHS = (("/health", ""), ("/api/work", "service_time=0"))


# -- the apps (importable from any checkout: only create_app, Settings, ServerConfig) ---------

def bare_app() -> FastAPI:
    """A bare FastAPI app with the two measured routes, answering as Atlas's do: ``/health``
    the same dict (same annotation, so the same serializer), ``/api/work`` the same query
    parameter, a sleep of ``service_time`` and a JSON body with a ``Server-Timing`` header."""
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/work")
    async def work(service_time: Annotated[float | None, Query(
            ge=0, le=60, allow_inf_nan=False)] = None) -> JSONResponse:
        start = time.perf_counter()
        await asyncio.sleep(service_time or 0)
        took = time.perf_counter() - start
        return JSONResponse({"request_id": None, "queue": 0.0, "work": took},
                            headers={"Server-Timing": f"work;dur={took * 1e3:.3f}"})

    return app


def atlas_app(workers: int) -> FastAPI:
    """``create_app`` with ``workers`` work slots and shedding far above the connections."""
    from atlas_sim.config import Settings
    from atlas_sim.service import create_app

    settings = Settings(load_shedding_max_concurrent=10_000)
    return create_app(settings, server=dataclasses.replace(settings.server_config(),
                                                           workers=workers))


def stackless_app(workers: int) -> FastAPI:
    """``atlas_app`` without its middleware stack: Atlas's own routes, handlers and state, so
    Atlas / this is the stack's cost alone (on ``/api/work`` the bare app's handler does less
    than Atlas's: no work station, no input check)."""
    app = atlas_app(workers)
    app.user_middleware = []
    return app


def teaching_app() -> FastAPI:
    from atlas_sim.config import Settings
    from atlas_sim.service.teaching import add_base_http_middleware_stack

    return add_base_http_middleware_stack(bare_app(), Settings(load_shedding_max_concurrent=10_000))


def make_app(kind: str, workers: int) -> FastAPI:
    return {"bare": bare_app, "atlas": lambda: atlas_app(workers),
            "stackless": lambda: stackless_app(workers), "teaching": teaching_app}[kind]()


def serve(kind: str, port: int, workers: int) -> None:
    """Run one app under uvicorn in this process (``--serve``; the parent pins it)."""
    import uvicorn

    uvicorn.run(make_app(kind, workers), host="127.0.0.1", port=port, log_level="warning",
                access_log=False)


# -- 1. throughput: pinned uvicorn processes, pinned wrk --------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen


def start_server(name: str, kind: str, tree: Path, workers: int, core: int) -> Server:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(tree)}
    process = subprocess.Popen(
        ["taskset", "-c", str(core), sys.executable, str(HERE), "--serve", kind,
         "--port", str(port), "--workers", str(workers)],
        env=env, cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/health", trust_env=False, timeout=1).status_code == 200:
                return Server(name, url, process)
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"{name} did not start: "
                               f"{process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        time.sleep(0.1)


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


def wrk_rps(url: str, seconds: float, connections: int, core: int) -> float:
    out = subprocess.run(
        ["taskset", "-c", str(core), "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", url],
        capture_output=True, text=True, check=True,
    ).stdout
    match = re.search(r"Requests/sec:\s*([\d.]+)", out)
    if not match:
        raise RuntimeError(f"could not read wrk's output:\n{out}")
    errors = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    if errors:
        raise RuntimeError(f"wrk saw {errors.group(1)} error answers from {url}")
    return float(match.group(1))


def pinned_throughput(args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    """{path: {server name: requests/s per round}}."""
    apps = [("bare FastAPI", "bare", TREE), ("Atlas (this checkout)", "atlas", TREE),
            ("Atlas without its stack", "stackless", TREE)]
    if args.base:
        apps.append((f"Atlas ({args.base})", "atlas", Path(args.base).resolve()))
    if args.teaching:
        apps.append(("BaseHTTPMiddleware stack", "teaching", TREE))
    servers = []
    try:
        for name, kind, tree in apps:
            servers.append(start_server(name, kind, tree, args.workers, core=0))
        rates: dict[str, dict[str, list[float]]] = {}
        for path, query in PATHS:
            target = path + (f"?{query}" if query else "")
            rates[target] = {s.name: [] for s in servers}
            for r in range(args.repeats):
                for server in servers[r % len(servers):] + servers[:r % len(servers)]:
                    url = server.url + target
                    wrk_rps(url, 1, args.connections, core=1)  # warm-up, not counted
                    rates[target][server.name].append(
                        wrk_rps(url, args.seconds, args.connections, core=1))
        return rates
    finally:
        for server in servers:
            stop_server(server)


def throughput_report(args: argparse.Namespace) -> list[str]:
    lines = ["## Middleware cost: throughput, pinned", ""]
    missing = [tool for tool in ("wrk", "taskset") if shutil.which(tool) is None]
    if missing or (os.cpu_count() or 1) < 2:
        why = (f"{' and '.join(missing)} not found (Debian: apt-get install wrk util-linux)"
               if missing else "fewer than 2 CPUs")
        return [*lines, f"Skipped: {why}; the in-process numbers below still apply.", ""]
    rates = pinned_throughput(args)
    lines += [f"Each app its own uvicorn process on core 0, `wrk -t1 -c{args.connections} "
              f"-d{args.seconds:g}s` on core 1 after a 1 s warm-up; apps alternated, order "
              f"rotated, {args.repeats} rounds. Atlas: `create_app` with {args.workers} "
              "workers, shedding limit 10000. Ratio: to bare FastAPI in the same round.", ""]
    for target, by_app in rates.items():
        bare, stackless = by_app["bare FastAPI"], by_app["Atlas without its stack"]
        lines += [f"`GET {target}`", "",
                  "| app | requests/s (median) | samples | ratio to bare per round "
                  "| median ratio to bare | median ratio to Atlas without its stack |",
                  "|---|---|---|---|---|---|"]
        for name, values in by_app.items():
            ratios = [v / b for v, b in zip(values, bare, strict=True)]
            to_stackless = [v / b for v, b in zip(values, stackless, strict=True)]
            lines.append(f"| {name} | {statistics.median(values):.0f} | "
                         f"{', '.join(f'{v:.0f}' for v in values)} | "
                         f"{', '.join(f'{x:.3f}' for x in ratios)} | "
                         f"{statistics.median(ratios):.3f} | "
                         f"{statistics.median(to_stackless):.3f} |")
        lines.append("")
    lines += ["Target: Atlas / bare >= 0.95 on both paths. \"Atlas without its stack\": the "
              "same app with no middleware (Atlas's routes, handlers and state), so the last "
              "column is the stack's own cost; on `/api/work` Atlas's handler also does more "
              "than the bare one (a work-station slot, the input check, a drawn time).", ""]
    return lines


# -- 2. in process: the app called as ASGI ----------------------------------------------------

LAYERS = ("RequestIDMiddleware", "TimeoutMiddleware", "MetricsMiddleware",
          "LoopbackGuardMiddleware", "ErrorHandlingMiddleware", "LoadSheddingMiddleware")


def _scope(path: str, query: str) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
            "query_string": query.encode(), "root_path": "",
            "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"),
                        (b"accept", b"*/*")],
            "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000), "state": {}}


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: dict[str, Any]) -> None:
    return None


async def _per_request_us(app: Any, path: str, query: str, n: int) -> float:
    start = time.thread_time()
    for _ in range(n):
        await app(_scope(path, query), _receive, _send)
    return (time.thread_time() - start) / n * 1e6


def in_process(workers: int, rounds: int, n: int = 200) -> dict[str, dict[str, float]]:
    """{path: {app: us per request}}: bare, Atlas, Atlas without its stack, and Atlas without
    each layer."""
    def without(layer: str) -> FastAPI:
        app = atlas_app(workers)
        app.user_middleware = [m for m in app.user_middleware
                              if getattr(m.cls, "__name__", "") != layer]
        return app

    apps: dict[str, Any] = {"bare": bare_app(), "atlas": atlas_app(workers),
                            "stackless": stackless_app(workers)}
    present = {getattr(m.cls, "__name__", "") for m in apps["atlas"].user_middleware}
    for layer in LAYERS:
        if layer in present:
            apps[f"without {layer}"] = without(layer)

    async def run() -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for path, query in PATHS:
            for app in apps.values():
                await _per_request_us(app, path, query, n)  # warm-up
            samples: dict[str, list[float]] = {name: [] for name in apps}
            for _ in range(rounds):
                for name, app in apps.items():
                    samples[name].append(await _per_request_us(app, path, query, n))
            out[path + (f"?{query}" if query else "")] = {k: min(v) for k, v in samples.items()}
        return out

    return asyncio.run(run())


def in_process_report(args: argparse.Namespace) -> list[str]:
    trees = [("this checkout", TREE)] + ([(args.base, Path(args.base).resolve())]
                                         if args.base else [])
    results = {}
    for label, tree in trees:
        out = subprocess.run(
            [sys.executable, str(HERE), "--in-process-json", "--workers", str(args.workers),
             "--rounds", str(args.rounds)],
            env={**os.environ, "PYTHONPATH": str(tree)}, cwd=tree,
            capture_output=True, text=True, check=True).stdout
        results[label] = json.loads(out.strip().splitlines()[-1])
    lines = ["## Middleware cost: in process, per request", "",
             "Each app called as ASGI with a synthetic GET scope and a no-op send; thread CPU "
             f"time per request, minimum over {args.rounds} interleaved rounds of 200 requests; "
             "each checkout in its own process. Layer: Atlas minus Atlas without it.", ""]
    for label, by_path in results.items():
        lines += [f"{label}:", "", "| path | bare us | Atlas us | Atlas - bare us | "
                  "Atlas - Atlas without its stack us | "
                  + " | ".join(layer.removesuffix("Middleware") for layer in LAYERS) + " |",
                  "|---" * (5 + len(LAYERS)) + "|"]
        for target, us in by_path.items():
            layers = [f"{us['atlas'] - us[f'without {layer}']:.1f}"
                      if f"without {layer}" in us else "-" for layer in LAYERS]
            lines.append(f"| `{target}` | {us['bare']:.1f} | {us['atlas']:.1f} | "
                         f"{us['atlas'] - us['bare']:.1f} | "
                         f"{us['atlas'] - us['stackless']:.1f} | " + " | ".join(layers) + " |")
        lines.append("")
    return lines


# -- generator accuracy and stop time --------------------------------------------------------

def generator_lag(rate: float, seconds: float, processes: int) -> dict[str, float]:
    from atlas_sim.config import Settings
    from atlas_sim.policies import ClientPolicy
    from atlas_sim.service import LiveServer, create_app, run_load
    from atlas_sim.workload import Distribution, Load

    settings = Settings(http_timeout=5)
    app = create_app(settings, server=dataclasses.replace(
        settings.server_config(), workers=64, service_time=Distribution(mean=0.005)))
    with LiveServer(app, name="bench-load") as server:
        start = time.perf_counter()
        result = run_load(server.url, load=Load(rate=rate, duration=seconds),
                          client=ClientPolicy(timeout=5), seed=0, drain_timeout=10,
                          processes=processes, progress=False)
        wall = time.perf_counter() - start
    s = result.summary()
    return {"requests": s["requests"], "ok": float(result.requests["ok"].mean()),
            "p50": s["p50"], "p99": s["p99"], "wall": wall,
            "lag_p50": result.meta["send_lag_p50"], "lag_p99": result.meta["send_lag_p99"],
            "lag_max": result.meta["send_lag_max"]}


def stop_durations(times: int) -> dict[str, list[float]]:
    from atlas_sim.service import LiveServer, create_app

    out: dict[str, list[float]] = {"idle": [], "request in flight": []}
    for _ in range(times):
        server = LiveServer(create_app(), name="bench-stop").start()
        start = time.perf_counter()
        server.stop()
        out["idle"].append(time.perf_counter() - start)

        server = LiveServer(create_app(), name="bench-stop").start()
        hanging = threading.Thread(
            target=lambda url=server.url: _ignore_errors(
                httpx.get, url + "/api/work?service_time=30", trust_env=False, timeout=60),
            daemon=True)
        hanging.start()
        time.sleep(0.2)
        start = time.perf_counter()
        server.stop()
        out["request in flight"].append(time.perf_counter() - start)
        hanging.join(5)
    return out


def _ignore_errors(fn, *args, **kwargs) -> None:
    with contextlib.suppress(httpx.HTTPError):
        fn(*args, **kwargs)


# -- report ----------------------------------------------------------------------------------

def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    packages = ", ".join(f"{p} {version(p)}" for p in
                         ("fastapi", "starlette", "uvicorn", "httpx", "prometheus-client"))
    return (f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} logical CPUs; "
            f"Python {platform.python_version()}; {packages}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="per throughput sample")
    parser.add_argument("--repeats", type=int, default=3, help="throughput rounds")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=64,
                        help="Atlas's work slots (more than --connections)")
    parser.add_argument("--base", help="another checkout whose Atlas is measured too "
                        "(e.g. /work/wt-base)")
    parser.add_argument("--teaching", action="store_true",
                        help="also measure the BaseHTTPMiddleware stack")
    parser.add_argument("--rounds", type=int, default=30, help="in-process rounds")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-in-process", action="store_true")
    parser.add_argument("--skip-generator", action="store_true")
    parser.add_argument("--skip-stop", action="store_true")
    parser.add_argument("--generator-repeats", type=int, default=1,
                        help="runs of each generator setting, one row each")
    parser.add_argument("--output", help="also write the report to this file")
    # internal: a server for the pinned runs, or the in-process numbers of one checkout
    parser.add_argument("--serve", choices=("bare", "atlas", "stackless", "teaching"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--in-process-json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.workers)
        return
    if args.in_process_json:
        print(json.dumps(in_process(args.workers, args.rounds)))
        return
    if args.workers <= args.connections:
        parser.error("--workers must be more than --connections (nobody queues for a slot)")

    lines = ["# Live service benchmarks", "", f"Machine: {machine()}", "",
             f"Command: `python benchmarks/bench_service.py {' '.join(sys.argv[1:])}`".strip(),
             ""]
    if not args.skip_throughput:
        lines += throughput_report(args)
    if not args.skip_in_process:
        lines += in_process_report(args)
    if not args.skip_generator:
        lines += generator_report(args.generator_repeats)
    if not args.skip_stop:
        stops = stop_durations(5)
        lines += ["## LiveServer.stop()", "", "| case | median s | max s |", "|---|---|---|"]
        for case, values in stops.items():
            lines.append(f"| {case} | {statistics.median(values):.3f} | {max(values):.3f} |")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.output:
        with open(args.output, "w") as f:
            f.write(report)


def generator_report(repeats: int) -> list[str]:
    lines = ["## Open-loop generator: 500 requests/s for 10 s, service in this process", "",
             "Service: `create_app(server=ServerConfig(workers=64, "
             "service_time=Distribution(mean=0.005), ...))`. "
             "Send lag = when a request left minus its scheduled time.", "",
             "| generator | requests | ok | wall s | latency p50 ms | latency p99 ms "
             "| lag p50 ms | lag p99 ms | lag max ms |",
             "|---|---|---|---|---|---|---|---|---|"]
    for processes in (0, 1, 2):
        for _ in range(repeats):
            g = generator_lag(500.0, 10.0, processes)
            where = (f"{processes} child process(es) (processes={processes})" if processes
                     else "same process")
            lines.append(f"| {where} | {g['requests']:.0f} | {g['ok']:.3f} | {g['wall']:.1f} | "
                         f"{g['p50'] * 1e3:.1f} | {g['p99'] * 1e3:.1f} | "
                         f"{g['lag_p50'] * 1e3:.2f} | {g['lag_p99'] * 1e3:.2f} | "
                         f"{g['lag_max'] * 1e3:.1f} |")
    lines += ["", "Target: p99 send lag < 5 ms.", ""]
    return lines


if __name__ == "__main__":
    main()
