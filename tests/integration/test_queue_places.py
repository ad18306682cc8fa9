"""A PATCH without a lease token (OpenKAT's runners send none) of a task this process handed
out goes to the task's queue partition alone, not to every queue partition; where the hint is
wrong or missing, every partition is still asked, so the answer never changes."""

from __future__ import annotations

import asyncio

import msgspec

from redisched.queue.keys import partition_of
from tests.factories import normalizer_data
from tests.integration.test_queue_pop_next import _counting


async def _pushed(queues, n):
    for _ in range(n):
        await queues.push("normalizer", organisation="o", data=normalizer_data(), priority=5)


async def test_a_tokenless_patch_of_a_task_this_process_popped_is_one_call(queues):
    await _pushed(queues, 3)
    [task] = await queues.pop("normalizer", None, 1)
    calls = _counting(queues)
    running = await queues.patch(task.id, {"status": "running"})
    done = await queues.patch(task.id, {"status": "completed"})
    assert (running.status, done.status) == ("running", "completed")
    assert calls == ["patch", "patch"], "each went to the task's partition alone"
    assert queues._places.of(task.id) is None, "a finished task is forgotten"


async def test_a_task_another_process_popped_is_found_in_every_partition(make_queues):
    popper, patcher = make_queues(), make_queues()
    await _pushed(popper, 2)
    [task] = await popper.pop("normalizer", None, 1)
    calls = _counting(patcher)
    running = await patcher.patch(task.id, {"status": "running"})
    assert running is not None and running.status == "running"
    assert len(calls) == len(list(patcher.layout.every())), "no hint: every queue partition asked at once"
    calls.clear()
    done = await patcher.patch(task.id, {"status": "completed"})
    assert done.status == "completed" and calls == ["patch"], "found once: its place is kept"


async def test_a_wrong_hint_costs_a_round_trip_and_changes_no_answer(queues):
    await _pushed(queues, 2)
    [task] = await queues.pop("normalizer", None, 1)
    queues._places.note(task.id, "boefje", 0)  # as if a restore had moved it
    calls = _counting(queues)
    running = await queues.patch(task.id, {"status": "running"})
    assert running is not None and running.status == "running"
    assert calls[0] == "patch" and len(calls) == len(list(queues.layout.every())), "the hint, then the others"
    assert queues._places.of(task.id) == ("normalizer", queues.commands.lease_place(task.lease)[1])


async def test_a_finished_task_is_forgotten_and_found_again_by_asking_every_partition(queues):
    """Finished, it leaves Redis once Postgres has it, so its place is not kept; until then a
    patch of it still finds it in Redis (mula's PATCH has no transition rules)."""
    await _pushed(queues, 1)
    [task] = await queues.pop("normalizer", None, 1)
    await queues.patch(task.id, {"status": "completed"})
    assert queues._places.of(task.id) is None
    calls = _counting(queues)
    again = await queues.patch(task.id, {"status": "running"})
    assert again.id == task.id and again.status == "running"
    assert len(calls) == len(list(queues.layout.every()))


async def test_a_tokenless_finish_and_fetch_of_a_task_this_process_popped_is_one_call(queues, partitions):
    await _pushed(queues, 4)
    [task] = await queues.pop("normalizer", None, 1)
    calls = _counting(queues)
    done, following = await queues.pop_next(task.id, {"status": "completed"}, None)
    assert done.status == "completed"
    assert calls[0] == "pop_next"
    if partitions == 1:
        assert calls == ["pop_next"] and len(following) == 1


async def test_a_tokenless_finish_and_fetch_with_a_wrong_hint_still_finishes_and_fetches(queues):
    await _pushed(queues, 3)
    [task] = await queues.pop("normalizer", None, 1)
    queues._places.note(task.id, "report", 0)
    done, following = await queues.pop_next(task.id, {"status": "completed"}, None)
    assert done.id == task.id and done.status == "completed"
    [nxt] = following
    assert nxt.status == "dispatched" and nxt.scheduler_id == "normalizer"
    assert (await queues.get(task.id)).status == "completed"


async def _statuses(queues, tasks):
    return [(await queues.get(task.id)).status for task in tasks]


