"""``create_app``: the Atlas API service, with the card's middleware stack and its routes.

Routes:

Every GET route also answers HEAD (the same status and headers, no body).

``GET /health``            liveness (never shed)
``GET /metrics``           Prometheus text from this app's own registry (never shed)
``GET /api/work``          simulated work: ``servers`` slots, FIFO queue, drawn service times
``GET /api/compose``       a call to the in-process dependency through retry, budget, breaker
``GET /api/fanout``        ``width`` concurrent calls to the dependency, each hedged when the
                           service's fan-out policy says so; the answer says how many copies
                           were sent (the tail at scale, and hedged requests)
``POST /api/orders``       a write (an order applied after its work), deduplicated by an
                           ``Idempotency-Key`` when the client sends one (``idempotency``;
                           503 with ``Retry-After`` when the key store is full)
``GET /admin/orders``      how many orders were applied, and how many keys are remembered
``GET|PUT|POST /admin/faults``   read or set dependency faults, server capacity and the share of
                           inputs the handlers crash on (``bad_input_rate``: a request whose
                           ``X-Atlas-Input`` header is below it gets a 500 from every route
                           that does work, on every instance with the same setting), and
                           a stall (``stall``: the work station answers nothing)
``GET|PUT|POST /admin/fanout``   read or set the fan-out's hedge delay, and read its counts
``GET /admin/breaker``     the service breaker's state and its transitions
``POST /admin/reset``      faults off, capacity 1, no stall, fresh breaker and budget, random
                           streams rewound to the seed (a run after a reset repeats the
                           draws), no orders, no idempotency keys, no hedging and fan-out
                           counts at 0

State-changing requests (``/admin/...`` and ``POST /api/orders``) take ``application/json``
(or no body at all) and are refused when they come from a web page (``Origin``); every request
must name a loopback ``Host`` (``LoopbackGuardMiddleware``).

Bodies: every route that reads one (``/admin/faults``, ``/admin/fanout``, ``/api/orders``) reads
at most ``max_body_bytes`` (beyond: 413) and parses it with ``parse_json_body``, which answers
every body it cannot handle (not JSON, not UTF-8, nested deeper than ``MAX_JSON_DEPTH``, numbers
longer than ``MAX_NUMBER_CHARS`` or beyond a double's range) with a 422 naming the problem,
never a 500.

``X-Atlas-Input``: a number in [0, 1), or absent; anything else (not a number, NaN, outside the
range, the header twice) is the client's error, 400 naming the header and the range, with or
without a bad-input fault (``parse_input``).

Everything stateful (work slots, dependency, policies, metrics, idempotency keys) belongs to one
app and is used only from the event loop that serves it; ``app.state.atlas`` (a
``ServiceState``) holds it for tests and notebooks. The route handlers are module-level
functions that find it through ``request.app``, never closures over it: FastAPI keeps every
endpoint function it has seen in module-level caches (``fastapi.dependencies.models``, an
``lru_cache`` of 4096 entries), so a closure there would keep a stopped and dropped app's whole
state alive.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..config import Settings
from ..policies import ClientPolicy, ConcurrencyLimiter, HedgePolicy
from ..validation import check_int
from ..workload import Distribution, rng_streams
from .dependency import Faults, FaultyDependency
from .errors import error_body, install_error_handlers
from .idempotency import (
    IDEMPOTENCY_KEY_HEADER,
    REPLAYED_HEADER,
    Begun,
    IdempotencyStore,
    MemoryIdempotencyStore,
    Stored,
    StoreFull,
    parse_idempotency_keys,
)
from .metrics import MetricsMiddleware, ServiceMetrics
from .middleware import (
    ErrorHandlingMiddleware,
    LoadSheddingMiddleware,
    LoopbackGuardMiddleware,
    TimeoutMiddleware,
    check_allowed_hosts,
)
from .request_id import RequestIDMiddleware, current_request_id
from .resilience import CallOutcome, ResilientCaller
from .work import ServerDown, WorkStation

__all__ = ["INPUT_HEADER", "MAX_JSON_DEPTH", "MAX_NUMBER_CHARS", "BadInput", "InvalidBody",
           "ServiceState", "create_app", "parse_input", "parse_json_body"]

#: The header that carries what a request's input is, as a number in [0, 1)
#: (``workload.request_inputs``); the load generator sends it when a fault needs it.
INPUT_HEADER = "x-atlas-input"
#: A decimal number as ``repr(float)`` writes it (and people do): no ``nan``, ``inf``, ``0x``,
#: underscores or spaces inside, which ``float()`` would also take.
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_MAX_INPUT_CHARS = 64


def parse_input(values: list[str]) -> float | None:
    """The input a request carries, from its ``X-Atlas-Input`` fields (``values``: each field's
    value, in order): a decimal number in [0, 1) (``workload.request_inputs``), or None when
    there is no such field (a good input).

    Raises ValueError naming the header and the range for anything else: two fields, not a
    decimal number (``n/a``, ``nan``, ``inf``), or a number outside [0, 1).
    """
    if not values:
        return None
    allowed = "one decimal number in [0, 1)"
    if len(values) > 1:
        raise ValueError(f"X-Atlas-Input given {len(values)} times; send {allowed}")
    text = values[0].strip(" \t")
    if len(text) > _MAX_INPUT_CHARS or _DECIMAL.fullmatch(text) is None:
        raise ValueError(f"X-Atlas-Input must be {allowed}, got {values[0][:_MAX_INPUT_CHARS]!r}")
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"X-Atlas-Input must be {allowed}, got {text}")
    return value


class BadInput(RuntimeError):
    """The handler's bug: it dies on a bad input (``bad_input_rate``). Left unhandled on
    purpose, so that the service answers and logs it as any crash (``ErrorHandlingMiddleware``:
    500, one log line with the traceback)."""

DEFAULT_SERVICE_TIME = Distribution(mean=0.02)
DEFAULT_DEPENDENCY_LATENCY = Distribution(mean=0.005)


@dataclass(eq=False)
class FanoutCounts:
    """What ``/api/fanout`` has done since the last reset or policy change: requests answered,
    logical backend calls, copies sent (calls plus hedges), hedges, and copies cancelled."""

    requests: int = 0
    calls: int = 0
    copies: int = 0
    hedges: int = 0
    cancelled: int = 0

    def add(self, outcomes: list[CallOutcome]) -> tuple[int, int, int]:
        """Count one request's calls; returns its copies, hedges and cancelled copies."""
        copies = sum(len(o.attempts) for o in outcomes)
        hedges = sum(max(0, len(o.attempts) - 1) for o in outcomes)
        cancelled = sum(a.outcome == "cancelled" for o in outcomes for a in o.attempts)
        self.requests += 1
        self.calls += len(outcomes)
        self.copies += copies
        self.hedges += hedges
        self.cancelled += cancelled
        return copies, hedges, cancelled


