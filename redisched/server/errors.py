"""Every failure a route can meet, mapped to its HTTP answer in one place.

Domain errors carry their status, ``detail`` and headers (redisched/errors.py); request
validation is FastAPI's 422 list; a bad filter is a 400 at once (mula: a 500 after ~10 s);
Redis or Postgres not answering in time is a 503 with ``Retry-After``. Each is logged with its
reason on ``redisched.http`` (INFO for 4xx, WARNING for 5xx), also when the access log is off.
"""

from __future__ import annotations

import logging

import msgspec
import psycopg
import psycopg_pool
import redis.exceptions
from starlette.exceptions import HTTPException
from starlette.requests import Request

from redisched.errors import SchedulerError, Unavailable
from redisched.filters import FilterError
from redisched.server.responses import JSON
from redisched.server.validation import InvalidRequest

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


async def scheduler_error(request: Request, exc: SchedulerError) -> JSON:
    if isinstance(exc, InvalidRequest):
        return _answer(request, 422, exc.errors)
    return _answer(request, exc.status_code, exc.detail, exc.headers)


async def filter_error(request: Request, exc: FilterError) -> JSON:
    if exc.status == 422:
        return _answer(request, 422, exc.errors)
    return _answer(request, 400, f"Invalid filter(s): {exc.message}")


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


HANDLERS = {
    SchedulerError: scheduler_error,
    FilterError: filter_error,
    HTTPException: http_error,
    **dict.fromkeys(BACKEND_ERRORS, backend_unavailable),
    redis.exceptions.ResponseError: redis_reply_error,
    redis.exceptions.RedisClusterException: backend_unavailable,
}
