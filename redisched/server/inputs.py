"""What a route reads from a request: the body (bounded, decoded with msgspec into a Struct or
a FilterRequest tree), query parameters and path ids, each failing as mula does (a 422 in
FastAPI's shape, a 400 for a bad filter)."""

from __future__ import annotations

import enum
import math
import uuid
from datetime import datetime, timezone
from typing import Any, TypeVar

import msgspec
from starlette.datastructures import QueryParams
from starlette.requests import ClientDisconnect, Request

from redisched import filters
from redisched.memo import BoundedMemo
from redisched.errors import BadRequest, Kind, SchedulerError
from redisched.server.validation import InvalidRequest, enum_error, error, from_msgspec, json_invalid, missing, uuid_error

T = TypeVar("T")

DATETIME_FIELDS = ("created_at", "modified_at", "deadline_at")
_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off"})


class PayloadTooLarge(SchedulerError):
    kind = Kind.TOO_LARGE


# --- body ----------------------------------------------------------------------------------


async def read_body(request: Request) -> bytes:
    """The raw body, refused (413) beyond ``max_body_bytes`` before it is all read.

    Reads the ASGI messages itself rather than through ``request.stream()`` (an async
    generator per request, on every pop and push), keeping the request's state as Starlette
    would: the stream marked consumed, a disconnect noted and raised as ``ClientDisconnect``."""
    limit = request.scope["app"].state.max_body_bytes
    declared = _header(request.scope, b"content-length")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"more than {limit} bytes")
    if hasattr(request, "_body") or request._stream_consumed:  # read before: Starlette's own path
        return await _read_stream(request, limit)
    receive = request.receive
    chunks, size = [], 0
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "http.request":
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"more than {limit} bytes")
                chunks.append(chunk)
            if not message.get("more_body", False):
                request._stream_consumed = True
                break
        elif kind == "http.disconnect":
            request._is_disconnected = True
            raise ClientDisconnect()
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _read_stream(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"more than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _header(scope: Any, name: bytes) -> str:
    """The first value of a header (``name`` lower-case, as ASGI gives them), "" when absent:
    what ``request.headers.get(name, "")`` answers, without building a Headers object."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return ""


async def json_body(request: Request, *, required: bool) -> Any:
    """The decoded JSON body; None when absent (422 ``missing`` if required)."""
    return _decoded(await read_body(request), required=required)


def _decoded(body: bytes, *, required: bool) -> Any:
    if not body.strip():
        if required:
            raise InvalidRequest([missing(["body"])])
        return None
    try:
        return msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError) as exc:  # RecursionError: nested too deep
        raise InvalidRequest([json_invalid(exc)]) from None


async def struct_body(request: Request, target: type[T]) -> T:
    """The body as a ``target`` Struct. Datetimes may be any ISO-8601 (date-only, naive = UTC)."""
    return as_struct(await json_body(request, required=True), target)


def as_struct(document: Any, target: type[T]) -> T:
    """A decoded body as a ``target`` Struct, or the 422 pydantic gives: a field's error (the
    first msgspec meets), then one ``extra_forbidden`` per unknown key of a Struct that
    forbids them, in the body's order."""
    if isinstance(document, dict):
        document = _iso_datetimes(document)
    extras = _extras(document, target)
    known = {key: value for key, value in document.items() if key not in extras} if extras else document
    try:
        value = msgspec.convert(known, target, strict=False)
    except msgspec.ValidationError as exc:
        errors = [from_msgspec(exc, known, target)]
    else:
        if not extras:
            return value
        errors = []
    errors += [error("extra_forbidden", ["body", key], "Extra inputs are not permitted", document[key]) for key in extras]
    raise InvalidRequest(errors)


def _extras(document: Any, target: type) -> list[str]:
    if not isinstance(document, dict) or not target.__struct_config__.forbid_unknown_fields:
        return []
    return [key for key in document if key not in target.__struct_fields__]


async def filter_body(request: Request, target: str = "tasks", *, required: bool = False) -> filters.Node | None:
    """The FilterRequest body as a filter tree for ``target`` ("tasks" or "schedules"); None
    when it constrains nothing. ``required``: a body with a ``filters`` key must be sent.
    Runners send the same body on every pop: its tree is parsed once and then reused (the
    same tree also lets the queue reuse its search plan)."""
    body = await read_body(request)

    def parse() -> filters.Node | None:
        document = _decoded(body, required=required)
        if required and not (isinstance(document, dict) and "filters" in document):
            raise InvalidRequest([missing(["body", "filters"], document)])
        return filters.parse_filter_request(document, target)

    return _parsed_filters.get(target.encode() + b"\0" + body, parse)


async def body_with_filters(request: Request) -> tuple[Any, filters.Node | None]:
    """A required JSON object body that may also carry a pop's ``filters`` (as a FilterRequest
    body does) beside other fields: the decoded body, and its filter tree (None when it
    constrains nothing). A runner sends the same body each time: its tree is parsed once."""
    body = await read_body(request)
    document = _decoded(body, required=True)
    if not isinstance(document, dict) or document.get("filters") is None:
        return document, None
    node = _parsed_filters.get(b"body\0" + body, lambda: filters.parse_filter_request({"filters": document["filters"]}))
    return document, node


