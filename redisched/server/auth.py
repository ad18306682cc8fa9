"""Optional bearer-token auth. With no token configured every route is open, as in mula (and
the app logs a loud warning). With any token configured, every route but ``/health`` (and
Swagger UI's static files, server/docs.py, and the dashboard's page and files) needs one: a
runner token opens what the runners call (pop, get a task, patch its status, extend its
lease), a viewer token every read (the dashboard, listings, counts) and no change, an admin
token everything."""

from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Literal

from starlette.requests import Request
from starlette.responses import Response

from redisched.errors import Kind, SchedulerError

log = logging.getLogger(__name__)

Role = Literal["public", "runner", "viewer", "any", "admin"]  # who a route is open to
Caller = Literal["runner", "viewer", "admin"]  # what a token makes its holder
OPEN_TO: dict[str, frozenset[str]] = {
    "runner": frozenset({"runner", "admin"}),
    "viewer": frozenset({"viewer", "admin"}),
    "any": frozenset({"runner", "viewer", "admin"}),
    "admin": frozenset({"admin"}),
}
Endpoint = Callable[[Request], Awaitable[Response]]


class Unauthorized(SchedulerError):
    kind = Kind.UNAUTHENTICATED


class Forbidden(SchedulerError):
    kind = Kind.FORBIDDEN


class Tokens:
    def __init__(self, admin: list[str], runner: list[str], viewer: list[str] | None = None) -> None:
        self.admin = [token.encode() for token in admin if token]
        self.runner = [token.encode() for token in runner if token]
        self.viewer = [token.encode() for token in viewer or [] if token]

    @property
    def enabled(self) -> bool:
        return bool(self.admin or self.runner or self.viewer)

    def role_of(self, request: Request) -> Caller | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        given = token.strip().encode()
        if _any_equal(given, self.admin):
            return "admin"
        if _any_equal(given, self.runner):
            return "runner"
        if _any_equal(given, self.viewer):
            return "viewer"
        return None

    def guard(self, endpoint: Endpoint, needs: Role) -> Endpoint:
        """``endpoint`` behind a check that the caller's role opens it; the role is left in
        ``request.state.role`` ("admin" for everyone when auth is off; on a public route,
        None for a caller without a valid token)."""
        if not self.enabled:
            return endpoint
        if needs == "public":

            @functools.wraps(endpoint)
            async def public(request: Request) -> Response:
                request.state.role = self.role_of(request)
                return await endpoint(request)

            return public

        @functools.wraps(endpoint)
        async def guarded(request: Request) -> Response:
            role = self.role_of(request)
            if role is None:
                raise Unauthorized()
            if role not in OPEN_TO[needs]:
                raise Forbidden()
            request.state.role = role
            return await endpoint(request)

        return guarded


def role(request: Request) -> Caller:
    return getattr(request.state, "role", "admin")


def authenticated(request: Request) -> bool:
    """Whether the caller showed a valid token (always, with auth off)."""
    return getattr(request.state, "role", "admin") is not None


def _any_equal(given: bytes, tokens: list[bytes]) -> bool:
    """Compares with every token, in constant time each, so timing tells nothing."""
    found = False
    for token in tokens:
        found |= hmac.compare_digest(given, token)
    return found


def warn_if_open(tokens: Tokens) -> None:
    if not tokens.enabled:
        log.warning(
            "AUTH IS OFF: every route answers anyone who can reach it (as mula did). "
            "Set REDISCHED_ADMIN_TOKENS / REDISCHED_RUNNER_TOKENS / REDISCHED_VIEWER_TOKENS to require bearer tokens."
        )
