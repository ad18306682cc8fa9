"""Limits per boefje group (REDISCHED_LIMITS), in the queue scripts: a group at its limit is
passed over without delaying other tasks, a concurrency slot is freed on every way out, and a
cooldown spaces the group's pops by Redis's own clock. With partitions every task of a group
goes to its group's partition, so its limits hold across partitions (tested with tasks whose
hashes spread over all of them); the older tests pick tasks of one partition by hash."""

from __future__ import annotations

import asyncio
import inspect
import itertools

import pytest

from redisched.errors import Conflict
from redisched.limit_rules import parse_rules
from redisched.queue.keys import partition_of
from tests.factories import boefje_data

_seq = itertools.count()


def tasks_in_one_partition(queues, boefje_id: str, n: int, organization: str = "org1") -> list[dict]:
    """n boefje tasks of this boefje whose hashes fall in partition 0."""
    from redisched.models import check_pushed_payload

    found = []
    while len(found) < n:
        data = boefje_data(boefje_id, ooi=f"Hostname|internet|l{next(_seq)}.example", organization=organization)
        if partition_of(check_pushed_payload("boefje", data).hash(), queues.layout.partitions) == 0:
            found.append(data)
    return found


async def redis_reply(queues, *command):
    """A plain command on the facade's own client (asyncio or sync)."""
    reply = queues.redis.execute_command(*command)
    return await reply if inspect.isawaitable(reply) else reply


def task_hash(data: dict) -> str:
    from redisched.models import check_pushed_payload

    return check_pushed_payload("boefje", data).hash()


async def push_all(queues, tasks: list[dict], priority: int) -> None:
    for data in tasks:
        await queues.push("boefje", organisation=data["organization"], data=data, priority=priority)


def boefje_of(record) -> str:
    import json

    return json.loads(record.data)["boefje"]["id"]


async def pop_one(queues):
    popped = await queues.pop("boefje", limit=1)
    return popped[0] if popped else None


async def test_a_concurrency_group_holds_at_most_n_and_is_freed_on_every_way_out(make_queues):
    rules = parse_rules([{"boefje": "nmap", "group": "nmap", "concurrency": 2}])
    queues = make_queues(limits=rules, dispatch_lease_ms=1)
    await push_all(queues, tasks_in_one_partition(queues, "nmap", 8), priority=1)
    await push_all(queues, tasks_in_one_partition(queues, "dns-records", 8), priority=50)
    assert await queues.qsize("boefje") == 16

    held = [await pop_one(queues), await pop_one(queues)]
    assert [boefje_of(r) for r in held] == ["nmap", "nmap"]
    third = await pop_one(queues)  # the group is full: the next task of another boefje, not nothing
    assert boefje_of(third) == "dns-records"
    assert await queues.qsize("boefje") == 13

    ways_out = [{"status": "completed"}, {"status": "failed"}, {"status": "cancelled"}, {"status": "queued"}]
    for change in ways_out:
        await queues.patch(held[0].id, change)
        held = [held[1], await pop_one(queues)]
        assert boefje_of(held[1]) == "nmap", change
        assert boefje_of(await pop_one(queues)) == "dns-records"
    await asyncio.sleep(0.01)
    assert await queues.reap("boefje") != (0, 0)  # every lease (1 ms) expired: both slots freed
    again = [await pop_one(queues), await pop_one(queues)]
    assert [boefje_of(r) for r in again] == ["nmap", "nmap"]