# keyed by "<target>\0<body>" (no target holds a NUL)
_parsed_filters: BoundedMemo[filters.Node] = BoundedMemo(size=256, max_key_bytes=16_384)


def _iso_datetimes(document: dict[str, Any]) -> dict[str, Any]:
    parsed = {name: parse_datetime(document[name]) for name in DATETIME_FIELDS if isinstance(document.get(name), str)}
    for name, value in parsed.items():
        if value is None and _iso(document[name]) is not None:  # out of range: msgspec would take it
            raise InvalidRequest([_datetime_error(["body", name], document[name])])
    return {**document, **{name: value for name, value in parsed.items() if value is not None}}


def parse_datetime(text: str) -> datetime | None:
    """Any ISO-8601 date or datetime, naive meaning UTC; None when it is not one, or not one in
    range once in UTC (``9999-12-31T23:00-02:00`` is in year 10000, which no datetime holds)."""
    value = _iso(text)
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    try:
        value.astimezone(timezone.utc)
    except OverflowError:
        return None
    return value


def _iso(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _datetime_error(loc: list[Any], text: str) -> dict[str, Any]:
    return error("datetime_from_date_parsing", loc, "Input should be a valid datetime or date", text)


# --- query and path ------------------------------------------------------------------------


def _query(request: Request) -> QueryParams:
    """The request's query parameters. Clients repeat the same few query strings (a runner's
    ``limit=1`` on every pop): each is parsed once and its (immutable) QueryParams shared."""
    return _parsed_queries.get(request.scope["query_string"], lambda: request.query_params)


_parsed_queries: BoundedMemo[QueryParams] = BoundedMemo(size=256, max_key_bytes=256)


def query_int(request: Request, name: str, default: int | None = None, *, minimum: int | None = None) -> int | None:
    text = _query(request).get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        message = "Input should be a valid integer, unable to parse string as an integer"
        raise InvalidRequest([error("int_parsing", ["query", name], message, text)]) from None
    if minimum is not None and value < minimum:
        message = f"Input should be greater than or equal to {minimum}"
        raise InvalidRequest([error("greater_than_equal", ["query", name], message, text, ge=minimum)])
    return value


def query_float(request: Request, name: str, default: float, *, maximum: float | None = None) -> float:
    """A finite number (``inf`` and ``nan`` are refused), at most ``maximum``."""
    text = _query(request).get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        message = "Input should be a valid number, unable to parse string as a number"
        raise InvalidRequest([error("float_parsing", ["query", name], message, text)]) from None
    if not math.isfinite(value):
        raise InvalidRequest([error("finite_number", ["query", name], "Input should be a finite number", text)])
    if maximum is not None and value > maximum:
        message = f"Input should be less than or equal to {maximum}"
        raise InvalidRequest([error("less_than_equal", ["query", name], message, text, le=maximum)])
    return value


def query_text(request: Request, name: str) -> str | None:
    """A string compared with what Postgres or Redis hold: a NUL (which Postgres text cannot
    hold, so nothing matches it) is refused (400), as in a filter or a pushed value."""
    text = _query(request).get(name)
    if text is not None and "\x00" in text:
        raise BadRequest(f"{name} must not contain NUL characters")
    return text


def query_bool(request: Request, name: str, default: bool | None = None) -> bool | None:
    text = _query(request).get(name)
    if text is None:
        return default
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    message = "Input should be a valid boolean, unable to interpret input"
    raise InvalidRequest([error("bool_parsing", ["query", name], message, text)])


def query_datetime(request: Request, name: str) -> datetime | None:
    text = _query(request).get(name)
    if text is None:
        return None
    value = parse_datetime(text)
    if value is None:
        raise InvalidRequest([_datetime_error(["query", name], text)])
    return value


def query_enum(request: Request, name: str, kind: type[enum.Enum]) -> Any:
    text = _query(request).get(name)
    if text is None:
        return None
    try:
        return kind(text).value
    except ValueError:
        raise InvalidRequest([enum_error(["query", name], text, kind)]) from None


def path_uuid(request: Request, name: str) -> uuid.UUID:
    text = request.path_params[name]
    try:
        return uuid.UUID(text)
    except ValueError:
        raise InvalidRequest([uuid_error(["path", name], text)]) from None


def query_range(request: Request, column: str) -> tuple[datetime | None, datetime | None]:
    """``min_<column>`` and ``max_<column>``, inclusive; 400 when min > max."""
    low, high = query_datetime(request, f"min_{column}"), query_datetime(request, f"max_{column}")
    if low is not None and high is not None and low > high:
        raise BadRequest(f"min_{column} must be less than max_{column}")
    return low, high


def page(request: Request) -> tuple[int, int]:
    """``offset`` (default 0) and ``limit`` (default 10), capped at Postgres' bigint: a larger
    one means "all" (or "none left"), not a 500 from ``OFFSET``/``LIMIT``."""
    offset, limit = query_int(request, "offset", 0, minimum=0), query_int(request, "limit", 10, minimum=0)
    return min(offset, MAX_BIGINT), min(limit, MAX_BIGINT)


MAX_BIGINT = 2**63 - 1
