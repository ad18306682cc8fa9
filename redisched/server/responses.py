"""What a route answers: msgspec-encoded JSON (one encode, ``Task.data`` copied raw), the
API's own response shapes, and pagination."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from redisched.config import MAX_WEIGHT, MIN_WEIGHT
from redisched.models import Task

T = TypeVar("T")

_encoder = msgspec.json.Encoder()


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return _encoder.encode(content)

    def init_headers(self, headers: Mapping[str, str] | None = None) -> None:
        """Starlette's headers (content-length, then content-type), built directly when the
        route adds none and the status has a body."""
        if headers is None and self.status_code >= 200 and self.status_code not in (204, 304):
            self.raw_headers = [(b"content-length", b"%d" % len(self.body)), _CONTENT_TYPE]
        else:
            super().init_headers(headers)


_CONTENT_TYPE = (b"content-type", b"application/json")


class PopResult(msgspec.Struct):
    results: list[Task]


class PatchedAndPopped(msgspec.Struct):
    """Finish and fetch: the patched task, and the tasks popped after it."""

    task: Task
    results: list[Task]


class Paginated(msgspec.Struct, Generic[T]):
    count: int
    next: str | None
    previous: str | None
    results: list[T]


class LeaseExtended(msgspec.Struct):
    id: uuid.UUID
    lease_expires_at: datetime


class QuarantineRetry(msgspec.Struct, forbid_unknown_fields=True):
    """Which quarantined events to put back (ids as listed); no body or no ids: all."""

    ids: list[str] | None = None


class QuarantineRetried(msgspec.Struct):
    retried: int


class LimitRule(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A limit rule as REDISCHED_LIMITS takes it (redisched/limit_rules.py)."""

    boefje: str
    group: str
    cooldown: float | None = None
    rate: str | None = None
    concurrency: int | None = None


class LimitRules(msgspec.Struct):
    """The limit rules in force; ``version`` grows with each replacement, ``source`` says who
    set them: ``env`` (REDISCHED_LIMITS at start) or ``admin`` (PUT /limits)."""

    rules: list[LimitRule]
    version: str
    source: str

class WeightChange(msgspec.Struct, forbid_unknown_fields=True):
    """An organisation's weight in the fair pop: 1e-6 to 1e6 (1 is everyone's default)."""

    weight: Annotated[float, msgspec.Meta(ge=MIN_WEIGHT, le=MAX_WEIGHT)]


class OrganisationWeight(msgspec.Struct):
    organisation: str
    weight: float


class ErrorDetail(msgspec.Struct):
    detail: str


class ValidationErrorDetail(msgspec.Struct):
    detail: list[dict[str, Any]]


def paginated(request: Request, count: int, results: list[T], offset: int, limit: int) -> JSON:
    """mula's page: ``next`` while ``offset + limit <= count``, ``previous`` while
    ``offset - limit >= 0``, both this request's absolute URL with another offset."""
    url = request.url
    following = str(url.include_query_params(offset=offset + limit)) if offset + limit <= count else None
    preceding = str(url.include_query_params(offset=offset - limit)) if offset - limit >= 0 else None
    return JSON(Paginated(count, following, preceding, results))
