"""Speed of the live service: middleware cost, load-generator accuracy, server stop time.

Measures, in one run:

1. Throughput (requests/s) of a trivial route behind create_app's full pure-ASGI stack, against
   a bare FastAPI app with the same route, and against the same five layers written with
   BaseHTTPMiddleware (``atlas_sim.service.teaching``). Real HTTP on 127.0.0.1; the load comes
   from a separate process: ``wrk`` if it is on PATH, else this script's own closed-loop httpx
   client in a subprocess. Apps are measured in turn, ``--repeats`` times; medians are reported.
   Target (recorded, not asserted): full stack >= 90% of bare FastAPI.
2. The open-loop generator (``run_load``) holding 500 requests/s for 10 s against the service
   in this process: send lag p50/p99/max, in the same process and split over 1 and 2 child
   processes (``processes=``).
   Target: p99 send lag < 5 ms.
3. ``LiveServer.stop()`` duration, idle and with a request in flight.

Usage::

    python benchmarks/bench_service.py                  # everything, markdown on stdout
    python benchmarks/bench_service.py --output /tmp/service.md   # then into BENCHMARKS.md
    python benchmarks/bench_service.py --no-wrk         # force the Python client
    python benchmarks/bench_service.py --skip-throughput --generator-repeats 5   # generator only
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from importlib.metadata import version

import httpx
from fastapi import FastAPI

from atlas_sim.config import Settings
from atlas_sim.policies import ClientPolicy
from atlas_sim.service import LiveServer, create_app, run_load
from atlas_sim.service.teaching import add_base_http_middleware_stack
from atlas_sim.workload import Distribution, Load


def add_bench_route(app: FastAPI) -> FastAPI:
    """Add ``GET /bench`` as the app's first route: the router tries routes in order, so this
    way routing costs the same in every app and the difference is the middleware's."""

    @app.get("/bench")
    async def bench() -> dict[str, bool]:
        return {"ok": True}

    app.router.routes.insert(0, app.router.routes.pop())
    return app


def make_apps() -> dict[str, FastAPI]:
    settings = Settings(load_shedding_max_concurrent=10_000)
    return {
        "bare FastAPI": add_bench_route(FastAPI()),
        "full stack (pure ASGI)": add_bench_route(create_app(settings)),
        "full stack (BaseHTTPMiddleware)": add_base_http_middleware_stack(
            add_bench_route(FastAPI()), settings),
    }


# -- load from another process ---------------------------------------------------------------

def wrk_rps(url: str, seconds: float, connections: int) -> float:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", url],
        capture_output=True, text=True, check=True,
    ).stdout
    match = re.search(r"Requests/sec:\s*([\d.]+)", out)
    if not match:
        raise RuntimeError(f"could not read wrk's output:\n{out}")
    errors = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    if errors:
        raise RuntimeError(f"wrk saw {errors.group(1)} error answers")
    return float(match.group(1))


async def closed_loop(url: str, seconds: float, connections: int) -> float:
    """``connections`` workers, each sending its next request when the last one answered."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, trust_env=False, timeout=10) as client:
        await client.get(url)
        done = 0
        stop_at = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop_at:
                response = await client.get(url)
                response.raise_for_status()
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        return done / (time.perf_counter() - start)


def python_client_rps(url: str, seconds: float, connections: int) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--closed-loop", url, str(seconds), str(connections)],
        capture_output=True, text=True, check=True,
    ).stdout
    return float(out.strip().splitlines()[-1])


def middleware_throughput(seconds: float, repeats: int, connections: int,
                          use_wrk: bool) -> tuple[str, dict[str, list[float]]]:
    measure = wrk_rps if use_wrk else python_client_rps
    tool = "wrk -t1" if use_wrk else "httpx closed loop (subprocess)"
    apps = make_apps()
    rates: dict[str, list[float]] = {name: [] for name in apps}
    servers = {name: LiveServer(app, name=f"bench-{i}", health_path=None).start()
               for i, (name, app) in enumerate(apps.items())}
    try:
        names = list(apps)
        for r in range(repeats):
            for name in names[r % len(names):] + names[:r % len(names)]:  # rotate the order
                rates[name].append(measure(servers[name].url + "/bench", seconds, connections))
    finally:
        for server in servers.values():
            server.stop()
    return tool, rates


# -- generator accuracy and stop time --------------------------------------------------------

def generator_lag(rate: float, seconds: float, processes: int) -> dict[str, float]:
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
    parser.add_argument("--seconds", type=float, default=5.0, help="per throughput sample")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--no-wrk", action="store_true", help="use the Python client")
    parser.add_argument("--skip-generator", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--generator-repeats", type=int, default=1,
                        help="runs of each generator setting, one row each")
    parser.add_argument("--output", help="also write the report to this file")
    args = parser.parse_args()

    lines = ["# Live service benchmarks", "", f"Machine: {machine()}", "",
             f"Command: `python benchmarks/bench_service.py {' '.join(sys.argv[1:])}`".strip(),
             ""]
    if not args.skip_throughput:
        lines += throughput_report(args)
    if not args.skip_generator:
        lines += generator_report(args.generator_repeats)

    stops = stop_durations(5)
    lines += ["## LiveServer.stop()", "", "| case | median s | max s |", "|---|---|---|"]
    for case, values in stops.items():
        lines.append(f"| {case} | {statistics.median(values):.3f} | {max(values):.3f} |")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.output:
        with open(args.output, "w") as f:
            f.write(report)


def throughput_report(args: argparse.Namespace) -> list[str]:
    use_wrk = shutil.which("wrk") is not None and not args.no_wrk
    tool, rates = middleware_throughput(args.seconds, args.repeats, args.connections, use_wrk)
    bare = statistics.median(rates["bare FastAPI"])
    lines = ["## Middleware cost: throughput of a trivial route", "",
             f"Load: {tool}, {args.connections} connections, {args.seconds:g} s per sample, "
             f"{args.repeats} samples per app, order rotated; medians.", "",
             "| app | requests/s (median) | samples | ratio to bare |", "|---|---|---|---|"]
    for name, values in rates.items():
        median = statistics.median(values)
        samples = ", ".join(f"{v:.0f}" for v in values)
        lines.append(f"| {name} | {median:.0f} | {samples} | {median / bare:.2f} |")
    full = statistics.median(rates["full stack (pure ASGI)"]) / bare
    base = statistics.median(rates["full stack (BaseHTTPMiddleware)"]) / bare
    lines += ["", f"Target full/bare >= 0.90: {'met' if full >= 0.9 else 'NOT met'} "
              f"({full:.2f}); BaseHTTPMiddleware/bare: {base:.2f}.", ""]
    return lines


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
    if len(sys.argv) == 5 and sys.argv[1] == "--closed-loop":
        print(asyncio.run(closed_loop(sys.argv[2], float(sys.argv[3]), int(sys.argv[4]))))
    else:
        main()