@dataclass(eq=False)
class ServiceState:
    """The live parts of one app (reach them as ``app.state.atlas``)."""

    settings: Settings
    seed: int
    metrics: ServiceMetrics
    limiter: ConcurrencyLimiter
    work: WorkStation
    dependency: FaultyDependency
    caller: ResilientCaller
    max_body_bytes: int
    fanout: ResilientCaller  # /api/fanout's calls: DATABASE_TIMEOUT, budget, breaker, hedge
    idempotency: IdempotencyStore = field(default_factory=MemoryIdempotencyStore)
    orders_applied: int = 0  # writes /api/orders has applied (duplicates included)
    bad_input_rate: float = 0.0  # the handlers crash on inputs below this (a software error)
    fanout_counts: FanoutCounts = field(default_factory=FanoutCounts)

    def check_input(self, request: Request) -> None:
        """Refuse a malformed ``X-Atlas-Input`` (400, whatever the faults: ``parse_input``),
        and crash (``BadInput``) if the request carries a bad input, one below
        ``bad_input_rate``; a request without the header carries a good one. A server that is
        down (capacity 0) answers 503 before any handler code runs, as in the simulator."""
        try:
            value = parse_input(request.headers.getlist(INPUT_HEADER))
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        if value is None or not self.bad_input_rate or self.work.capacity == 0:
            return
        if value < self.bad_input_rate:
            raise BadInput(f"the handler cannot process input {value!r} "
                           f"(bad_input_rate {self.bad_input_rate:g})")

    def rewind(self) -> None:
        """Restart every random stream from the seed: the next requests draw what a fresh
        service (and a simulation with the same seed) would."""
        streams = rng_streams(self.seed)
        self.work.use_stream(streams["service"])
        self.dependency.use_stream(streams["dependency"])
        self.caller.use_stream(streams["server"])
        # its own copy of the stream, as create_app gives it: not the caller's generator
        self.fanout.use_stream(rng_streams(self.seed)["server"])

    def faults_view(self) -> dict[str, Any]:
        f = self.dependency.faults
        return {"error_rate": f.error_rate, "added_latency": f.added_latency,
                "outage": f.outage, "capacity": self.work.capacity,
                "bad_input_rate": self.bad_input_rate,
                "slow_rate": f.slow_rate, "slow_latency": f.slow_latency,
                "stall": self.work.stalled}

    def set_hedge(self, delay: float | None) -> None:
        """Hedge ``/api/fanout``'s calls after ``delay`` seconds (None: no hedging), with a
        fresh breaker and budget, and its counts from 0."""
        hedge = HedgePolicy(delay=delay) if delay is not None else None
        self.fanout = ResilientCaller(self.dependency, policy=fanout_client(self.settings, hedge),
                                      rng=rng_streams(self.seed)["server"])
        self.fanout_counts = FanoutCounts()

    def fanout_view(self) -> dict[str, Any]:
        hedge = self.fanout.policy.hedge
        c = self.fanout_counts
        return {"hedge_delay": hedge.delay if hedge is not None else None,
                "max_extra": hedge.max_extra if hedge is not None else 0,
                "requests": c.requests, "calls": c.calls, "copies": c.copies,
                "hedges": c.hedges, "cancelled": c.cancelled}


