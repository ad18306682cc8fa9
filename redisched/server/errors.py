"""Every failure a route can meet, mapped to its HTTP answer in one place.

Domain errors carry their status, ``detail`` and headers (redisched/errors.py); request
validation is FastAPI's 422 list; a bad filter is a 400 at once (mula: a 500 after ~10 s);
Redis or Postgres not answering in time is a 503 with ``Retry-After``.
"""

from __future__ import annotations

import logging

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

BACKEND_ERRORS = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    psycopg_pool.PoolTimeout,
    psycopg.OperationalError,
)


async def scheduler_error(_request: Request, exc: SchedulerError) -> JSON:
    if isinstance(exc, InvalidRequest):
        return JSON({"detail": exc.errors}, status_code=422)
    return JSON({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers or None)


async def filter_error(_request: Request, exc: FilterError) -> JSON:
    if exc.status == 422:
        return JSON({"detail": exc.errors}, status_code=422)
    return JSON({"detail": f"Invalid filter(s): {exc.message}"}, status_code=400)


async def http_error(_request: Request, exc: HTTPException) -> JSON:
    return JSON({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def backend_unavailable(request: Request, exc: Exception) -> JSON:
    log.warning("%s %s: backend unavailable: %r", request.method, request.url.path, exc)
    return await scheduler_error(request, Unavailable(type(exc).__name__))


HANDLERS = {
    SchedulerError: scheduler_error,
    FilterError: filter_error,
    HTTPException: http_error,
    **dict.fromkeys(BACKEND_ERRORS, backend_unavailable),
}
