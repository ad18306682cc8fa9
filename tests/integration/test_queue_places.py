"""A PATCH without a lease token (OpenKAT's runners send none) of a task this process handed
out goes to the task's queue partition alone, not to every queue partition; where the hint is
wrong or missing, every partition is still asked, so the answer never changes."""

from __future__ import annotations

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
