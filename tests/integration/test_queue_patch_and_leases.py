"""PATCH semantics, leases, reaping, forgetting and restoring, against a real Redis."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from redisched.errors import Conflict, StaleLease
from redisched.queue.keys import partition_of
from tests.factories import boefje_data, normalizer_data


async def test_patch_to_queued_puts_the_task_back_and_from_queued_takes_it_off(queues):
    rec = await queues.push("normalizer", organisation="o", data=normalizer_data(), priority=4)
    [popped] = await queues.pop("normalizer")
    assert await queues.qsize("normalizer") == 0
    requeued = await queues.patch(popped.id, {"status": "queued"})
    assert requeued.status == "queued" and requeued.lease is None
    assert await queues.qsize("normalizer") == 1
    cancelled = await queues.patch(rec.id, {"status": "cancelled"})
    assert cancelled.status == "cancelled" and await queues.qsize("normalizer") == 0
    assert await queues.pop("normalizer") == []


async def test_patch_moves_modified_at_and_keeps_created_at(queues):
    rec = await queues.push("normalizer", organisation="o", data=normalizer_data(), priority=4)
    patched = await queues.patch(rec.id, {"status": "running"})
    assert patched.created_at == rec.created_at and int(patched.modified_at) > int(rec.modified_at)


async def test_patch_priority_reorders_a_queued_task(queues, one_partition):
    a = await queues.push("normalizer", organisation="o", data=normalizer_data(), priority=1)
    b = await queues.push("normalizer", organisation="o", data=normalizer_data(), priority=2)
    await queues.patch(a.id, {"priority": 3})
    assert [r.id for r in await queues.pop("normalizer")] == [b.id, a.id]


async def test_requeue_while_a_twin_is_queued_is_a_conflict(make_queues):
    queues = make_queues(one_task_per_schedule=False)  # so the twin gets in beside the dispatched task
    data = boefje_data()
    await queues.push("boefje", organisation="o", data=data, priority=4)
    [first] = await queues.pop("boefje")
    await queues.push("boefje", organisation="o", data=data, priority=4)
    with pytest.raises(Conflict):
        await queues.patch(first.id, {"status": "queued"})
    assert (await queues.get(first.id)).status == "dispatched"


async def test_patch_of_unknown_task_returns_none(queues):
    assert await queues.patch("00000000-0000-4000-8000-000000000000", {"status": "completed"}) is None


async def test_an_expired_lease_is_reaped_back_to_queued_and_a_stale_token_is_refused(make_queues):
    queues = make_queues(dispatch_lease_ms=50, max_tries=3)
    rec = await queues.push("boefje", organisation="o", data=boefje_data(), priority=1)
    [first] = await queues.pop("boefje")
    await asyncio.sleep(0.08)
    assert await queues.reap("boefje") == (1, 0)
    reaped = await queues.get(rec.id)
    assert reaped.status == "queued" and reaped.tries == 1 and reaped.lease is None
    [second] = await queues.pop("boefje")
    assert second.id == rec.id and second.lease != first.lease
    with pytest.raises(StaleLease):
        await queues.patch(rec.id, {"status": "completed"}, token=first.lease)
    done = await queues.patch(rec.id, {"status": "completed"}, token=second.lease)
    assert done.status == "completed"


async def test_a_task_fails_after_its_tries_are_used(make_queues):
    queues = make_queues(dispatch_lease_ms=20, max_tries=2)
    rec = await queues.push("boefje", organisation="o", data=boefje_data(), priority=1)
    for expected in ((1, 0), (0, 1)):
        assert await queues.pop("boefje")
        await asyncio.sleep(0.04)
        assert await queues.reap("boefje") == expected
    assert (await queues.get(rec.id)).status == "failed"
    assert await queues.qsize("boefje") == 0


async def test_running_holds_the_long_lease_and_tokenless_patches_work_as_in_mula(make_queues, backend_redis):
    queues = make_queues(dispatch_lease_ms=20, running_lease_ms=60_000)
    rec = await queues.push("boefje", organisation="o", data=boefje_data(), priority=1)
    await queues.pop("boefje")
    await queues.patch(rec.id, {"status": "running"})
    await asyncio.sleep(0.04)
    assert await queues.reap("boefje") == (0, 0)
    assert (await queues.patch(rec.id, {"status": "completed"})).status == "completed"
    assert await backend_redis.zcard(queues.commands.keys("boefje").leases) == 0


async def test_extend_lease_needs_the_current_token(make_queues):
    queues = make_queues(dispatch_lease_ms=30)
    rec = await queues.push("boefje", organisation="o", data=boefje_data(), priority=1)
    [popped] = await queues.pop("boefje")
    with pytest.raises(StaleLease):
        await queues.extend_lease("boefje", rec.id, "not-the-token", 10)
    await queues.extend_lease("boefje", rec.id, popped.lease, 10)
    await asyncio.sleep(0.05)
    assert await queues.reap("boefje") == (0, 0)


async def test_forget_drops_finished_tasks_at_their_stored_rev_only(queues):
    done = await queues.push("normalizer", organisation="o", data=normalizer_data(), priority=1)
    done = await queues.patch(done.id, {"status": "completed"})
    live = await queues.push("normalizer", organisation="o", data=normalizer_data(), priority=1)
    moved = await queues.patch(
        (await queues.push("normalizer", organisation="o", data=normalizer_data(), priority=1)).id, {"status": "failed"}
    )
    old_rev = moved.rev
    await queues.patch(moved.id, {"status": "queued"})
    dropped = await queues.forget_finished("normalizer", [(done.id, done.rev), (live.id, live.rev), (moved.id, old_rev)])
    assert dropped == 1
    assert await queues.get(done.id) is None
    assert await queues.get(live.id) is not None and await queues.get(moved.id) is not None


async def test_restore_puts_back_lost_live_tasks_with_their_status(queues, backend_redis, key_prefix):
    pushed = [await queues.push("boefje", organisation="o", data=boefje_data(), priority=p) for p in (2, 1)]
    [popped] = await queues.pop("boefje")
    running = await queues.patch(popped.id, {"status": "running"})
    [queued] = [await queues.get(rec.id) for rec in pushed if rec.id != popped.id]
    for keys in queues.layout.every():  # Redis loses everything
        await backend_redis.delete(*keys.all)
    assert await queues.restore(queued) and await queues.restore(running)
    assert not await queues.restore(queued)
    assert (await queues.get(running.id)).status == "running"
    [again] = await queues.pop("boefje")
    assert again.id == queued.id


async def test_every_operation_survives_script_flush(queues, backend_redis):
    await backend_redis.script_flush()
    rec = await queues.push("boefje", organisation="o", data=boefje_data(), priority=1)
    await backend_redis.script_flush()
    [popped] = await queues.pop("boefje")
    await backend_redis.script_flush()
    await queues.extend_lease("boefje", popped.id, popped.lease, 5)
    await backend_redis.script_flush()
    assert (await queues.patch(rec.id, {"status": "completed"}, token=popped.lease)).status == "completed"
    await backend_redis.script_flush()
    assert await queues.reap("boefje") == (0, 0)
    await backend_redis.script_flush()
    assert await queues.peek("boefje") == []
    await backend_redis.script_flush()
    assert await queues.forget_finished("boefje", [(rec.id, "0")]) == 0


async def test_restore_leaves_alone_a_task_another_partition_of_its_queue_holds(queues, partitions, backend_redis):
    """Its hash patched, a live task stays in the partition it was pushed to; restoring it
    from Postgres (reconciliation after the partition of its new hash lost data) must not make
    a second live copy there."""
    await queues.push("normalizer", organisation="o", data=normalizer_data(), priority=5)
    [task] = await queues.pop("normalizer", None, 1)
    home = (await queues.locate(task.id)).partition
    moved_hash = next(
        f"{task.hash}-{n}" for n in range(1000) if partitions == 1 or partition_of(f"{task.hash}-{n}", partitions) != home
    )
    running = await queues.patch(task.id, {"hash": moved_hash, "status": "running"}, token=task.lease)
    assert not await queues.restore(msgspec.structs.replace(running, rev="0"))
    holders = [keys.partition for keys in queues.layout.of("normalizer") if await backend_redis.hexists(keys.tasks, task.id)]
    assert holders == [home], "one live copy, where it was"
    assert (await queues.restore_all([msgspec.structs.replace(running, rev="0")])) == [False]
