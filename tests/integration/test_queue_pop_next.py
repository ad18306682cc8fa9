"""Finish and fetch: a runner's patch that brings its next task in the same script call, and
a patch whose lease token names the task's queue partition, sent there alone (through both
facades: the asyncio queues and the sync direct client)."""

from __future__ import annotations

import pytest

from redisched import filters
from redisched.errors import StaleLease
from tests.factories import boefje_data, normalizer_data

RUNNER = {"filters": [{"column": "data", "field": "boefje__id", "operator": "in", "value": ["dns-records"]}]}


def _counting(queues):
    """The script names of every call the queue sends from now on."""
    names = []
    send = queues.driver.send

    def counted(calls):
        names.extend(getattr(getattr(call, "script", None), "name", None) for call in calls)
        return send(calls)

    queues.driver.send = counted
    return names


async def test_completed_brings_the_next_matching_task_in_one_call(queues, partitions):
    for boefje in ("dns-records", "nmap", "dns-records"):
        await queues.push("boefje", organisation="o", data=boefje_data(boefje), priority=5)
    [first] = await queues.pop("boefje", None, 1)
    calls = _counting(queues)
    done, following = await queues.pop_next(first.id, {"status": "completed"}, first.lease, filters.parse_filter_request(RUNNER))
    assert done.id == first.id and done.status == "completed" and done.lease is None
    if partitions == 1:
        assert calls == ["pop_next"]
        [nxt] = following
    else:  # the task's partition may hold no other match: then the other partitions are asked
        assert calls[0] == "pop_next"
        [nxt] = following if following else [None]
    if nxt is not None:
        assert nxt.status == "dispatched" and nxt.lease and nxt.lease != first.lease
        assert (await queues.get(nxt.id)).lease == nxt.lease


async def test_a_stale_token_pops_nothing(queues):
    await queues.push("boefje", organisation="o", data=boefje_data(), priority=5)
    await queues.push("boefje", organisation="o", data=boefje_data(), priority=5)
    [first] = await queues.pop("boefje", None, 1)
    forged = "0000000000000000" + first.lease[16:]  # same place, another lease
    with pytest.raises(StaleLease):
        await queues.pop_next(first.id, {"status": "completed"}, forged)
    assert (await queues.get(first.id)).status == "dispatched"
    assert await queues.qsize("boefje") == 1


async def test_a_token_that_names_its_partition_patches_and_extends_with_one_call(queues):
    for _ in range(3):
        await queues.push("normalizer", organisation="o", data=normalizer_data(), priority=5)
    [task] = await queues.pop("normalizer", None, 1)
    assert queues.commands.lease_place(task.lease)[0] == "normalizer"
    calls = _counting(queues)
    running = await queues.patch(task.id, {"status": "running"}, token=task.lease)
    assert running.status == "running" and calls == ["patch"]
    await queues.extend_lease("normalizer", task.id, task.lease, 60)
    assert calls == ["patch", "extend"]


async def test_a_patch_without_a_token_still_finds_the_task_in_any_queue(queues):
    await queues.push("boefje", organisation="o", data=boefje_data(), priority=5)
    [task] = await queues.pop("boefje", None, 1)
    done, following = await queues.pop_next(task.id, {"status": "completed"}, None)
    assert done.status == "completed" and following == []
