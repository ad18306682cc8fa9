"""What a route answers: msgspec-encoded JSON (one encode, ``Task.data`` copied raw), the
API's own response shapes, and pagination."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Generic, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from redisched.models import Task

T = TypeVar("T")

_encoder = msgspec.json.Encoder()


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return _encoder.encode(content)


class PopResult(msgspec.Struct):
    results: list[Task]


class Paginated(msgspec.Struct, Generic[T]):
    count: int
    next: str | None
    previous: str | None
    results: list[T]


class LeaseExtended(msgspec.Struct):
    id: uuid.UUID
    lease_expires_at: datetime


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
