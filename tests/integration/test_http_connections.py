"""Connections against a real ``redisched api`` on 127.0.0.1: slow and idle clients are cut
within their timeouts, past the connection cap requests get 503, SIGTERM answers long-polls
at once and exits, two Authorization headers are a 400, and ``/health?externals=true`` asks
each dependency once per cache period, its details for token holders only.

Timeouts here are short (1 s headers, 1.5 s body, 1 s keep-alive) so the suite stays fast;
the code paths are the ones the defaults take. Every loop is bounded in count and time."""

from __future__ import annotations

import asyncio
import collections
import http.server
import json
import signal
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.http_server import api_process, backends, template_db  # noqa: F401

HEADER_TIMEOUT, BODY_TIMEOUT, KEEPALIVE_TIMEOUT = 1.0, 1.5, 1.0
MAX_CONNECTIONS = 30
HEALTH_CACHE_SECONDS = 1.5
SLACK = 1.0  # scheduling on a shared 2-core machine
ADMIN, RUNNER = {"authorization": "Bearer admin-secret"}, {"authorization": "Bearer runner-secret"}


class FakeExternals:
    """Katalogus, Octopoes and Bytes on one local HTTP server, counting the requests per path."""

    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        counter = self.calls

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                counter[self.path] += 1
                body = json.dumps({"healthy": True} if self.path.endswith("/health") else {}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def probes(self) -> dict[str, int]:
        return {name: self.calls[f"/{name}/health"] for name in ("katalogus", "octopoes", "bytes")}


@pytest.fixture(scope="module")
def externals() -> Iterator[FakeExternals]:
    fake = FakeExternals()
    fake.thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


@pytest.fixture(scope="module")
def server(backends, externals):  # noqa: F811
    env = {
        "REDISCHED_ADMIN_TOKENS": '["admin-secret"]',
        "REDISCHED_RUNNER_TOKENS": '["runner-secret"]',
        "REDISCHED_HTTP_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
        "REDISCHED_HTTP_BODY_TIMEOUT": str(BODY_TIMEOUT),
        "REDISCHED_HTTP_KEEPALIVE_TIMEOUT": str(KEEPALIVE_TIMEOUT),
        "REDISCHED_HTTP_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        "REDISCHED_HEALTH_CACHE_SECONDS": str(HEALTH_CACHE_SECONDS),
        **{f"{name.upper()}_API": f"{externals.url}/{name}" for name in ("katalogus", "octopoes", "bytes")},
    }
    with api_process(backends, **env) as server:
        yield server


async def _connect(server):
    return await asyncio.open_connection("127.0.0.1", server.port)


async def _until_closed(reader: asyncio.StreamReader, limit: float) -> tuple[float, bytes]:
    """Seconds until the server closes the connection (at most ``limit``), and what it sent."""
    start, received = time.monotonic(), b""
    try:
        async with asyncio.timeout(limit):
            while chunk := await reader.read(65536):
                received += chunk
    except ConnectionResetError:
        pass
    return time.monotonic() - start, received


async def _trickle(writer: asyncio.StreamWriter, lines: Iterator[bytes], every: float, limit: float) -> None:
    """Write one line every ``every`` seconds until the server closes (or ``limit`` passes)."""
    deadline = time.monotonic() + limit
    try:
        for line in lines:
            if time.monotonic() > deadline or writer.is_closing():
                return
            writer.write(line)
            await writer.drain()
            await asyncio.sleep(every)
    except (ConnectionResetError, BrokenPipeError):
        pass


async def _slowloris(server, index: int) -> tuple[float, bytes]:
    reader, writer = await _connect(server)
    writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    lines = (b"X-Slow-%d: %d\r\n" % (index, n) for n in range(100))
    trickle = asyncio.create_task(_trickle(writer, lines, every=0.2, limit=8))
    try:
        return await _until_closed(reader, limit=8)
    finally:
        trickle.cancel()
        writer.close()


async def test_slowloris_connections_are_cut_within_the_header_timeout(server):
    results = await asyncio.gather(*(_slowloris(server, i) for i in range(60)))
    held = [seconds for seconds, _ in results]
    assert max(held) < HEADER_TIMEOUT + SLACK, sorted(held)[-5:]
    assert all(received.startswith(b"HTTP/1.1 408 ") for _, received in results)
    assert b"the headers took more than 1 s" in results[0][1]
    print(f"\n60 slowloris connections, header timeout {HEADER_TIMEOUT:g} s: all answered 408 and closed, the last after {max(held):.2f} s")
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as client:
        assert (await client.get("/health")).status_code == 200


async def test_idle_connections_are_closed(server):
    reader, writer = await _connect(server)
    writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    response = await reader.readuntil(b'"externals":{}}')
    assert response.startswith(b"HTTP/1.1 200 ")
    idle, received = await _until_closed(reader, limit=5)
    assert received == b"" and KEEPALIVE_TIMEOUT - 0.2 < idle < KEEPALIVE_TIMEOUT + SLACK
    writer.close()
    reader, writer = await _connect(server)  # opened, never used
    unused, received = await _until_closed(reader, limit=5)
    assert received == b"" and unused < HEADER_TIMEOUT + SLACK
    writer.close()
    print(f"\nidle keep-alive closed after {idle:.2f} s (timeout {KEEPALIVE_TIMEOUT:g} s), an unused connection after {unused:.2f} s")


async def test_a_slow_body_is_cut_within_the_body_timeout(server):
    reader, writer = await _connect(server)
    writer.write(b"POST /schedulers/boefje/push HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer admin-secret\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n{")  # fmt: skip
    trickle = asyncio.create_task(_trickle(writer, (b" " for _ in range(100)), every=0.2, limit=8))
    held, received = await _until_closed(reader, limit=8)
    trickle.cancel()
    writer.close()
    assert held < BODY_TIMEOUT + SLACK
    assert received.startswith(b"HTTP/1.1 408 ") and b"the body took more than 1.5 s" in received
    print(f"\nslow body (a byte every 0.2 s) answered 408 and closed after {held:.2f} s (timeout {BODY_TIMEOUT:g} s)")
    async with httpx.AsyncClient(base_url=server.url, timeout=5, headers=ADMIN) as client:
        assert (await client.get("/schedulers/boefje")).json()["qsize"] == 0


async def test_headers_past_the_limit_get_431(server):
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as client:
        response = await client.get("/health", headers={"x-big": "a" * 20_000})
        assert response.status_code == 431 and response.json()["detail"].startswith("Request headers too large")
        assert (await client.get("/health", headers={"x-big": "a" * 8_000})).status_code == 200
    reader, writer = await _connect(server)  # streamed in pieces, never finished
    writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
    trickle = asyncio.create_task(_trickle(writer, (b"a" * 4096 for _ in range(20)), every=0.01, limit=5))
    held, received = await _until_closed(reader, limit=5)
    trickle.cancel()
    writer.close()
    assert received.startswith(b"HTTP/1.1 431 ") and held < HEADER_TIMEOUT


async def test_requests_past_the_connection_cap_get_503_until_connections_free_up(server):
    await asyncio.sleep(KEEPALIVE_TIMEOUT + 0.3)  # the earlier tests' connections are gone
    limits = httpx.Limits(max_connections=MAX_CONNECTIONS + 5)
    async with httpx.AsyncClient(base_url=server.url, timeout=15, headers=RUNNER, limits=limits) as polls:
        waiting = [asyncio.create_task(polls.post("/schedulers/normalizer/pop", params={"wait": 3})) for _ in range(MAX_CONNECTIONS)]
        await asyncio.sleep(1.2)
        assert not any(task.done() for task in waiting)  # all in flight, none refused
        async with httpx.AsyncClient(base_url=server.url, timeout=5) as client:
            refused = await client.get("/health")
            assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
            assert refused.json() == {"detail": "Service unavailable: too many connections"}
            answered = await asyncio.gather(*waiting)
            assert [response.status_code for response in answered] == [200] * MAX_CONNECTIONS
            await polls.aclose()  # their connections close
            assert (await client.get("/health")).status_code == 200


async def test_two_authorization_headers_are_a_400_even_if_both_are_valid(server):
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as client:
        for second in ("Bearer admin-secret", "Bearer runner-secret", "Bearer nope"):
            response = await client.get("/schedulers", headers=[("authorization", "Bearer admin-secret"), ("authorization", second)])
            assert response.status_code == 400, second
            assert response.json() == {"detail": "Bad request error occurred: more than one Authorization header"}
        assert (await client.get("/schedulers", headers=ADMIN)).status_code == 200


async def test_health_probes_each_external_once_per_period_and_shows_details_to_token_holders(server, externals):
    await asyncio.sleep(HEALTH_CACHE_SECONDS)  # no earlier probe still cached
    before = externals.probes()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        concurrent = await asyncio.gather(*(client.get("/health", params={"externals": "true"}) for _ in range(10)))
        sequential = [await client.get("/health", params={"externals": "true"}, headers=ADMIN) for _ in range(10)]
        assert {name: count - before[name] for name, count in externals.probes().items()} == dict.fromkeys(before, 1)
        anonymous, admin = concurrent[0].json(), sequential[0].json()
        assert anonymous["healthy"] is True and anonymous["externals"] == {} and anonymous["results"] == []
        assert admin["externals"] == {"katalogus": True, "octopoes": True, "bytes": True}
        assert [result["service"] for result in admin["results"]] == ["redis", "postgres"]
        assert (await client.get("/health", params={"externals": "true"}, headers=RUNNER)).json()["externals"] == admin["externals"]
        await asyncio.sleep(HEALTH_CACHE_SECONDS + 0.2)
        await client.get("/health", params={"externals": "true"})
        assert {name: count - before[name] for name, count in externals.probes().items()} == dict.fromkeys(before, 2)


async def test_sigterm_answers_20_long_polls_at_once_and_exits(backends):  # noqa: F811
    with api_process(backends) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=40) as client:

            async def poll() -> tuple[float, httpx.Response]:
                response = await client.post("/schedulers/boefje/pop", params={"wait": 30})
                return time.monotonic(), response

            polls = [asyncio.create_task(poll()) for _ in range(20)]
            await asyncio.sleep(2)
            assert not any(task.done() for task in polls)
            signalled = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            answered = await asyncio.gather(*polls)
            exit_code = await asyncio.to_thread(server.process.wait, 10)
            exited = time.monotonic() - signalled
        latest = max(at for at, _ in answered) - signalled
        assert [(response.status_code, response.json()) for _, response in answered] == [(200, {"results": []})] * 20
        assert latest < 1.0, latest
        assert exited < 5.0 and exit_code == 0, (exited, exit_code)
        print(f"\nSIGTERM during 20 long-polls: all answered within {latest:.3f} s, exit after {exited:.3f} s")