async def test_a_cooldown_group_is_spaced_by_its_cooldown_and_never_delays_others(make_queues):
    rules = parse_rules([{"boefje": "shodan", "group": "shodan", "cooldown": 0.15}])
    queues = make_queues(limits=rules)
    await push_all(queues, tasks_in_one_partition(queues, "shodan", 6), priority=1)
    await push_all(queues, tasks_in_one_partition(queues, "dns-records", 200), priority=50)
    shodan_at, others = [], 0

    async def popper() -> None:
        nonlocal others
        loop = asyncio.get_running_loop()
        stop = loop.time() + 0.6
        while loop.time() < stop:
            record = await pop_one(queues)
            if record is None:
                await asyncio.sleep(0.005)
                continue
            if boefje_of(record) == "shodan":
                shodan_at.append(int(record.modified_at))
                await queues.patch(record.id, {"status": "completed"})
            else:
                others += 1

    await asyncio.gather(*(popper() for _ in range(20)))
    shodan_at.sort()
    gaps_ms = [(b - a) / 1000 for a, b in zip(shodan_at, shodan_at[1:])]
    assert len(shodan_at) >= 2 and all(gap >= 150 for gap in gaps_ms), gaps_ms  # never 2 in 150 ms
    assert others > 20  # the rest of the queue flowed while the group waited


async def test_a_rate_is_a_spacing_and_a_template_names_the_group(make_queues):
    rules = parse_rules([{"boefje": "nmap", "group": "nmap:{input_ooi}", "rate": "1/h"}])
    queues = make_queues(limits=rules)
    [first, other] = tasks_in_one_partition(queues, "nmap", 2)
    await push_all(queues, [first, other], priority=1)
    a = await pop_one(queues)
    await queues.patch(a.id, {"status": "completed"})
    b = await pop_one(queues)  # another object: another group
    assert b is not None and b.lg != a.lg and a.lg.startswith("nmap:Hostname|internet|")
    await queues.patch(b.id, {"status": "completed"})
    await queues.push("boefje", organisation="org1", data=first, priority=1)
    assert await pop_one(queues) is None  # that object's group waits an hour
    assert await queues.qsize("boefje") == 1


async def test_a_limited_task_matches_runner_filters(make_queues):
    queues = make_queues(limits=parse_rules([{"boefje": "*", "group": "org:{organisation}", "concurrency": 1}]))
    await push_all(queues, tasks_in_one_partition(queues, "nmap", 2, organization="org1"), priority=1)
    await push_all(queues, tasks_in_one_partition(queues, "nmap", 2, organization="org2"), priority=5)
    only_org2 = {"filters": [{"column": "organisation", "operator": "eq", "value": "org2"}]}
    [popped] = await queues.pop("boefje", only_org2, limit=1)
    assert popped.organisation == "org2"
    assert await queues.pop("boefje", only_org2, limit=1) == []  # org2 holds its one slot
    assert (await pop_one(queues)).organisation == "org1"


async def test_replaced_rules_hold_for_groups_already_holding_tasks(make_queues):
    one_at_a_time = parse_rules([{"boefje": "nmap", "group": "nmap", "concurrency": 1}])
    queues = make_queues(limits=one_at_a_time)
    await push_all(queues, tasks_in_one_partition(queues, "nmap", 6), priority=1)
    held = [await pop_one(queues)]
    assert await pop_one(queues) is None  # the group's one slot is taken

    await queues.replace_limits(parse_rules([{"boefje": "nmap", "group": "nmap", "concurrency": 3}]))
    held += [await pop_one(queues), await pop_one(queues)]  # the waiting group reopened at once
    assert all(held) and await pop_one(queues) is None  # three held: the new cap, not more
    assert (await queues.limit_rules()).rules[0].concurrency == 3

    await queues.replace_limits(())  # the rule is gone: its group has no limit any more
    rest = [await pop_one(queues) for _ in range(3)]
    assert all(rest) and await queues.qsize("boefje") == 0


async def test_a_process_pushing_with_older_rules_is_sent_back_to_read_the_new_ones(make_queues):
    first, second = make_queues(), make_queues()  # two API processes, no rules at start
    await first.replace_limits(parse_rules([{"boefje": "nmap", "group": "nmap:{organisation}", "cooldown": 60}]))
    [a, b] = tasks_in_one_partition(second, "nmap", 2)
    await push_all(second, [a, b], priority=1)  # second still holds the rules it started with
    assert second.commands.rules.current.rules == first.commands.rules.current.rules
    popped = await pop_one(second)
    assert popped.lg == "nmap:org1" and await pop_one(first) is None  # the cooldown holds for both


