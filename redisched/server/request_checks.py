"""What every request must pass before its route runs: one ``Authorization`` header at most
(with two, which one counts would depend on the proxy: 400), a body in JSON or undeclared
(415 for anything else), and no cross-site state change (403).

Why: with auth off (the default, as in mula) a web page an operator happens to open can send
the API a "simple" cross-site request, one no CORS preflight stops: a ``POST`` whose body is
``text/plain``, a form or multipart. Refusing every non-JSON body closes that door (a JSON
``Content-Type`` cannot be sent cross-site without a preflight, which this API never
answers); refusing a state-changing request whose ``Origin`` names another host, or that the
browser marks ``Sec-Fetch-Site: cross-site``, closes it twice. Server-to-server clients (the
runners, the web UI's backend) send no ``Origin`` and no ``Sec-Fetch-Site``, and OpenKAT's
boefje runner pushes with no ``Content-Type`` at all: both pass.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from redisched.server.auth import Endpoint
from redisched.server.errors import AmbiguousAuthorization, CrossSiteRequest, UnsupportedMediaType

STATE_CHANGING = frozenset({"POST", "PATCH", "PUT", "DELETE"})
DEFAULT_PORTS = {"http": 80, "https": 443}
ANY_ORIGIN = "*"


class Origins:
    """The origins allowed to change state besides the API's own host (``*``: any)."""

    def __init__(self, allowed: Iterable[str]) -> None:
        allowed = [_normal(origin) for origin in allowed]
        self.any = ANY_ORIGIN in allowed
        self.allowed = frozenset(allowed)

    def check(self, origin: bytes | None, fetch_site: bytes | None, host: bytes | None) -> None:
        """Refuse (403) a state change whose ``Origin`` is neither the request's ``Host`` nor
        allowed, or that the browser says is ``cross-site``."""
        if self.any:
            return
        if origin is None:
            raise CrossSiteRequest("Sec-Fetch-Site is cross-site (allow origins with REDISCHED_ALLOWED_ORIGINS)")
        text = _normal(origin.decode("latin-1"))
        if text in self.allowed:
            return
        if fetch_site != b"cross-site" and same_host(text, host.decode("latin-1") if host else ""):
            return
        raise CrossSiteRequest(f"Origin {text[:200]} is not this API (allow it with REDISCHED_ALLOWED_ORIGINS)")


def checked(endpoint: Endpoint, origins: Origins) -> Endpoint:
    """``endpoint`` behind the checks (before authentication: they need no secret)."""

    @functools.wraps(endpoint)
    async def checked_endpoint(request: Request) -> Response:
        check(request.scope, origins)
        return await endpoint(request)

    return checked_endpoint


def check(scope: Any, origins: Origins) -> None:
    """The checks on one request's ASGI ``scope``: one pass over its headers."""
    content_type = origin = fetch_site = host = None
    authorizations = 0
    for name, value in scope["headers"]:
        if name == b"content-type":
            content_type = value
        elif name == b"authorization":
            authorizations += 1
        elif name == b"origin":
            origin = value
        elif name == b"sec-fetch-site":
            fetch_site = value
        elif name == b"host":
            host = value
    if authorizations > 1:
        raise AmbiguousAuthorization()
    if content_type is not None and not is_json(content_type):
        media_type = content_type.decode("latin-1").partition(";")[0].strip()[:100]
        raise UnsupportedMediaType(f"{media_type or 'empty'}; send application/json or no Content-Type")
    if scope["method"] in STATE_CHANGING and (origin is not None or fetch_site == b"cross-site"):
        origins.check(origin, fetch_site, host)


def is_json(content_type: bytes) -> bool:
    """``application/json`` or any ``+json`` type, with or without parameters."""
    media_type = content_type.partition(b";")[0].strip().lower()
    if media_type == b"application/json":
        return True
    return media_type.startswith(b"application/") and media_type.endswith(b"+json")


def same_host(origin: str, host: str) -> bool:
    """Whether ``origin`` (``scheme://host[:port]``) names the host and port of a ``Host``
    header. A ``Host`` without a port is taken to mean the origin scheme's default one: behind
    a TLS proxy the page is ``https://kat.example`` and the request arrives as plain HTTP for
    ``kat.example``."""
    try:
        parts, target = urlsplit(origin), urlsplit("//" + host)
        default = DEFAULT_PORTS.get(parts.scheme)
        if default is None or not parts.hostname or parts.hostname != target.hostname:
            return False
        return (parts.port or default) == (target.port or default)
    except ValueError:  # a port that is not a number
        return False


def _normal(origin: str) -> str:
    return origin.strip().lower().rstrip("/")
