"""Domain errors. Each carries a ``kind`` (what went wrong, in the contract's terms) and a
message; the API answers each kind with its HTTP status, detail and headers in one place
(server/errors.py), so the queue, the history and the schedulers stay free of HTTP.

``ScriptError`` is the Lua scripts' error replies: the one list of codes, generated into every
script as ``local E_<NAME> = <code>`` (queue/scripts.py), as the KEYS locals are."""

from __future__ import annotations

import enum


class Kind(enum.Enum):
    INTERNAL = "internal"
    NOT_FOUND = "not found"
    BAD_REQUEST = "bad request"
    VALIDATION = "validation"  # a value the contract refuses (mula's ValidationError)
    INVALID_REQUEST = "invalid request"  # a request that does not parse: FastAPI's list of errors
    INVALID_FILTER = "invalid filter"
    CONFLICT = "conflict"
    QUEUE_FULL = "queue full"
    UNAVAILABLE = "unavailable"  # a backing service did not answer in time
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    TOO_LARGE = "too large"  # a request body past the limit
    UNSUPPORTED_MEDIA = "unsupported media"
    CROSS_SITE = "cross site"
    REQUEST_TIMEOUT = "request timeout"
    HEADERS_TOO_LARGE = "headers too large"


class ScriptError(enum.IntEnum):
    """A script's error reply (a negative integer)."""

    CONFLICT = -1  # another task with the same hash is queued (or live, when asked)
    QUEUE_FULL = -2  # maxsize reached and priority > 1
    ID_EXISTS = -3  # a live task already has this id
    NOT_FOUND = -4  # no live task with this id in this queue
    STALE_LEASE = -5  # the lease token given is not the task's current one
    STALE_RULES = -6  # the partition follows newer limit rules than the push was made with


class SchedulerError(Exception):
    kind = Kind.INTERNAL

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message


class NotFound(SchedulerError):
    kind = Kind.NOT_FOUND


class BadRequest(SchedulerError):
    kind = Kind.BAD_REQUEST


class ValidationFailed(SchedulerError):
    kind = Kind.VALIDATION


class Conflict(SchedulerError):
    kind = Kind.CONFLICT


class StaleLease(Conflict):
    """A change carried a lease token that is no longer the task's: the task was taken back
    and perhaps handed to another runner."""


class QueueFull(SchedulerError):
    kind = Kind.QUEUE_FULL


class Unavailable(SchedulerError):
    """A backing service (Redis, Postgres) did not answer in time."""

    kind = Kind.UNAVAILABLE
