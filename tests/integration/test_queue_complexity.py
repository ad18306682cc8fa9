"""Indexed pops stay O(log N): Redis's own time per pop script (INFO commandstats, on a
private server so no other client's commands count) barely moves from 2,000 to 200,000
queued tasks when only 1 % of them match the runner's filter."""

from __future__ import annotations

import statistics

import redis

from redisched.client import Client
from redisched.queue.commands import QueueCommands
from redisched.queue.layout import QueueLayout
from tests.factories import boefje_data
from tests.support.servers import private_redis

MATCHING_EVERY = 100
POPS = 15
NMAP_IMAGE = "ghcr.io/minvws/openkat/nmap:latest"
RUNNER_FILTER = {
    "filters": [
        {"column": "data", "field": "boefje__oci_image", "operator": "in", "value": [NMAP_IMAGE]},
        {"column": "data", "field": "boefje__id", "operator": "in", "value": ["nmap-tcp"]},
    ]
}


def _fill(client: redis.Redis, commands: QueueCommands, start: int, stop: int) -> None:
    for chunk in range(start, stop, 2000):
        pipe = client.pipeline(transaction=False)
        for i in range(chunk, min(chunk + 2000, stop)):
            matching = i % MATCHING_EVERY == 0
            data = boefje_data(
                "nmap-tcp" if matching else f"other-{i % 37}",
                oci_image=NMAP_IMAGE if matching else f"ghcr.io/other/{i % 11}",
                ooi=f"IPAddressV4|internet|10.{i >> 16}.{(i >> 8) & 255}.{i & 255}",
            )
            call = commands.push("boefje", organisation=f"org{i % 20}", data=data, priority=1_700_000_000 + i)
            pipe.execute_command(*call.command())
        pipe.execute()
    client.delete(commands.keys("boefje").events)  # no snapshotter here: keep memory small


def _redis_us_per_pop(client: redis.Redis, queue, filters: dict) -> float:
    """The median of the pops' Redis times, each read on its own: a pop the loaded machine
    preempted inside Redis moves a mean, not the median."""
    times = []
    for _ in range(POPS):
        client.config_resetstat()
        popped = queue.pop(filters, limit=1)
        assert len(popped) == 1 and '"nmap-tcp"' in popped[0].data
        times.append(client.info("commandstats")["cmdstat_fcall"]["usec"])
    return statistics.median(times)


def test_filtered_pop_cost_does_not_grow_with_queue_depth():
    with private_redis() as url:
        client = redis.Redis.from_url(url)
        commands = QueueCommands(QueueLayout(prefix="rs"))
        Client(client, commands.layout).load_functions()
        queue = Client(client, commands.layout).queue("boefje")
        _fill(client, commands, 0, 2_000)
        shallow = _redis_us_per_pop(client, queue, RUNNER_FILTER)
        _fill(client, commands, 2_000, 200_000)
        deep = _redis_us_per_pop(client, queue, RUNNER_FILTER)
        assert deep < 1000, f"{deep:.0f} µs of Redis time per filtered pop at 200k queued"
        assert deep < 2.0 * shallow + 50, f"{shallow:.0f} µs at 2k queued, {deep:.0f} µs at 200k"
        client.close()
