"""The fair pop's cost does not grow with the number of organisations with work: the Redis
commands one pop runs (INFO commandstats, on a private server so no other client's commands
count) are the same with 10 and with 10,000 organisations, unfiltered and with a runner's
filter; and stay within a bounded number of commands of the pop without fairness. (A pop
through one range leaves the org's listing in its other ranges stale: the next pop through
those re-lists it, at most 32 per pop: amortized one per task served, not measured here.)"""

from __future__ import annotations

import redis

from redisched.client import Client
from redisched.queue.commands import QueueCommands
from redisched.queue.layout import QueueLayout
from tests.factories import boefje_data
from tests.support.servers import private_redis

POPS = 20
RUNNER_FILTER = {"filters": [{"column": "data", "field": "boefje__id", "operator": "in", "value": ["nmap", "dns-records"]}]}
NOT_COUNTED = {"fcall", "fcall_ro", "function", "info", "config|resetstat", "config"}


def _fill(client: redis.Redis, commands: QueueCommands, organisations: int, per_org: int) -> None:
    """Each organisation's tasks are of one boefje (nmap or dns-records), at mixed priorities."""
    calls = [
        commands.push(
            "boefje",
            organisation=f"org{org}",
            data=boefje_data("nmap" if org % 2 else "dns-records", ooi=f"IPAddressV4|internet|10.{org >> 8 & 255}.{org & 255}.{i}"),
            priority=100 + (org * 7 + i) % 50,
        )
        for org in range(organisations)
        for i in range(per_org)
    ]
    for chunk in range(0, len(calls), 2000):
        pipe = client.pipeline(transaction=False)
        for call in calls[chunk : chunk + 2000]:
            pipe.execute_command(*call.command())
        pipe.execute()
    client.delete(commands.keys("boefje").events)


def _commands_per_pop(client: redis.Redis, queue, filters) -> float:
    client.config_resetstat()
    popped = [queue.pop(filters, limit=1) for _ in range(POPS)]
    assert all(len(p) == 1 for p in popped)
    stats = client.info("commandstats")
    calls = sum(s["calls"] for name, s in stats.items() if name.removeprefix("cmdstat_") not in NOT_COUNTED)
    return calls / POPS


def _measure(fairness: str, organisations: int, filters) -> float:
    """Commands per pop on a fresh queue of `organisations` with 3 tasks each."""
    with private_redis() as url:
        client = redis.Redis.from_url(url)
        layout = QueueLayout(prefix="rs", fairness=fairness)
        queue_client = Client(client, layout)
        queue_client.load_functions()
        _fill(client, QueueCommands(layout), organisations, 3)
        count = _commands_per_pop(client, queue_client.queue("boefje"), filters)
        client.close()
        return count


def test_fair_pop_commands_do_not_grow_with_organisations():
    for filters in (None, RUNNER_FILTER):
        few, many = _measure("organisation", 10, filters), _measure("organisation", 10_000, filters)
        plain = _measure("none", 10_000, filters)
        # (within one: the pair index's head upkeep depends on which task of a pair leaves)
        assert abs(many - few) <= 1, (filters, few, many)
        # the fair structures' upkeep and the choice of organisation: a bounded number of
        # commands (31 and 36 before one ZREM of a task's fair members and its ranges read for
        # emptiness finest first; now 28 and 32, against 20 and 21)
        assert many <= plain + 12, (filters, plain, many)
        print(f"commands per pop, filter {filters is not None}: none {plain}, fair at 10 orgs {few}, at 10,000 {many}")