async def test_fifty_pipelined_requests_in_one_packet_are_answered_in_order(server):
    """CoalescedWrites joins a connection's writes within one loop turn: requests pipelined in
    one packet (health, a missing task, a refused push) get their answers whole and in order."""
    reader, writer = await _connect(server)
    requests, expected = [], []
    for i in range(50):
        if i % 3 == 0:
            requests.append(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            expected.append(b"200")
        elif i % 3 == 1:
            requests.append(b"GET /tasks/00000000-0000-4000-8000-%012d HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                            b"Authorization: Bearer admin-secret\r\n\r\n" % i)  # fmt: skip
            expected.append(b"404")
        else:
            body = b'{"organisation": "o", "priority": "high"}'
            requests.append(b"POST /schedulers/boefje/push HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer admin-secret\r\n"
                            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
            expected.append(b"422")
    writer.write(b"".join(requests))
    await writer.drain()
    statuses, received = [], b""
    async with asyncio.timeout(20):
        while len(statuses) < len(expected):
            head, _, rest = received.partition(b"\r\n\r\n")
            if not _:
                received += await reader.read(65536)
                continue
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
            if len(rest) < length:
                received += await reader.read(65536)
                continue
            statuses.append(head.split(b" ")[1])
            received = rest[length:]
    writer.close()
    assert statuses == expected and received == b""


async def test_half_a_pop_next_body_is_cut_and_patches_and_pops_nothing(server):
    async with httpx.AsyncClient(base_url=server.url, timeout=5, headers=ADMIN) as client:
        for i in range(2):
            data = {"boefje": {"id": "b"}, "input_ooi": f"Hostname|internet|half{i}.example", "organization": "o"}
            assert (await client.post("/schedulers/boefje/push", json={"organisation": "o", "priority": 1, "data": data})).status_code == 201
        popped = await client.post("/schedulers/boefje/pop")
        task, token = popped.json()["results"][0]["id"], popped.headers["x-lease-token"]
    reader, writer = await _connect(server)
    writer.write(b"PATCH /tasks/%s/pop_next HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer admin-secret\r\n"
                 b"X-Lease-Token: %s\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n"
                 b'{"status": "comp' % (task.encode(), token.encode()))  # fmt: skip
    held, received = await _until_closed(reader, limit=8)
    writer.close()
    assert received.startswith(b"HTTP/1.1 408 ") and held < BODY_TIMEOUT + SLACK, (held, received[:200])
    async with httpx.AsyncClient(base_url=server.url, timeout=5, headers=ADMIN) as client:
        assert (await client.get(f"/tasks/{task}")).json()["status"] == "dispatched"
        assert (await client.get("/schedulers/boefje")).json()["qsize"] == 1
        finished = await client.patch(f"/tasks/{task}/pop_next", json={"status": "completed"}, headers={"x-lease-token": token})
        assert finished.status_code == 200 and len(finished.json()["results"]) == 1
