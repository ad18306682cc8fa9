"""The HTTP server's connections: uvicorn on httptools, with the limits uvicorn leaves out.

uvicorn closes a keep-alive connection idle between requests, but it never times out one that
sends a request slowly: a byte every few seconds holds a connection (and its memory) for as
long as the client likes ("slowloris"), and httptools caps no header size. So each connection
here has one deadline at a time:

- from its opening, or from the first byte of a request, the request line and headers must
  arrive within ``header_timeout`` (and stay under ``max_header_bytes``, else 431);
- from the end of the headers, the body must arrive within ``body_timeout``;
- once a request is whole, the route has all the time it needs (a long-poll waits up to 30 s),
  and after the response uvicorn's ``timeout_keep_alive`` closes an idle connection.

A request cut by a deadline is answered 408 when no answer has started, and its connection
closed. Past ``max_connections`` open connections a request is answered 503 with
``Retry-After`` (JSON like every other error, and the connection closed) instead of being
served. When the server starts shutting down (SIGTERM), the lifespan state's ``stopping``
event (longpoll.py) is set, so long-polls answer at once instead of holding up the exit.

uvicorn's internals are touched here and only here: its httptools protocol's parser callbacks
(``on_headers_complete``, ``on_message_complete``), ``on_response_complete``, ``shutdown()``,
its ``app``, ``url``, ``headers`` and ``cycle``, and its ``transport``, which is wrapped so
that a response's headers and body leave in one write (``CoalescedWrites``). tests/integration/test_http_connections.py
pins each behaviour against a real ``redisched api`` process, tests/unit/test_connections.py
the deadlines' bookkeeping.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from redisched.config import Settings
from redisched.errors import SchedulerError
from redisched.server.errors import (
    HeadersTooLarge,
    RequestTimeout,
    TooManyConnections,
    detail_of,
    error_response,
    http_log,
    raw_response,
    status_of,
)
from redisched.server.longpoll import stopping_event


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float
    body_timeout: float
    max_header_bytes: int
    max_connections: int


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments for ``uvicorn.Config`` / ``uvicorn.run`` that apply ``settings``'
    connection limits (picklable, for ``--workers``)."""
    limits = ConnectionLimits(
        header_timeout=settings.http_header_timeout,
        body_timeout=settings.http_body_timeout,
        max_header_bytes=settings.http_max_header_bytes,
        max_connections=settings.http_max_connections,
    )
    return {
        "http": functools.partial(GuardedHttpToolsProtocol, limits=limits),
        "timeout_keep_alive": settings.http_keepalive_timeout,
        "timeout_graceful_shutdown": settings.http_shutdown_timeout,
        "limit_concurrency": None,  # the protocol's own cap answers in JSON, with Retry-After
    }


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        # One timer per connection, not one per request (a timer costs more than parsing a
        # request): arming moves ``_deadline_at``; the timer, when it fires, re-arms itself for
        # a later deadline, or does nothing when there is none.
        self._deadline_at: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._awaiting_headers = True  # the next bytes belong to a request's line or headers
        self._request_bytes = 0  # received since the last request ended

    # --- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = CoalescedWrites(transport, self.loop)  # type: ignore[assignment]
        stopping_event(self.app_state)  # made now, before any request copies the state
        self._arm(self.limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._awaiting_headers:
            self._request_bytes += len(data)
            if self._deadline_at is None and not self._answering():
                self._arm(self.limits.header_timeout)  # the first byte of the next request
        super().data_received(data)
        if self._awaiting_headers and self._request_bytes > self.limits.max_header_bytes:
            too_large = HeadersTooLarge(f"more than {self.limits.max_header_bytes} bytes")
            self._refuse(too_large, answer=not self._answering())

    def shutdown(self) -> None:
        stopping_event(self.app_state).set()
        super().shutdown()

    # --- httptools parser callbacks ------------------------------------------------------------

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._arm(self.limits.body_timeout)
        if self._headers_too_large():
            refusal = HeadersTooLarge(f"more than {self.limits.max_header_bytes} bytes")
        elif len(self.connections) > self.limits.max_connections:
            refusal = TooManyConnections()
        else:
            super().on_headers_complete()
            return
        app, self.app = self.app, _refusing(refusal)  # the cycle this call starts runs it
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def _headers_too_large(self) -> bool:
        """Whether the headers, arrived whole in one read, are past the limit (streamed in
        pieces, data_received refuses them as they come)."""
        if self._request_bytes <= self.limits.max_header_bytes:  # what arrived: headers and maybe body
            return False
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        return size > self.limits.max_header_bytes

    def on_message_complete(self) -> None:
        self._disarm()
        self._awaiting_headers, self._request_bytes = True, 0
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # A next request begun while this one was answered gets its header deadline now.
        if self._awaiting_headers and self._request_bytes and self._deadline_at is None:
            self._arm(self.limits.header_timeout)

    # --- deadlines ---------------------------------------------------------------------------

    def _answering(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _arm(self, seconds: float) -> None:
        self._deadline_at = self.loop.time() + seconds
        if self._timer is None or self._deadline_at < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = self._deadline_at
            self._timer = self.loop.call_at(self._deadline_at, self._check_deadline)

    def _disarm(self) -> None:
        self._deadline_at = None

    def _check_deadline(self) -> None:
        self._timer = None
        if self._deadline_at is None:
            return
        if self.loop.time() < self._deadline_at:
            self._timer_at = self._deadline_at
            self._timer = self.loop.call_at(self._deadline_at, self._check_deadline)
            return
        self._deadline_at = None
        self._expired()

    def _expired(self) -> None:
        if self.transport.is_closing():
            return
        if not self._awaiting_headers:  # this request's route may have answered already (it read no body)
            answer = self.cycle is None or not self.cycle.response_started
            self._refuse(RequestTimeout(f"the body took more than {self.limits.body_timeout:g} s"), answer=answer)
        elif self._request_bytes:
            self._refuse(RequestTimeout(f"the headers took more than {self.limits.header_timeout:g} s"), answer=True)
        else:
            self.transport.close()  # opened and never used

    def _refuse(self, exc: SchedulerError, *, answer: bool) -> None:
        """Answer ``exc`` (unless an answer is under way: bytes of ours would corrupt it) outside
        any ASGI cycle, and close; a route still reading the body then sees the client gone."""
        if self.transport.is_closing():
            return
        _log_refusal(self.client, "connection", exc)
        if answer:
            self.transport.write(raw_response(exc))
        self.transport.close()


class CoalescedWrites:
    """A connection's transport whose writes within one turn of the event loop leave as one.
    uvicorn writes a response's status line and headers, then its body, each with its own
    ``write`` (a send syscall each: on the pop route, ~15 % of an API process's CPU); here the
    two meet in one buffer and one send, at the end of the turn. The order of bytes on the
    connection is kept: every write of the protocol goes through here, and closing sends
    what is held first."""

    __slots__ = ("_transport", "_loop", "_held")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport, self._loop = transport, loop
        self._held: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._held:
            self._loop.call_soon(self.flush)
        self._held.append(data)

    def flush(self) -> None:
        if not self._held:
            return
        held, self._held = self._held, []
        if not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = []
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:  # everything else is the transport's
        return getattr(self._transport, name)


def _refusing(refusal: SchedulerError) -> Any:
    """An ASGI app answering ``refusal`` on a connection it then closes."""

    async def refuse(scope: Any, receive: Any, send: Any) -> None:
        _log_refusal(scope.get("client"), f'"{scope["method"]} {scope["path"]}"', refusal)
        response = error_response(refusal)
        response.headers["connection"] = "close"
        await response(scope, receive, send)

    return refuse


def _log_refusal(client: tuple[str, int] | None, request: str, refusal: SchedulerError) -> None:
    """As server/errors.py logs a route's 4xx and 5xx (INFO, WARNING), for the connection's."""
    status = status_of(refusal)
    level = logging.WARNING if status >= 500 else logging.INFO
    peer = f"{client[0]}:{client[1]}" if client else "-"
    http_log.log(level, "%s - %s %d %s", peer, request, status, detail_of(refusal))