async def test_a_long_poll_gets_a_cooling_groups_task_as_the_group_reopens(backend_redis, queue_layout, monkeypatch):
    from redisched.queue.queue import TaskQueues
    from redisched.server import longpoll

    queues = TaskQueues(backend_redis, queue_layout(limits=parse_rules([{"boefje": "shodan", "group": "shodan", "cooldown": 1.5}])))
    await push_all(queues, tasks_in_one_partition(queues, "shodan", 2), priority=1)
    assert await pop_one(queues) is not None  # the group cools for 1.5 s; its other task is all the queue holds
    monkeypatch.setattr(longpoll, "BLOCK_SLICE_SECONDS", 30.0)  # no slice ends early: only an event or the reopening

    async def never_gone() -> bool:
        return False

    loop = asyncio.get_running_loop()
    started = loop.time()
    [record] = await longpoll.pop_or_wait(queues, "boefje", None, 1, 10.0, never_gone)
    waited = loop.time() - started
    assert boefje_of(record) == "shodan"
    assert 1.3 < waited < 1.5 + 2.5, waited  # at the reopening (plus a loaded machine's delay), not after the 10 s wait


async def test_a_groups_limits_hold_across_partitions_its_tasks_all_in_its_groups_one(make_queues):
    rules = parse_rules([{"boefje": "shodan", "group": "shodan", "cooldown": 0.2}, {"boefje": "whois", "group": "whois", "concurrency": 2}])
    queues = make_queues(limits=rules)
    spread = [boefje_data(boefje_id, ooi=f"Hostname|internet|x{next(_seq)}.example") for boefje_id in ("shodan", "whois") for _ in range(12)]
    await push_all(queues, spread, priority=1)
    await push_all(queues, [boefje_data("dns-records") for _ in range(60)], priority=50)
    hashes = {partition_of(record.hash, queues.layout.partitions) for record in await queues.peek("boefje", limit=100)}
    assert len(hashes) == queues.layout.partitions  # by hash the tasks would spread over every partition
    shodan_at, whois_held, others = [], [], 0

    async def whois_in_use() -> int:
        return sum([int(await redis_reply(queues, "HGET", keys.limits, "whois\0n") or 0) for keys in queues.layout.of("boefje")])

    async def popper() -> None:
        nonlocal others
        loop = asyncio.get_running_loop()
        stop = loop.time() + 1.0
        while loop.time() < stop:
            record = await pop_one(queues)
            if record is None:
                await asyncio.sleep(0.005)
                continue
            if boefje_of(record) == "shodan":
                shodan_at.append(int(record.modified_at))
            elif boefje_of(record) == "whois":
                whois_held.append(await whois_in_use())
                await asyncio.sleep(0.02)
            else:
                others += 1
            await queues.patch(record.id, {"status": "completed"})

    await asyncio.gather(*(popper() for _ in range(10)))
    shodan_at.sort()
    gaps_ms = [(b - a) / 1000 for a, b in zip(shodan_at, shodan_at[1:])]
    assert len(shodan_at) >= 3 and all(gap >= 200 for gap in gaps_ms), gaps_ms
    assert len(whois_held) >= 4 and max(whois_held) <= 2 and 2 in whois_held, whois_held
    assert others > 10


async def test_a_limited_task_away_from_its_hashs_partition_still_meets_its_twin_and_schedule(make_queues):
    queues = make_queues(limits=parse_rules([{"boefje": "shodan", "group": "shodan", "cooldown": 0.001}]))
    layout = queues.layout
    away = next(
        data for data in (boefje_data("shodan") for _ in range(100))
        if layout.partitions == 1 or layout.for_task("boefje", task_hash(data), "shodan").partition != layout.for_hash("boefje", task_hash(data)).partition
    )  # fmt: skip
    first = await queues.push("boefje", organisation="org1", data=away, priority=3)
    assert first.schedule_id is not None
    mirror = await redis_reply(queues, "HGET", layout.for_hash("boefje", first.hash).schedules, first.hash)
    assert mirror.decode() == f"{first.schedule_id}|1"  # mirrored where the schedules' store looks
    with pytest.raises(Conflict):
        await queues.push("boefje", organisation="org1", data=away, priority=3, refuse_live_twin=True)
    popped = await pop_one(queues)
    await queues.patch(popped.id, {"status": "completed"})
    again = await queues.push("boefje", organisation="org1", data=away, priority=3)
    assert again.schedule_id == first.schedule_id  # linked to the schedule, not a new one


