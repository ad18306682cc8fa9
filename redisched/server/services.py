"""The process's ``Services`` (redisched/services.py), as a route reaches them."""

from __future__ import annotations

from starlette.requests import Request

from redisched.services import Services


def services(request: Request) -> Services:
    return request.app.state.services
