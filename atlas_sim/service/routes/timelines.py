"""Home timelines (DDIA chapter 1, "Describing Load"; ``service.timelines``):

* ``POST /admin/timelines`` ``{"accounts": 2000, "mean_followers": 20, "tail_index": 1.3,
  "seed": 1}``: forget the timelines' data (posts, follows, home timelines, the ``"posts"``
  topic's events and offsets, the cache's timelines), build ``SocialGraph.generate(...)`` and
  load its follows into the store; answers the graph (accounts, follows, celebrity and its
  followers, accounts above the threshold). A body with only ``lose_events`` sets that fault
  (as ``PATCH`` does); ``lose_events`` may also come with a graph.
* ``GET /admin/timelines``: approach, threshold, length, outbox, ``lose_events``, the graph,
  counts (posts, follows, home-timeline rows, fan-out inserts, lost events, the ``"fanout"``
  group's lag) and the database work per operation (queries, rows read and written).
* ``PATCH /admin/timelines`` ``{"lose_events": 0..1}``: the share of posts whose event a crash
  between the dual write's two steps loses (only with ``outbox=False``). It lives here, not in
  ``/admin/faults``, whose fields are ``atlas_sim.faults.FAULT_TABLE``'s (shared with the
  simulator); ``POST /admin/reset`` does not clear it.
* ``POST /api/posts`` ``{"author": int, "text": str}`` -> 201 ``{"post": id}``.
* ``GET /api/timeline/{user}`` -> ``{"user", "approach", "posts": [ids, newest first]}``.
  Both ``/api/`` routes answer ``Server-Timing: work;dur=<ms>`` (the handler's own time).
* ``GET /admin/timelines/delivery/{post}`` -> ``{"post", "author", "followers", "posted_at",
  "delivered", "delivered_at"}`` (``time.monotonic`` seconds), 404 for a post this instance
  has no record of.

Bad bodies are 422 naming each wrong field and its allowed range; an account outside the loaded
graph is 404.
"""

from __future__ import annotations

import math
import time
from typing import Annotated, Any

from fastapi import Path, Request
from fastapi.responses import JSONResponse, Response

from ...social import SocialGraph
from ..bodies import InvalidBody, parse_json_body, read_body
from ..errors import error_body
from ..request_id import current_request_id
from ..timelines import check_lose_events, start_fanout, stop_fanout
from .base import RouteTable, state_of

__all__ = ["GRAPH_FIELDS", "ROUTES"]

ROUTES = RouteTable()

#: ``POST /admin/timelines``' fields: name -> (integer?, low, high, default).
GRAPH_FIELDS: dict[str, tuple[bool, float, float, float]] = {
    "accounts": (True, 2, 100_000, 2000),
    "mean_followers": (False, 0.01, 10_000, 20.0),
    "tail_index": (False, 0.5, 5.0, 1.3),
    "seed": (True, 0, 2**32 - 1, 1),
}
#: A post's text, at most this many characters.
MAX_TEXT = 1000

Account = Annotated[int, Path(ge=0, le=2**62, description="an account of the loaded graph")]
PostId = Annotated[int, Path(ge=1, le=2**63 - 1, description="a post's id")]


def _server_timing(started: float) -> str:
    """The ``Server-Timing`` header of a timeline route (W3C Server Timing): ``work;dur=``,
    milliseconds from the handler's start (after the body was read and checked) to its
    answer: the store's, the cache's and the handler's own time, as ``/api/work`` reports its
    work (``service.work.WorkReceipt.server_timing``); the load generator reads it into
    ``RunResult.meta["server_work"]``."""
    return f"work;dur={(time.perf_counter() - started) * 1e3:.3f}"


def _problem(name: str, msg: str) -> dict[str, Any]:
    return {"loc": ["body", name[:50]], "field": name[:50], "msg": msg}


def _number(name: str, value: Any, integer: bool, low: float, high: float) -> Any:
    ok = (type(value) is int or (not integer and type(value) is float)) \
        and math.isfinite(value) and low <= value <= high
    if not ok:
        kind = "an integer" if integer else "a number"
        raise InvalidBody([_problem(name, f"{name} must be {kind} from {low:g} to {high:g}, "
                                          f"got {str(value)[:50]}")])
    return value


async def _body(request: Request) -> dict[str, Any]:
    raw = await read_body(request, state_of(request).max_body_bytes)
    body = parse_json_body(raw)
    if not isinstance(body, dict):
        raise InvalidBody([{"loc": ["body"], "msg": "body must be a JSON object"}])
    return body


def _invalid(what: str, exc: InvalidBody) -> JSONResponse:
    return JSONResponse(error_body(f"invalid {what}: {exc}", current_request_id(),
                                   detail=exc.problems), status_code=422)


def _lose_events(body: dict[str, Any]) -> float | None:
    if "lose_events" not in body:
        return None
    try:
        return check_lose_events(body["lose_events"])
    except ValueError as exc:
        raise InvalidBody([_problem("lose_events", str(exc))]) from None