async def test_a_hint_gone_stale_through_requeue_and_another_processs_pop_patches_the_same_task(make_queues):
    """Popped by A, handed back to the queue, popped running by B, reaped, popped by B again:
    A's token-less patch still finds that task wherever it is, changes it alone, and a later
    one through A finds it again in one call."""
    a, b = make_queues(running_lease_ms=50), make_queues(running_lease_ms=50)
    await _pushed(a, 1)
    [task] = await a.pop("normalizer", None, 1)
    await b.patch(task.id, {"status": "queued"})
    [again] = await b.pop("normalizer", None, 1, status="running")
    assert again.id == task.id and again.lease != task.lease
    await asyncio.sleep(0.15)
    assert sum([requeued for requeued, _ in [await b.reap("normalizer")]]) == 1
    await _pushed(a, 2)
    popped = [record for _ in range(3) for record in await b.pop("normalizer", None, 3)]
    [third] = [record for record in popped if record.id == task.id]
    others = [record for record in popped if record.id != task.id]
    assert len(others) == 2
    calls = _counting(a)
    patched = await a.patch(task.id, {"status": "running"})
    assert (patched.id, patched.status, patched.lease, patched.tries) == (task.id, "running", third.lease, 1)
    assert calls == ["patch"], "the task's partition it was seen in"
    assert await _statuses(a, others) == ["dispatched", "dispatched"], "no other task changed"
    done, following = await a.pop_next(task.id, {"status": "completed"}, None)
    assert (done.id, done.status) == (task.id, "completed") and following == []
    assert (await a.get(task.id)).status == "completed"


async def test_a_hint_of_a_task_restored_into_another_partition_after_its_hash_changed(make_queues, partitions):
    """A pops it and changes its hash (it stays where it is); B finishes it, the snapshotter
    drops it from Redis, a PATCH to queued restores it from Postgres: into its new hash's
    partition. A's hint names the old one: A's token-less patch and finish-and-fetch still
    find it there, and nothing else is patched."""
    a, b = make_queues(), make_queues()
    await _pushed(a, 3)
    [task] = await a.pop("normalizer", None, 1)
    seen = a._places.of(task.id)
    moved_hash = next(
        f"{task.hash}-{n}" for n in range(1000)
        if partition_of(f"{task.hash}-{n}", partitions) != seen[1] or partitions == 1
    )
    assert (await a.patch(task.id, {"hash": moved_hash})).hash == moved_hash
    assert a._places.of(task.id) == seen, "the patch left it where it was"
    finished = await b.patch(task.id, {"status": "completed"})
    assert await b.forget_finished("normalizer", [(task.id, finished.rev)]) == 1
    assert await a.get(task.id) is None
    assert await b.restore(msgspec.structs.replace(finished, status="queued", lease=None, rev="0"))
    assert (await a.locate(task.id)).partition == partition_of(moved_hash, partitions)
    queued_others = await a.peek("normalizer", None, 10)
    calls = _counting(a)
    patched = await a.patch(task.id, {"priority": 7})
    assert (patched.id, patched.status, patched.priority) == (task.id, "queued", "7")
    if partitions > 1:
        assert calls[0] == "patch" and len(calls) == len(list(a.layout.every())), "the stale hint, then the others"
    assert a._places.of(task.id) == ("normalizer", partition_of(moved_hash, partitions))
    assert [r.priority for r in await a.peek("normalizer", None, 10) if r.id != task.id] == [
        r.priority for r in queued_others if r.id != task.id
    ], "no other task changed"
    calls.clear()
    done, following = await a.pop_next(task.id, {"status": "completed"}, None)
    assert (done.id, done.status) == (task.id, "completed") and calls[0] == "pop_next"
    assert len(following) == 1 and following[0].id != task.id


async def test_a_lease_token_whose_task_was_restored_into_another_partition_still_patches_it(
    make_queues, partitions, backend_redis
):
    """Its hash patched (it stays where it is), then lost there (a failover without it) and
    restored by reconciliation into its new hash's partition, a leased task keeps its lease
    token, which names the old partition: a lease extension, a patch or a finish and fetch
    with that token asks there first, then the others (before, it asked there alone: None,
    which the API answers 409 "the lease token is not the task's current one", or 404 "task
    not leased" for the extension)."""
    a = make_queues()
    await _pushed(a, 3)
    tasks = [record for _ in range(3) for record in await a.pop("normalizer", None, 2)]
    task, _, _ = tasks
    lost_in = a.commands.lease_place(task.lease)[1]
    moved_hash = next(
        f"{task.hash}-{n}" for n in range(1000)
        if partition_of(f"{task.hash}-{n}", partitions) != lost_in or partitions == 1
    )
    running = await a.patch(task.id, {"hash": moved_hash, "status": "running"}, token=task.lease)
    keys = await a.locate(task.id)
    assert keys.partition == lost_in
    await backend_redis.hdel(keys.tasks, task.id)
    await backend_redis.hdel(keys.key("data"), task.id)
    await backend_redis.zrem(keys.leases, task.id)
    assert await a.restore(msgspec.structs.replace(running, rev="0"))
    assert (await a.locate(task.id)).partition == partition_of(moved_hash, partitions)
    assert await a.extend_lease("normalizer", task.id, task.lease, 600) > 0
    extended = await a.patch(task.id, {"priority": 9}, token=task.lease)
    assert (extended.id, extended.status, extended.priority, extended.lease) == (task.id, "running", "9", task.lease)
    done, _ = await a.pop_next(task.id, {"status": "completed"}, task.lease)
    assert (done.id, done.status) == (task.id, "completed")
    assert [(await a.get(other.id)).status for other in tasks[1:]] == ["dispatched", "dispatched"]
