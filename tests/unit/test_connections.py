"""The connection deadlines' bookkeeping on uvicorn's httptools protocol, with a fake transport
on a real event loop (the behaviour over real sockets: tests/integration/test_http_connections.py)."""

from __future__ import annotations

import asyncio
import time

from uvicorn.config import Config
from uvicorn.server import ServerState

from redisched.server.connections import ConnectionLimits, GuardedHttpToolsProtocol

REQUEST = b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n"


async def _ok(scope, receive, send) -> None:
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written, self.closed_at = b"", None

    def write(self, data: bytes) -> None:
        self.written += data

    def get_extra_info(self, name: str, default=None):
        return {"peername": ("127.0.0.1", 1), "sockname": ("127.0.0.1", 2)}.get(name, default)

    def is_closing(self) -> bool:
        return self.closed_at is not None

    def close(self) -> None:
        self.closed_at = self.closed_at or time.monotonic()

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _connection(limits: ConnectionLimits) -> tuple[GuardedHttpToolsProtocol, FakeTransport]:
    config = Config(_ok, log_config=None, access_log=False, timeout_keep_alive=60)
    config.load()
    protocol = GuardedHttpToolsProtocol(config=config, server_state=ServerState(), app_state={}, limits=limits)
    transport = FakeTransport()
    protocol.connection_made(transport)
    return protocol, transport


async def test_many_requests_on_one_connection_keep_one_timer():
    protocol, transport = _connection(ConnectionLimits(10, 30, 16384, 100))
    first_timer = protocol._timer
    for _ in range(200):
        protocol.data_received(REQUEST)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    assert transport.written.count(b"HTTP/1.1 200 OK") == 200
    assert protocol._timer is first_timer and protocol._deadline_at is None  # between requests: none
    protocol.connection_lost(None)
    assert protocol._timer is None


async def test_a_body_deadline_shorter_than_the_header_one_still_fires_on_time():
    protocol, transport = _connection(ConnectionLimits(header_timeout=10, body_timeout=0.2, max_header_bytes=16384, max_connections=100))
    started = time.monotonic()
    protocol.data_received(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n{")
    for _ in range(100):
        if transport.closed_at:
            break
        await asyncio.sleep(0.02)
    assert transport.closed_at is not None and transport.closed_at - started < 0.5
    assert transport.written.startswith(b"HTTP/1.1 408 Request Timeout")
    protocol.connection_lost(None)


async def test_a_deadline_moved_later_is_waited_for():
    protocol, transport = _connection(ConnectionLimits(header_timeout=0.2, body_timeout=0.6, max_header_bytes=16384, max_connections=100))
    started = time.monotonic()
    protocol.data_received(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n{")  # headers done at once
    for _ in range(100):
        if transport.closed_at:
            break
        await asyncio.sleep(0.02)
    assert transport.closed_at is not None and 0.55 < transport.closed_at - started < 1.0
    assert b"the body took more than 0.6 s" in transport.written
    protocol.connection_lost(None)
