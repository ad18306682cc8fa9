"""Finish and fetch: a runner's patch that brings its next task in the same script call, and
a patch whose lease token names the task's queue partition, sent there alone (through both
facades: the asyncio queues and the sync direct client)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from redisched import filters
from redisched.errors import Conflict, StaleLease
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


def _script_runs_sent(queues):
    """The script names of every script run that reaches Redis from now on (merged calls are
    one run); None where calls are not merged (the sync facade, the cluster client)."""
    pipeliner = getattr(queues.driver, "_pipeliner", None)
    if pipeliner is None:
        return None
    runs, send = [], pipeliner._send_pipeline

    async def counted(wire, calls):
        runs.extend(getattr(getattr(call, "script", None), "name", None) for call in calls)
        return await send(wire, calls)

    pipeliner._send_pipeline = counted
    return runs


async def test_concurrent_finishes_are_one_script_run_and_each_caller_gets_its_own_answer(queues, partitions):
    for _ in range(12):
        await queues.push("normalizer", organisation="o", data=normalizer_data(), priority=5)
    held = [task for _ in range(5) for task in await queues.pop("normalizer", None, 1)]
    forged = "0000000000000000" + held[2].lease[16:]  # the right place, another lease: 409
    unknown = str(uuid.uuid4())  # no such task where its token points: not found, nothing popped
    finishes = [(t.id, t.lease) for t in held]
    finishes[2], finishes[3] = (held[2].id, forged), (unknown, held[3].lease)
    runs = _script_runs_sent(queues)
    answers = await asyncio.gather(
        *(queues.pop_next(task_id, {"status": "completed"}, token) for task_id, token in finishes), return_exceptions=True
    )
    sent = list(runs) if runs is not None else None
    assert isinstance(answers[2], StaleLease)
    assert answers[3] == (None, [])
    served = [answers[i] for i in (0, 1, 4)]
    assert [done.id for done, _ in served] == [held[i].id for i in (0, 1, 4)]
    assert all(done.status == "completed" and done.lease is None for done, _ in served)
    following = [nxt for _, popped in served for nxt in popped]
    assert len(following) == 3, "each finished caller gets its own next task"
    assert len({nxt.id for nxt in following} | {t.id for t in held}) == 8, "no task handed out twice"
    assert len({nxt.lease for nxt in following}) == 3
    for nxt in following:
        assert nxt.status == "dispatched" and (await queues.get(nxt.id)).lease == nxt.lease
    assert (await queues.get(held[2].id)).status == "dispatched"  # the refused patch changed nothing
    assert (await queues.get(held[3].id)).status == "dispatched"
    assert await queues.qsize("normalizer") == 12 - 5 - 3
    if sent is not None and partitions == 1:
        assert sent == ["pop_next"], "the five finishes went as one script run"


async def test_concurrent_patches_are_one_script_run_and_each_caller_gets_its_own_answer(queues, partitions):
    pushed = {}
    for _ in range(6):
        data = normalizer_data()
        pushed[(await queues.push("normalizer", organisation="o", data=data, priority=5)).id] = data
    a, b, c, d = [task for _ in range(4) for task in await queues.pop("normalizer", None, 1)]
    await queues.push("normalizer", organisation="o", data=pushed[a.id], priority=5)  # a's twin, queued
    forged = "0000000000000000" + c.lease[16:]
    patches = [
        (a.id, {"status": "queued"}, a.lease),  # back to queued while its twin is queued: 409
        (b.id, {"status": "running"}, b.lease),
        (c.id, {"status": "running"}, forged),  # another lease: 409
        (str(uuid.uuid4()), {"status": "running"}, d.lease),  # no such task there: not found
        (d.id, {"status": "completed"}, d.lease),
    ]
    runs = _script_runs_sent(queues)
    answers = await asyncio.gather(
        *(queues.patch(task_id, changes, token=token) for task_id, changes, token in patches), return_exceptions=True
    )
    sent = list(runs) if runs is not None else None
    assert isinstance(answers[0], Conflict) and isinstance(answers[2], StaleLease)
    assert answers[3] is None
    assert (answers[1].id, answers[1].status) == (b.id, "running")
    assert (answers[4].id, answers[4].status, answers[4].lease) == (d.id, "completed", None)
    assert [(await queues.get(t.id)).status for t in (a, b, c, d)] == ["dispatched", "running", "dispatched", "completed"]
    if sent is not None and partitions == 1:
        assert sent == ["patch"], "the five patches went as one script run"