def fanout_client(settings: Settings, hedge: HedgePolicy | None = None) -> ClientPolicy:
    """How ``/api/fanout`` calls the dependency: ``DATABASE_TIMEOUT`` per copy, the service's
    budget and breaker settings (a breaker and a budget of its own), and ``hedge``; no retry
    (a call is retried or hedged, never both)."""
    return ClientPolicy(timeout=settings.database_timeout, budget=settings.budget_config(),
                        breaker=settings.breaker_config(), hedge=hedge)


#: The fields of ``PUT/POST /admin/faults``: name -> (kind, low, high). One strict rule per
#: kind: a number is a JSON number (not a boolean, not a string), finite, within [low, high];
#: a flag is JSON ``true`` or ``false`` (not 0/1, not a string); ``number or null`` is a number
#: so checked, or JSON ``null``.
FAULT_FIELDS: dict[str, tuple[str, float | None, float | None]] = {
    "error_rate": ("number", 0, 1),
    "added_latency": ("number", 0, 3600),
    "outage": ("boolean", None, None),
    "capacity": ("number", 0, 1000),
    "bad_input_rate": ("number", 0, 1),
    "slow_rate": ("number", 0, 1),
    "slow_latency": ("number", 0, 3600),
    "stall": ("boolean", None, None),  # the work station answers nothing (``Fault.stall``)
}

#: The fields of ``PUT/POST /admin/fanout``: the hedge delay in seconds, null for none.
FANOUT_FIELDS: dict[str, tuple[str, float | None, float | None]] = {
    "hedge_delay": ("number or null", 0, 60),
}