@ROUTES.add("/admin/timelines", ["GET"])
async def get_timelines(request: Request) -> dict[str, Any]:
    state = state_of(request)
    await state.open_store()
    return await state.timelines.view(state)


@ROUTES.add("/admin/timelines", ["PATCH"])
async def patch_timelines(request: Request) -> Response:
    state = state_of(request)
    try:
        body = await _body(request)
        unknown = sorted(set(body) - {"lose_events"})
        if unknown:
            raise InvalidBody([_problem(n, f"unknown field {n[:50]!r}; allowed: "
                                           "['lose_events']") for n in unknown])
        lose = _lose_events(body)
    except InvalidBody as exc:
        return _invalid("timelines update", exc)
    if lose is not None:
        state.timelines.lose_events = lose
    await state.open_store()
    return JSONResponse(await state.timelines.view(state))


@ROUTES.add("/admin/timelines", ["POST"])
async def load_timelines(request: Request) -> Response:
    state = state_of(request)
    try:
        body = await _body(request)
        unknown = sorted(set(body) - set(GRAPH_FIELDS) - {"lose_events"})
        if unknown:
            raise InvalidBody([_problem(n, f"unknown field {n[:50]!r}; allowed: "
                                           f"{sorted([*GRAPH_FIELDS, 'lose_events'])}")
                               for n in unknown])
        lose = _lose_events(body)
        params = {name: _number(name, body.get(name, default), integer, low, high)
                  for name, (integer, low, high, default) in GRAPH_FIELDS.items()}
    except InvalidBody as exc:
        return _invalid("timelines graph", exc)
    timelines = state.timelines
    if lose is not None:
        timelines.lose_events = lose
    if set(body) <= {"lose_events"} and body:  # only the fault: as PATCH
        await state.open_store()
        return JSONResponse(await timelines.view(state))
    try:
        graph = SocialGraph.generate(accounts=int(params["accounts"]),
                                     mean_followers=float(params["mean_followers"]),
                                     tail_index=float(params["tail_index"]),
                                     seed=int(params["seed"]))
    except ValueError as exc:
        return _invalid("timelines graph", InvalidBody([{"loc": ["body"], "msg": str(exc)}]))
    store = await state.open_store()
    restart = await stop_fanout(state)  # no batch of the old graph lands in the new one
    try:
        view = await timelines.load(store, state.cache, graph)
    finally:
        restart()
    if state.serving:
        start_fanout(state)
    return JSONResponse(view)


@ROUTES.add("/api/posts", ["POST"])
async def post(request: Request) -> Response:
    """A post: 201 ``{"post": id}``."""
    state = state_of(request)
    try:
        body = await _body(request)
        unknown = sorted(set(body) - {"author", "text"})
        if unknown:
            raise InvalidBody([_problem(n, f"unknown field {n[:50]!r}; allowed: "
                                           "['author', 'text']") for n in unknown])
        if "author" not in body:
            raise InvalidBody([_problem("author", "author is required: an account id")])
        author = _number("author", body["author"], True, 0, 2**62)
        text = body.get("text", "")
        if not isinstance(text, str) or len(text) > MAX_TEXT:
            raise InvalidBody([_problem("text", f"text must be a string of at most "
                                                f"{MAX_TEXT} characters")])
    except InvalidBody as exc:
        return _invalid("post", exc)
    missing = _unknown_account(state, author)
    if missing is not None:
        return missing
    started = time.perf_counter()
    store = await state.open_store()
    post_id = await state.timelines.post(store, author, text)
    return JSONResponse({"post": post_id}, status_code=201,
                        headers={"Server-Timing": _server_timing(started)})


@ROUTES.add("/api/timeline/{user}", ["GET"])
async def timeline(request: Request, user: Account) -> Response:
    """``user``'s home timeline under the configured approach."""
    state = state_of(request)
    missing = _unknown_account(state, user)
    if missing is not None:
        return missing
    started = time.perf_counter()
    store = await state.open_store()
    posts = await state.timelines.read(store, state.cache, user)
    return JSONResponse({"user": user, "approach": state.timelines.config.approach,
                         "posts": posts}, headers={"Server-Timing": _server_timing(started)})


@ROUTES.add("/admin/timelines/delivery/{post}", ["GET"])
async def delivery(request: Request, post: PostId) -> Response:
    record = state_of(request).timelines.delivery(post)
    if record is None:
        return JSONResponse(error_body(f"no delivery record of post {post} here",
                                       current_request_id()), status_code=404)
    return JSONResponse(record.view())


def _unknown_account(state: Any, account: int) -> JSONResponse | None:
    """404 naming the graph's accounts when ``account`` is not one of them; None otherwise
    (or when no graph is loaded)."""
    graph = state.timelines.graph
    if graph is None or account < graph.accounts:
        return None
    return JSONResponse(error_body(f"no account {account}: the graph has accounts 0.."
                                   f"{graph.accounts - 1}", current_request_id()),
                        status_code=404)
