"""Any number of API processes pop the same queue and no task is handed out twice: two
``redisched api`` processes, 50 concurrent poppers, 20,000 tasks."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter

import msgspec
import pytest

from redisched.client import Client
from redisched.queue.layout import QueueLayout
from tests.acceptance.harness import db_dsn, serving, settings, template_db  # noqa: F401

TASKS, POPPERS = 20_000, 50


def _push_all(settings) -> None:
    client = Client.from_url(settings.redis_url, QueueLayout.from_settings(settings))
    queue = client.queue("boefje")
    for i in range(TASKS):
        queue.push(
            organisation="org1",
            priority=1 + i % 100,
            data={"boefje": {"id": "dns-records"}, "input_ooi": f"Hostname|internet|h{i}.example", "organization": "org1"},
        )
    client.close()


async def _popper(base_url: str, popped: list[str]) -> None:
    """Pops until the queue is empty, on one keep-alive connection. Plain HTTP/1.1 over asyncio
    streams: httpx costs the test process more CPU per request than the server spends."""
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    request = f"POST /schedulers/boefje/pop?limit=1 HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n".encode()
    try:
        while True:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            length = int(re.search(rb"content-length: (\d+)", head, re.IGNORECASE).group(1))
            results = msgspec.json.decode(await reader.readexactly(length))["results"]
            if not results:
                return
            popped.extend(task["id"] for task in results)
    finally:
        writer.close()


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_two_api_processes_pop_each_task_exactly_once(settings):
    await asyncio.to_thread(_push_all, settings)
    with serving(settings, "api") as first, serving(settings, "api") as second:
        popped: list[str] = []
        started = time.monotonic()
        await asyncio.gather(*(_popper(first if i % 2 else second, popped) for i in range(POPPERS)))
        elapsed = time.monotonic() - started
    duplicates = [task_id for task_id, n in Counter(popped).items() if n > 1]
    assert not duplicates
    assert len(popped) == TASKS
    assert elapsed < 60, f"{TASKS} pops took {elapsed:.1f} s"
    print(f"\n{TASKS} pops by {POPPERS} poppers over 2 processes in {elapsed:.1f} s ({TASKS / elapsed:.0f}/s)")
