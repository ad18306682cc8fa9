"""A pop that hands its tasks out running (``status="running"``): for a worker that starts
each task at once, as BullMQ's does, instead of patching "running" after the pop as mula's
runners do: one script call per task fewer. Through both facades, on every backend."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import time

import pytest

from redisched.errors import BadRequest
from tests.factories import boefje_data, normalizer_data


async def _push_normalizers(queues, n):
    return [await queues.push("normalizer", organisation="o", data=normalizer_data(), priority=5) for _ in range(n)]


async def test_a_pop_hands_its_tasks_out_running_under_the_running_lease(make_queues, backend_redis):
    queues = make_queues(dispatch_lease_ms=60_000, running_lease_ms=900_000)
    await _push_normalizers(queues, 2)
    asked_ms = time.time() * 1000
    [task] = await queues.pop("normalizer", None, 1, status="running")
    assert task.status == "running" and task.lease
    stored = await queues.get(task.id)
    assert (stored.status, stored.lease) == ("running", task.lease)
    keys = await queues.locate(task.id)
    expiry = await backend_redis.zscore(keys.leases, task.id)
    assert asked_ms + 900_000 - 5_000 <= expiry <= time.time() * 1000 + 900_000, "the running lease, not the dispatch one"
    done = await queues.patch(task.id, {"status": "completed"}, token=task.lease)
    assert (done.status, done.lease) == ("completed", None)
    assert await backend_redis.zscore(keys.leases, task.id) is None
    [other] = await queues.pop("normalizer", None, 1)
    assert other.status == "dispatched", "the default stays mula's"


async def test_finish_and_fetch_hands_the_next_task_out_running(queues):
    for _ in range(3):
        await queues.push("boefje", organisation="o", data=boefje_data(), priority=5)
    [first] = await queues.pop("boefje", None, 1, status="running")
    done, following = await queues.pop_next(first.id, {"status": "completed"}, first.lease, None, status="running")
    assert done.status == "completed"
    [nxt] = following
    assert nxt.status == "running" and nxt.lease != first.lease
    assert (await queues.get(nxt.id)).status == "running"


async def test_a_status_no_pop_hands_out_is_refused_and_changes_nothing(queues):
    await _push_normalizers(queues, 2)
    [task] = await queues.pop("normalizer", None, 1)
    for status in ("completed", "queued", "", "RUNNING"):
        with pytest.raises(BadRequest, match="dispatched or running"):
            await queues.pop("normalizer", None, 1, status=status)
        with pytest.raises(BadRequest, match="dispatched or running"):
            await queues.pop_next(task.id, {"status": "completed"}, task.lease, None, status=status)
        with pytest.raises(BadRequest, match="dispatched or running"):  # no token: refused before the patch too
            await queues.pop_next(task.id, {"status": "completed"}, None, None, status=status)
    assert (await queues.get(task.id)).status == "dispatched"
    assert await queues.qsize("normalizer") == 1


async def test_the_scripts_refuse_a_status_no_pop_hands_out_before_patching(queues):
    """A trusted component calling the scripts with its own arguments gets the same refusal,
    and pop_next checks it before its patch runs."""
    await _push_normalizers(queues, 2)
    [task] = await queues.pop("normalizer", None, 1)
    partition = queues.commands.lease_place(task.lease)[1]
    pop = queues.commands.pop("normalizer", partition=partition)
    pop_next = queues.commands.pop_next("normalizer", task.id, {"status": "completed"}, token=task.lease,
                                        partition=partition)
    bad_pop = dataclasses.replace(pop, args=[*pop.args[:2], "completed", *pop.args[3:]])
    at = 1 + 5 + 2  # n, the patch's 5, then the pop's token and dedup flag
    bad_pop_next = dataclasses.replace(pop_next, args=[*pop_next.args[:at], "queued", *pop_next.args[at + 1:]])
    for call in (bad_pop, bad_pop_next):
        with pytest.raises(Exception, match='must be "dispatched" or "running"'):
            replies = queues.driver.send([call])
            if inspect.isawaitable(replies):
                await replies
    assert (await queues.get(task.id)).status == "dispatched"
    assert await queues.qsize("normalizer") == 1


async def test_concurrent_pops_asking_either_status_each_get_theirs(queues):
    """Concurrent pops are merged into one script run only when they ask the same."""
    await _push_normalizers(queues, 8)
    asked = ["running", "dispatched"] * 4
    got = await asyncio.gather(*(queues.pop("normalizer", None, 1, status=status) for status in asked))
    assert [tasks[0].status for tasks in got] == asked
    assert len({tasks[0].id for tasks in got}) == 8
    for tasks in got:
        assert (await queues.get(tasks[0].id)).status == tasks[0].status


async def test_a_task_popped_running_whose_worker_vanished_is_reaped_like_any_running_one(make_queues):
    queues = make_queues(dispatch_lease_ms=60_000, running_lease_ms=50)
    await _push_normalizers(queues, 1)
    [task] = await queues.pop("normalizer", None, 1, status="running")
    await asyncio.sleep(0.15)
    reaped = [await queues.reap("normalizer") for _ in range(queues.layout.partitions)]
    assert sum(requeued for requeued, _ in reaped) == 1
    back = await queues.get(task.id)
    assert (back.status, back.lease, back.tries) == ("queued", None, 1)
    [again] = await queues.pop("normalizer", None, 1)
    assert again.id == task.id