class InvalidBody(ValueError):
    """A request body that does not follow its schema; ``problems`` name each field."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(p["msg"] for p in problems))
        self.problems = problems


def _allowed(kind: str, low: float | None, high: float | None) -> str:
    if kind == "boolean":
        return "true or false"
    number = f"a number from {low:g} to {high:g}"
    return number + " or null" if kind == "number or null" else number


#: How deeply a request body's arrays and objects may nest. Admin bodies are flat (depth 1);
#: without a bound, a body of ``[`` * 1000 exhausts the parser's recursion (a RecursionError,
#: which is not a ValueError) long before ``max_body_bytes`` is reached.
MAX_JSON_DEPTH = 32
#: The longest number a body may spell, in characters (a double needs at most 24; beyond 4300
#: digits Python's ``int`` refuses with a message that names ``sys.set_int_max_str_digits``).
MAX_NUMBER_CHARS = 100
#: The characters the depth scan looks at: brackets, and the quotes and backslashes that decide
#: whether a bracket is inside a string.
_JSON_SIGNIFICANT = re.compile(r'[\[\]{}"\\]')


def _scan_json_depth(text: str, limit: int) -> tuple[int, int]:
    """How deeply ``text``'s arrays and objects nest, and the steps the scan took.

    One pass from left to right over the characters that matter (``_JSON_SIGNIFICANT``,
    found by a one-character regex, which never backtracks), keeping two states: inside a
    string or not, and whether the previous character was an escaping backslash (RFC 8259,
    section 7: inside a string, ``\\`` escapes exactly the next character). Brackets count
    only outside strings. Returns ``(deepest, steps)``: the deepest nesting seen, a value
    > ``limit`` as soon as the scan passes ``limit`` (it stops there), and ``steps``, the
    characters visited, at most ``len(text)``: the work is linear in the body's length, however
    the body is built. (The scan this replaces removed strings with a regex that backtracked:
    a body of ``"`` and then ``\\"`` pairs took time quadratic in its length, about 20 s for
    64 KiB, with the event loop blocked.) Malformed text gives some number; ``json.loads``
    then says what is wrong with it.
    """
    depth = deepest = steps = 0
    in_string = False
    escaped = -1  # the index of the character a backslash escapes
    for match in _JSON_SIGNIFICANT.finditer(text):
        steps += 1
        at = match.start()
        if at == escaped:
            continue
        ch = text[at]
        if in_string:
            if ch == "\\":
                escaped = at + 1
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        elif ch in "]}":
            depth -= 1
        # a backslash outside a string is not JSON: json.loads says so
    return deepest, steps


def _json_depth(text: str, limit: int) -> int:
    """The nesting depth of ``text`` (``_scan_json_depth``), > ``limit`` once past it."""
    return _scan_json_depth(text, limit)[0]


class _Refused(ValueError):
    """Valid JSON that the service will not read (a number too long or too large)."""


def parse_json_body(raw: bytes) -> Any:
    """The JSON value of a request body (an empty body is ``{}``), or ``InvalidBody`` naming
    what is wrong. Whatever the bytes, nothing else is raised (no RecursionError, no huge-int
    error): the body must be UTF-8 JSON (RFC 8259, section 8.1) without ``NaN``/``Infinity``,
    without a name given twice in one object, nested at most ``MAX_JSON_DEPTH`` deep, with
    numbers of at most ``MAX_NUMBER_CHARS`` characters that are finite as doubles. The size
    limit (413) is the reader's (``_read_body``), before this."""
    def refuse_constant(token: str) -> None:
        raise ValueError(f"{token} is not JSON")

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                raise ValueError(f"field {key[:50]!r} given twice")
            seen[key] = value
        return seen

    def check_length(token: str) -> None:
        if len(token) > MAX_NUMBER_CHARS:
            raise _Refused(f"body holds a number of {len(token)} characters "
                           f"({token[:20]}...); at most {MAX_NUMBER_CHARS} are read")

    def bounded_int(token: str) -> int:
        check_length(token)
        return int(token)

    def bounded_float(token: str) -> float:
        check_length(token)
        value = float(token)
        if not math.isfinite(value):
            raise _Refused(f"body holds the number {token}, beyond the range of a double "
                           "(about 1.8e308)")
        return value

    def invalid(why: str) -> InvalidBody:
        return InvalidBody([{"loc": ["body"], "msg": f"body is not valid JSON: {why}"}])

    try:
        text = raw.decode("utf-8") if raw else "{}"
    except UnicodeDecodeError as exc:
        raise invalid(f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    depth = _json_depth(text, MAX_JSON_DEPTH)
    if depth > MAX_JSON_DEPTH:
        raise InvalidBody([{"loc": ["body"], "msg": (
            f"body nests arrays or objects more than {MAX_JSON_DEPTH} deep")}])
    try:
        return json.loads(text, parse_constant=refuse_constant, object_pairs_hook=no_duplicates,
                          parse_int=bounded_int, parse_float=bounded_float)
    except _Refused as exc:
        raise InvalidBody([{"loc": ["body"], "msg": str(exc)}]) from None
    except (ValueError, RecursionError) as exc:  # RecursionError: belt and braces
        raise invalid(str(exc)[:200]) from None


def parse_admin_update(raw: bytes,
                       fields: dict[str, tuple[str, float | None, float | None]]
                       ) -> dict[str, Any]:
    """The changes in an admin body whose ``fields`` are name -> (kind, low, high), all
    checked, or ``InvalidBody`` naming every field that is wrong (``parse_json_body`` first)."""
    body = parse_json_body(raw)
    if not isinstance(body, dict):
        raise InvalidBody([{"loc": ["body"],
                            "msg": f"body must be a JSON object of {sorted(fields)}"}])
    problems, changes = [], {}
    for name, value in body.items():
        if name not in fields:
            problems.append({"loc": ["body", name[:50]], "field": name[:50],
                             "msg": f"unknown field {name[:50]!r}; allowed: {sorted(fields)}"})
            continue
        kind, low, high = fields[name]
        allowed = _allowed(kind, low, high)
        if kind == "boolean":
            ok = isinstance(value, bool)
        elif kind == "number or null" and value is None:
            ok = True
        else:
            # the range check also refuses inf (and huge integers) without converting them
            ok = type(value) in (int, float) and low <= value <= high
        if not ok:
            problems.append({"loc": ["body", name], "field": name, "allowed": allowed,
                             "msg": f"{name} must be {allowed}, got {json.dumps(value)[:50]}"})
        else:
            changes[name] = value if kind == "boolean" or value is None else float(value)
    if problems:
        raise InvalidBody(problems)
    return changes


def _check_distribution(name: str, value: object) -> Distribution:
    if not isinstance(value, Distribution):
        raise ValueError(f"{name} must be an atlas_sim.workload.Distribution, got {value!r}")
    return value


def create_app(
    settings: Settings | None = None,
    *,
    servers: int = 2,
    service_time: Distribution = DEFAULT_SERVICE_TIME,
    dependency_latency: Distribution = DEFAULT_DEPENDENCY_LATENCY,
    seed: int = 0,
    max_body_bytes: int = 64 * 1024,
    retry_after: int = 1,
    allowed_hosts: Iterable[str] | None = None,
    title: str = "Atlas API",
) -> FastAPI:
    """Build the Atlas service.

    Args:
        settings: timeouts, retry, breaker, budget and shedding limits (default: from the
            environment, ``Settings()``).
        servers: concurrent work slots for ``/api/work`` (1..10000); the c of M/M/c.
        service_time: how long one ``/api/work`` request works, at capacity 1.
        dependency_latency: how long one dependency call takes without faults.
        seed: the seed of every random stream (``rng_streams(seed)``), an integer >= 0.
        max_body_bytes: largest request body a route reads (``/admin/...``, ``/api/orders``;
            1..16 MiB); beyond: 413.
        retry_after: seconds in the ``Retry-After`` header of a 429 (0..3600).
        allowed_hosts: host names accepted in the ``Host`` header (default None: loopback
            names only); name the machine's own here if it is served beyond loopback.
    """
    settings = Settings() if settings is None else settings
    if not isinstance(settings, Settings):
        raise ValueError(f"settings must be an atlas_sim.Settings, got {settings!r}")
    servers = check_int("servers", servers, low=1, high=10_000)
    service_time = _check_distribution("service_time", service_time)
    dependency_latency = _check_distribution("dependency_latency", dependency_latency)
    seed = check_int("seed", seed, low=0)
    max_body_bytes = check_int("max_body_bytes", max_body_bytes, low=1, high=16 * 2**20)
    retry_after = check_int("retry_after", retry_after, low=0, high=3600)
    allowed_hosts = check_allowed_hosts(allowed_hosts)

    streams = rng_streams(seed)
    dependency = FaultyDependency(latency=dependency_latency, rng=streams["dependency"])
    state = ServiceState(
        settings=settings,
        seed=seed,
        metrics=ServiceMetrics(),
        limiter=settings.limiter(),
        work=WorkStation(servers=servers, service_time=service_time, rng=streams["service"]),
        dependency=dependency,
        caller=ResilientCaller(dependency, policy=settings.dependency_client(),
                               rng=streams["server"]),
        fanout=ResilientCaller(dependency, policy=fanout_client(settings),
                               rng=rng_streams(seed)["server"]),
        max_body_bytes=max_body_bytes,
    )

    app = FastAPI(title=title)
    app.state.atlas = state
    install_error_handlers(app)
    # add_middleware puts each layer outside the ones added before: add innermost first.
    app.add_middleware(LoadSheddingMiddleware, limiter=state.limiter, retry_after=retry_after)
    app.add_middleware(ErrorHandlingMiddleware)
    app.add_middleware(LoopbackGuardMiddleware, allowed_hosts=allowed_hosts)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics, router=app.router)
    app.add_middleware(TimeoutMiddleware, timeout=settings.http_timeout)
    app.add_middleware(RequestIDMiddleware)
    for path, methods, endpoint, options in ROUTES:
        app.add_api_route(path, endpoint, methods=methods, **options)
    return app


