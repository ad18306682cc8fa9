"""What the Katalogus, Octopoes and Bytes clients share: one ``httpx.AsyncClient`` per service,
bounded retries with exponential backoff, typed errors, a health probe and a TTL cache.

Retried (then ``ServiceUnavailable``): connection errors, timeouts and 502/503/504 answers.
Never retried: any other answer; a 404 is the caller's business (most methods return None or
empty), other error statuses raise ``ServiceResponseError``, an undecodable body raises
``InvalidResponse``. A client built with base URL None is "not configured": every call raises
``ServiceNotConfigured`` and ``healthy()`` is False.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, ClassVar, Generic, Self, TypeVar

import httpx
import msgspec

from redisched import __version__

log = logging.getLogger(__name__)

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

RETRYABLE_STATUSES = frozenset({502, 503, 504})
MAX_BACKOFF_SECONDS = 10.0


class ExternalServiceError(Exception):
    """Katalogus, Octopoes or Bytes could not give a usable answer."""

    def __init__(self, service: str, message: str) -> None:
        super().__init__(f"{service}: {message}")
        self.service = service


class ServiceNotConfigured(ExternalServiceError):
    """The service has no base URL (e.g. ``KATALOGUS_API`` unset)."""


class ServiceUnavailable(ExternalServiceError):
    """No answer after all attempts: connection refused, timeout, or 502/503/504."""


class ServiceResponseError(ExternalServiceError):
    """The service answered with an error status we do not handle."""

    def __init__(self, service: str, message: str, status_code: int) -> None:
        super().__init__(service, message)
        self.status_code = status_code


class AuthenticationError(ServiceResponseError):
    """The service refused our credentials, also after logging in again."""


class InvalidResponse(ExternalServiceError):
    """The body does not decode as the expected shape."""


class Health(msgspec.Struct):
    healthy: bool = False


class TTLCache(Generic[K, V]):
    """Values loaded on a miss and kept ``ttl`` seconds. Concurrent misses for one key share a
    single load; failures are not cached. ``ttl <= 0`` keeps nothing (loads are still shared)."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._values: dict[K, tuple[float, V]] = {}
        self._loading: dict[K, asyncio.Task[V]] = {}

    async def get(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        hit = self._values.get(key)
        if hit is not None and hit[0] > self._clock():
            return hit[1]
        task = self._loading.get(key)
        if task is None:
            task = asyncio.ensure_future(load())
            self._loading[key] = task
            task.add_done_callback(lambda done: self._store(key, done))
        # Shielded: one cancelled caller must not cancel the load the others wait for.
        return await asyncio.shield(task)

    def invalidate(self, key: K | None = None) -> None:
        if key is None:
            self._values.clear()
        else:
            self._values.pop(key, None)

    def _store(self, key: K, task: asyncio.Task[V]) -> None:
        self._loading.pop(key, None)
        if not task.cancelled() and task.exception() is None and self.ttl > 0:
            self._values[key] = (self._clock() + self.ttl, task.result())


class ServiceClient:
    """Base of the service clients. Subclasses set ``name`` and call ``_get``/``_send``."""

    name: ClassVar[str]
    health_path: ClassVar[str] = "/health"

    def __init__(
        self,
        base_url: str | None,
        *,
        timeout: float = 10.0,
        pool_connections: int = 10,
        max_attempts: int = 3,
        backoff: float = 0.5,
    ) -> None:
        self.base_url = base_url.rstrip("/") if base_url else None
        self.max_attempts = max(1, max_attempts)
        self.backoff = backoff
        self._http = self._build_http(timeout, pool_connections) if self.base_url else None

    @property
    def configured(self) -> bool:
        return self._http is not None

    async def healthy(self) -> bool:
        """One attempt at ``GET /health``; any failure counts as unhealthy."""
        return await self._probe(self.health_path)

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- for subclasses --------------------------------------------------------------------

    async def _get(self, path: str, into: type[T], params: Any = None) -> T | None:
        """GET and decode; None on 404."""
        response = await self._send("GET", path, params=params)
        if response.status_code == httpx.codes.NOT_FOUND:
            return None
        return self._decode(response, into)

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The request every data call makes; the place for a subclass to add authentication."""
        return await self._request(method, path, **kwargs)

    async def _request(
        self, method: str, path: str, *, attempts: int | None = None, **kwargs: Any
    ) -> httpx.Response:
        http = self._require_http()
        attempts = attempts or self.max_attempts
        for attempt in range(1, attempts + 1):
            try:
                response = await http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                failure = f"{type(exc).__name__}: {exc}".rstrip(": ")
            else:
                if response.status_code not in RETRYABLE_STATUSES:
                    return response
                failure = f"HTTP {response.status_code}"
            if attempt < attempts:
                log.warning("%s %s %s failed (%s), attempt %d/%d", self.name, method, path, failure, attempt, attempts)
                await asyncio.sleep(self._backoff_delay(attempt))
        raise ServiceUnavailable(self.name, f"{method} {path}: {failure} after {attempts} attempt(s)")

    def _decode(self, response: httpx.Response, into: type[T]) -> T:
        request = response.request
        if response.is_error:
            raise ServiceResponseError(
                self.name, f"{request.method} {request.url.path} answered {response.status_code}", response.status_code
            )
        try:
            return msgspec.json.decode(response.content, type=into)
        except msgspec.DecodeError as exc:
            raise InvalidResponse(self.name, f"{request.method} {request.url.path}: {exc}") from exc

    async def _probe(self, path: str) -> bool:
        if not self.configured:
            return False
        try:
            response = await self._request("GET", path, attempts=1)
            return self._decode(response, Health).healthy
        except ExternalServiceError as exc:
            log.warning("%s health probe %s failed: %s", self.name, path, exc)
            return False

    # --- internals -------------------------------------------------------------------------

    def _build_http(self, timeout: float, pool_connections: int) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout,
            limits=httpx.Limits(max_connections=pool_connections, max_keepalive_connections=pool_connections),
            headers={"User-Agent": f"redisched/{__version__}"},
        )

    def _require_http(self) -> httpx.AsyncClient:
        if self._http is None:
            raise ServiceNotConfigured(self.name, "no base URL configured")
        return self._http

    def _backoff_delay(self, attempt: int) -> float:
        return min(self.backoff * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS)


def drop_none(params: dict[str, Any]) -> dict[str, Any]:
    """httpx sends None as an empty value (``boefje_id=``); upstream APIs read that as a filter."""
    return {key: value for key, value in params.items() if value is not None}