async def test_the_cancel_on_an_objects_deletion_reaches_tasks_waiting_past_their_groups_head(backend_redis, queue_layout):
    from redisched.queue.queue import TaskQueues
    from redisched.schedulers.outlet import TaskOutlet

    one_at_a_time = parse_rules([{"boefje": "*", "group": "org:{organisation}", "concurrency": 1}])
    outlet = TaskOutlet(TaskQueues(backend_redis, queue_layout(limits=one_at_a_time)))
    gone, kept = "Hostname|internet|gone.example", "Hostname|internet|kept.example"
    doomed = [boefje_data(boefje_id, ooi=gone) for boefje_id in ("dns-records", "nmap", "shodan")]
    pushed = []
    for data in doomed + [boefje_data("nmap", ooi=kept), boefje_data("nmap", ooi=gone, organization="org2")]:
        pushed.append(await outlet.queues.push("boefje", organisation=data["organization"], data=data, priority=5))
    assert len(await outlet.queues.peek("boefje")) == 2  # one head per group: the rest wait unseen
    assert await outlet.cancel_queued("boefje", "org1", gone) == 3
    assert [await outlet.live_status(record.id) for record in pushed] == ["cancelled"] * 3 + ["queued"] * 2
    assert await outlet.queues.qsize("boefje") == 2  # the other object's and the other organisation's
    assert await outlet.queues.waiting_on_object("boefje", "org1", gone) == []


async def test_a_group_with_no_task_left_is_forgotten_once_its_cooldown_ends(make_queues):
    # long enough that a loaded machine's pop → patch stays inside it (the "still cooling" check)
    queues = make_queues(limits=parse_rules([{"boefje": "shodan", "group": "shodan:{input_ooi}", "cooldown": 0.3}]))
    data = boefje_data("shodan")
    record = await queues.push("boefje", organisation="org1", data=data, priority=1)
    limits_key = queues.layout.for_task("boefje", record.hash, record.lg).limits

    async def fields() -> list[str]:
        found = await redis_reply(queues, "HKEYS", limits_key)
        return sorted(f.decode() if isinstance(f, bytes) else f for f in found if (f.decode() if isinstance(f, bytes) else f).startswith(record.lg))

    popped = await pop_one(queues)
    assert await fields() == [f"{record.lg}\0{name}" for name in ("last", "n", "rule")]
    await queues.patch(popped.id, {"status": "completed"})
    assert await fields() == [f"{record.lg}\0{name}" for name in ("last", "rule")]  # still cooling
    await asyncio.sleep(0.35)
    assert await pop_one(queues) is None  # this pop reopens the groups due, and finds it empty
    assert await fields() == []  # one group per object would otherwise stay for good


async def test_a_replaced_cooldown_holds_for_one_already_running(make_queues):
    hourly = parse_rules([{"boefje": "shodan", "group": "shodan", "cooldown": 3600}])
    queues = make_queues(limits=hourly)
    await push_all(queues, [boefje_data("shodan") for _ in range(3)], priority=1)
    assert await pop_one(queues) is not None and await pop_one(queues) is None  # an hour to wait
    await queues.replace_limits(parse_rules([{"boefje": "shodan", "group": "shodan", "cooldown": 0.05}]))
    await asyncio.sleep(0.08)
    assert await pop_one(queues) is not None  # the new cooldown, counted from the last pop, has run out
    await queues.replace_limits(hourly)
    await asyncio.sleep(0.08)
    assert await pop_one(queues) is None  # lengthened again: the hour counts from that pop