#: ``?service_time=``, taken by every route that does work.
ServiceTime = Annotated[float | None, Query(
    ge=0, le=60, allow_inf_nan=False,
    description="seconds of work instead of a drawn one (the draw is still made)")]


#: The service's routes, in matching order: (path, methods, endpoint, options). The endpoints
#: are module-level functions, the same for every app, that find their app's state through
#: ``request.app`` (see the module docstring); ``create_app`` adds each to its app.
ROUTES: list[tuple[str, list[str], Callable[..., Any], dict[str, Any]]] = []


def _route(path: str, methods: list[str], **options: Any
           ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(endpoint: Callable[..., Any]) -> Callable[..., Any]:
        ROUTES.append((path, methods, endpoint, options))
        return endpoint
    return register


def _state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.atlas
    return state


@_route("/health", ["GET"])
async def health() -> dict[str, str]:
    return {"status": "ok"}


@_route("/metrics", ["GET"], include_in_schema=False)
async def metrics(request: Request) -> Response:
    return Response(generate_latest(_state(request).metrics.registry),
                    media_type=CONTENT_TYPE_LATEST)


@_route("/api/work", ["GET"])
async def work(request: Request, service_time: ServiceTime = None) -> Response:
    state = _state(request)
    state.check_input(request)
    try:
        receipt = await state.work.serve(service_time)
    except ServerDown:
        return JSONResponse(
            error_body("server down (capacity 0)", current_request_id()), status_code=503)
    return JSONResponse(
        {"request_id": current_request_id(), "queue": receipt.queue, "work": receipt.work},
        headers={"Server-Timing": receipt.server_timing()},
    )


@_route("/api/orders", ["POST"])
async def order(request: Request, service_time: ServiceTime = None) -> Response:
    """A write: place an order (one work slot for a drawn service time, then one more order
    applied). The body, if any, is JSON (``parse_json_body``; its content is the client's and
    is kept as sent). With an ``Idempotency-Key``, a repeat (same method, path, query string and
    body) is answered from memory and applies nothing (see ``idempotency``); when the key store
    is full, a new key gets 503 with ``Retry-After``."""
    state = _state(request)
    request_id = current_request_id()
    state.check_input(request)
    try:
        key = parse_idempotency_keys(request.headers.getlist(IDEMPOTENCY_KEY_HEADER))
    except ValueError as exc:
        return JSONResponse(error_body(str(exc), request_id), status_code=400)
    body = await _read_body(request, state.max_body_bytes)
    if body:
        try:
            parse_json_body(body)
        except InvalidBody as exc:
            return JSONResponse(error_body(f"invalid order: {exc}", request_id,
                                           detail=exc.problems), status_code=422)
    if key is None:
        return await _place_order(state, service_time, request_id)
    fingerprint = " ".join((request.method, request.url.path,
                            request.scope.get("query_string", b"").decode("latin-1"),
                            hashlib.sha256(body).hexdigest()))
    store = state.idempotency
    verdict = await store.begin(key, fingerprint)
    if isinstance(verdict, Stored):
        return Response(verdict.body, status_code=verdict.status,
                        media_type=verdict.media_type, headers={REPLAYED_HEADER: "true"})
    if isinstance(verdict, StoreFull):
        wait = 1 if verdict.retry_after is None else max(1, math.ceil(verdict.retry_after))
        return JSONResponse(error_body(
            f"the idempotency key store is full ({verdict.capacity} keys, each kept "
            f"{store.retention:g} s after its answer); a new key cannot be accepted "
            f"without forgetting a promised one: retry after {wait} s", request_id,
            capacity=verdict.capacity, retry_after=wait),
            status_code=503, headers={"Retry-After": str(wait)})
    if verdict == "in progress":
        return JSONResponse(error_body(
            "a request with this Idempotency-Key is still being processed; retry "
            "later", request_id), status_code=409)
    if verdict == "mismatch":
        return JSONResponse(error_body(
            "this Idempotency-Key was used for a different request (method, path, query "
            "string or body)", request_id), status_code=422)
    assert isinstance(verdict, Begun)
    try:
        response = await _place_order(state, service_time, request_id)
    except BaseException:
        # Cancelled by the request's timeout, or a crash: nothing was applied, and the key
        # leaves the in-flight set so that a retry may apply it.
        await store.abandon(verdict)
        raise
    # kept with a 2xx answer, forgotten with any other (a write that failed may be retried)
    await store.complete(verdict, Stored(fingerprint, response.status_code, bytes(response.body),
                                     "application/json"))
    return response


async def _place_order(state: ServiceState, service_time: float | None,
                       request_id: str | None) -> JSONResponse:
    try:
        receipt = await state.work.serve(service_time)
    except ServerDown:
        return JSONResponse(error_body("server down (capacity 0)", request_id), status_code=503)
    state.orders_applied += 1
    return JSONResponse({"request_id": request_id, "order": state.orders_applied},
                        headers={"Server-Timing": receipt.server_timing()})


@_route("/admin/orders", ["GET"])
async def orders(request: Request) -> dict[str, int]:
    state = _state(request)
    return {"applied": state.orders_applied, "keys": await state.idempotency.count()}


@_route("/api/compose", ["GET"])
async def compose(request: Request) -> JSONResponse:
    state = _state(request)
    state.check_input(request)
    outcome = await state.caller.call()
    body: dict[str, Any] = {
        "request_id": current_request_id(),
        "attempts": len(outcome.attempts),
        "attempt_log": [
            {"attempt": a.attempt, "outcome": a.outcome, "seconds": a.seconds}
            for a in outcome.attempts
        ],
        "breaker": state.caller.breaker.state.value,
    }
    if not outcome.ok:
        body = {**error_body(outcome.reason, current_request_id()), **body}
    return JSONResponse(body, status_code=outcome.status)


@_route("/api/fanout", ["GET"])
async def fan_out(
    request: Request,
    width: int = Query(10, ge=1, le=100,
                       description="backend calls made concurrently; the answer waits "
                                   "for all of them"),
) -> JSONResponse:
    """``width`` calls to the dependency at once, each through the fan-out's guarded call
    (hedged if ``/admin/fanout`` set a delay). The answer counts what was sent, and says how
    far the calls overran their drawn latency: ``overrun``, the mean over the copies that
    answered ok of the time taken beyond the latency drawn for them (seconds; null if none
    answered), also as ``Server-Timing: overrun;dur=<ms>`` (the event loop's lateness, which
    ``analysis.health`` judges: a loop that wakes late turns fast calls into hedges)."""
    state = _state(request)
    state.check_input(request)
    outcomes = await asyncio.gather(*(state.fanout.call() for _ in range(width)))
    copies, hedges, cancelled = state.fanout_counts.add(outcomes)
    overruns = [a.overrun for o in outcomes for a in o.attempts if a.outcome == "ok"]
    overrun = sum(overruns) / len(overruns) if overruns else None
    body: dict[str, Any] = {
        "request_id": current_request_id(), "width": width, "calls": width,
        "copies": copies, "hedges": hedges, "cancelled": cancelled,
        "slowest": max(max((a.seconds for a in o.attempts), default=0.0)
                       for o in outcomes),
        "overrun": overrun,
    }
    headers = ({"Server-Timing": f"overrun;dur={overrun * 1e3:.3f}"} if overrun is not None
               else None)
    failed = [o for o in outcomes if not o.ok]
    if failed:
        body = {**error_body(f"{len(failed)} of {width} calls failed: {failed[0].reason}",
                             current_request_id()), **body}
        return JSONResponse(body, status_code=failed[0].status, headers=headers)
    return JSONResponse(body, headers=headers)


@_route("/admin/fanout", ["GET"])
async def get_fanout(request: Request) -> dict[str, Any]:
    return _state(request).fanout_view()


@_route("/admin/fanout", ["PUT", "POST"])
async def set_fanout(request: Request) -> JSONResponse:
    return await _admin_update(request, FANOUT_FIELDS, "fan-out settings", _apply_fanout)


def _apply_fanout(state: ServiceState, changes: dict[str, Any]) -> dict[str, Any]:
    if "hedge_delay" in changes:
        state.set_hedge(changes["hedge_delay"])
    return state.fanout_view()


@_route("/admin/faults", ["GET"])
async def get_faults(request: Request) -> dict[str, Any]:
    return _state(request).faults_view()


@_route("/admin/faults", ["PUT", "POST"])
async def set_faults(request: Request) -> JSONResponse:
    return await _admin_update(request, FAULT_FIELDS, "faults", _apply_faults)


def _apply_faults(state: ServiceState, changes: dict[str, Any]) -> dict[str, Any]:
    capacity = changes.pop("capacity", None)
    bad_input_rate = changes.pop("bad_input_rate", None)
    stall = changes.pop("stall", None)
    if changes:
        current = state.dependency.faults
        state.dependency.faults = Faults(
            error_rate=changes.get("error_rate", current.error_rate),
            added_latency=changes.get("added_latency", current.added_latency),
            outage=changes.get("outage", current.outage),
            slow_rate=changes.get("slow_rate", current.slow_rate),
            slow_latency=changes.get("slow_latency", current.slow_latency),
        )
    if capacity is not None:
        state.work.capacity = capacity
    if bad_input_rate is not None:
        state.bad_input_rate = bad_input_rate
    if stall is not None:
        state.work.stalled = stall
    return state.faults_view()


async def _admin_update(
    request: Request, fields: dict[str, tuple[str, float | None, float | None]], what: str,
    apply: Callable[[ServiceState, dict[str, Any]], dict[str, Any]],
) -> JSONResponse:
    """An admin write: the body's ``fields`` (``parse_admin_update``) handed to ``apply``,
    whose view of the new state is the answer; or 422 naming every wrong field, with nothing
    applied (every field is checked before any is used)."""
    state = _state(request)
    raw = await _read_body(request, state.max_body_bytes)
    try:
        changes = parse_admin_update(raw, fields)
    except InvalidBody as exc:
        return JSONResponse(
            error_body(f"invalid {what}: {exc}", current_request_id(), detail=exc.problems),
            status_code=422)
    return JSONResponse(apply(state, changes))


@_route("/admin/breaker", ["GET"])
async def breaker(request: Request) -> dict[str, Any]:
    caller = _state(request).caller
    b = caller.breaker
    return {
        "state": b.state.value,
        "generation": b.generation,
        "clock": "time.monotonic",
        "now": caller.clock(),
        "budget_tokens": caller.budget.tokens,
        "config": {
            "failure_threshold": b.config.failure_threshold,
            "recovery_timeout": b.config.recovery_timeout,
            "half_open_max_calls": b.config.half_open_max_calls,
            "success_threshold": b.config.success_threshold,
        },
        "transitions": [
            {"time": t.time, "old": t.old.value, "new": t.new.value, "reason": t.reason}
            for t in caller.transitions
        ],
    }


@_route("/admin/reset", ["POST"])
async def reset(request: Request) -> dict[str, Any]:
    state = _state(request)
    state.dependency.faults = Faults()
    state.work.capacity = 1.0
    state.bad_input_rate = 0.0
    state.work.stalled = False
    state.caller.reset()
    state.set_hedge(None)
    state.rewind()
    await state.idempotency.clear()
    state.orders_applied = 0
    return state.faults_view()


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, or 413 as soon as it is known to exceed ``limit`` bytes.

    A declared ``Content-Length`` over the limit is refused before reading anything; a body
    without one (chunked) is read only up to the limit.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"request body larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)

