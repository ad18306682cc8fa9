"""Domain errors. Each carries the HTTP status and ``detail`` of the API contract, so the
queue, the history and the schedulers raise them and the API maps them in one place."""

from __future__ import annotations


class SchedulerError(Exception):
    status_code = 500
    prefix = "Internal error"
    headers: dict[str, str] = {}

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    @property
    def detail(self) -> str:
        return f"{self.prefix}: {self.message}" if self.message else self.prefix


class NotFound(SchedulerError):
    status_code = 404
    prefix = "Resource not found"


class BadRequest(SchedulerError):
    status_code = 400
    prefix = "Bad request error occurred"


class ValidationFailed(SchedulerError):
    status_code = 400
    prefix = "Validation error occurred"


class Conflict(SchedulerError):
    status_code = 409
    prefix = "Conflict error occurred"
    headers = {"Retry-After": "60"}


class StaleLease(Conflict):
    """A change carried a lease token that is no longer the task's: the task was taken back
    and perhaps handed to another runner."""


class QueueFull(SchedulerError):
    status_code = 429
    prefix = "Too many requests"

    @property
    def detail(self) -> str:
        return self.prefix


class Unavailable(SchedulerError):
    """A backing service (Redis, Postgres) did not answer in time."""

    status_code = 503
    prefix = "Service unavailable"
    headers = {"Retry-After": "1"}
