"""Every failure a route can meet, mapped to its HTTP answer in one place.

Domain errors carry a kind (redisched/errors.py); ``ANSWERS`` gives each kind its status,
the contract's detail prefix and headers. Request validation is FastAPI's 422 list; a bad
filter is a 400 at once (mula: a 500 after ~10 s);
Redis or Postgres not answering in time is a 503 with ``Retry-After``. Each is logged with its
reason on ``redisched.http`` (INFO for 4xx, WARNING for 5xx), also when the access log is off.
The HTTP layer's own refusals (request_checks.py, connections.py) are at the end.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

import msgspec
import psycopg
import psycopg_pool
import redis.exceptions
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from redisched.errors import BadRequest, Kind, SchedulerError, Unavailable
from redisched.server.responses import JSON

log = logging.getLogger(__name__)
http_log = logging.getLogger("redisched.http")
REASON_CHARS = 500  # a 422's list of errors can be long: the log line keeps its start

BACKEND_ERRORS = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    psycopg_pool.PoolTimeout,
    psycopg.OperationalError,
)


# kind -> (status, detail prefix, headers); the detail is "<prefix>: <message>", or the
# prefix alone for an error without message.
ANSWERS: dict[Kind, tuple[int, str, dict[str, str]]] = {
    Kind.INTERNAL: (500, "Internal error", {}),
    Kind.NOT_FOUND: (404, "Resource not found", {}),
    Kind.BAD_REQUEST: (400, "Bad request error occurred", {}),
    Kind.VALIDATION: (400, "Validation error occurred", {}),
    Kind.INVALID_REQUEST: (422, "Request validation failed", {}),  # detail: the list of errors
    Kind.INVALID_FILTER: (400, "Invalid filter(s)", {}),
    Kind.CONFLICT: (409, "Conflict error occurred", {"Retry-After": "60"}),
    Kind.QUEUE_FULL: (429, "Too many requests", {}),
    Kind.UNAVAILABLE: (503, "Service unavailable", {"Retry-After": "1"}),
    Kind.UNAUTHENTICATED: (401, "Not authenticated", {"WWW-Authenticate": "Bearer"}),
    Kind.FORBIDDEN: (403, "Not enough permissions", {}),
    Kind.TOO_LARGE: (413, "Request body too large", {}),
    Kind.UNSUPPORTED_MEDIA: (415, "Unsupported media type", {}),
    Kind.CROSS_SITE: (403, "Cross-site request refused", {}),
    Kind.REQUEST_TIMEOUT: (408, "Request timeout", {}),
    Kind.HEADERS_TOO_LARGE: (431, "Request headers too large", {}),
}


def status_of(exc: SchedulerError) -> int:
    return ANSWERS[exc.kind][0]


def detail_of(exc: SchedulerError) -> object:
    """The answer's ``detail``: the contract's sentence, or a 422's list of errors."""
    if exc.kind is Kind.INVALID_REQUEST:
        return exc.errors  # type: ignore[attr-defined]
    prefix = ANSWERS[exc.kind][1]
    return f"{prefix}: {exc.message}" if exc.message else prefix


def headers_of(exc: SchedulerError) -> dict[str, str]:
    return ANSWERS[exc.kind][2]


async def scheduler_error(request: Request, exc: SchedulerError) -> JSON:
    return _answer(request, status_of(exc), detail_of(exc), headers_of(exc))


async def http_error(request: Request, exc: HTTPException) -> JSON:
    return _answer(request, exc.status_code, exc.detail, exc.headers)


async def backend_unavailable(request: Request, exc: Exception) -> JSON:
    log.warning("%s %s: backend unavailable: %r", request.method, request.url.path, exc)
    return await scheduler_error(request, Unavailable(type(exc).__name__))


# Error replies that mean "not now", not "never": a script running past busy-reply-threshold
# (BUSY), a server loading its data, a cluster slot moving or without its master, memory full.
TRANSIENT_REPLIES = ("BUSY", "LOADING", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "NOREPLICAS", "OOM")
TRANSIENT_REPLY_ERRORS = (
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.OutOfMemoryError,
)


def is_transient_reply(exc: redis.exceptions.ResponseError) -> bool:
    return isinstance(exc, TRANSIENT_REPLY_ERRORS) or str(exc).startswith(TRANSIENT_REPLIES)


async def redis_reply_error(request: Request, exc: redis.exceptions.ResponseError) -> JSON:
    if is_transient_reply(exc):
        return await backend_unavailable(request, exc)
    log.error("%s %s: Redis refused a command: %r", request.method, request.url.path, exc)
    return JSON({"detail": "Internal Server Error"}, status_code=500)


def _answer(request: Request, status: int, detail: object, headers: dict[str, str] | None = None) -> JSON:
    """The error's answer, ``{"detail": ...}``, logged with its reason."""
    reason = detail if isinstance(detail, str) else msgspec.json.encode(detail).decode()
    client = request.client
    http_log.log(
        logging.WARNING if status >= 500 else logging.INFO, '%s - "%s %s" %d %s',
        f"{client.host}:{client.port}" if client else "-", request.method, request.url.path, status,
        reason[:REASON_CHARS],
    )  # fmt: skip
    return JSON({"detail": detail}, status_code=status, headers=headers or None)


async def client_gone(_request: Request, _exc: ClientDisconnect) -> Response:
    """The client went (or its connection was cut, connections.py) before its body arrived:
    nobody reads this answer, and it is no server error to log."""
    return Response(status_code=400)


HANDLERS = {
    SchedulerError: scheduler_error,
    ClientDisconnect: client_gone,
    HTTPException: http_error,
    **dict.fromkeys(BACKEND_ERRORS, backend_unavailable),
    redis.exceptions.ResponseError: redis_reply_error,
    redis.exceptions.RedisClusterException: backend_unavailable,
}


# --- the HTTP layer's own refusals -----------------------------------------------------------


class UnsupportedMediaType(SchedulerError):
    kind = Kind.UNSUPPORTED_MEDIA


class CrossSiteRequest(SchedulerError):
    kind = Kind.CROSS_SITE


class AmbiguousAuthorization(BadRequest):
    def __init__(self) -> None:
        super().__init__("more than one Authorization header")


class RequestTimeout(SchedulerError):
    kind = Kind.REQUEST_TIMEOUT


class HeadersTooLarge(SchedulerError):
    kind = Kind.HEADERS_TOO_LARGE


class TooManyConnections(Unavailable):
    def __init__(self) -> None:
        super().__init__("too many connections")


def error_response(exc: SchedulerError) -> JSON:
    """``exc``'s answer where there is no request to log it with (connections.py logs its own)."""
    return JSON({"detail": detail_of(exc)}, status_code=status_of(exc), headers=headers_of(exc) or None)


def raw_response(exc: SchedulerError) -> bytes:
    """``exc``'s answer as the bytes of an HTTP/1.1 response that closes the connection, for
    the connection layer, which answers outside any ASGI cycle."""
    response = error_response(exc)
    status = HTTPStatus(response.status_code)
    lines = [b"HTTP/1.1 %d %s\r\n" % (status.value, status.phrase.encode())]
    lines += [b"%s: %s\r\n" % header for header in response.raw_headers]
    return b"".join([*lines, b"connection: close\r\n\r\n", response.body])
