"""One live task per schedule (REDISCHED_ONE_TASK_PER_SCHEDULE): a push whose schedule has a
queued, dispatched or running task is refused, atomically in the push script."""

from __future__ import annotations

import asyncio

import pytest

from redisched.errors import Conflict
from tests.factories import boefje_data


async def test_a_schedule_with_a_dispatched_or_running_task_refuses_an_api_push(queues):
    data = boefje_data()
    first = await queues.push("boefje", organisation="o", data=data, priority=3)
    assert first.schedule_id is not None
    [dispatched] = await queues.pop("boefje")
    with pytest.raises(Conflict):
        await queues.push("boefje", organisation="o", data=data, priority=3)
    await queues.patch(dispatched.id, {"status": "running"})
    with pytest.raises(Conflict):
        await queues.push("boefje", organisation="o", data=data, priority=3)
    await queues.patch(dispatched.id, {"status": "completed"})
    again = await queues.push("boefje", organisation="o", data=data, priority=3)
    assert again.schedule_id == first.schedule_id and await queues.qsize("boefje") == 1


async def test_a_task_without_a_schedule_is_not_held_to_the_rule(queues):
    data = boefje_data()
    await queues.push("boefje", organisation="o", data=data, priority=3, link_schedule=False)
    await queues.pop("boefje")
    # the live twin belongs to no schedule: this push links to (creates) one and gets in
    pushed = await queues.push("boefje", organisation="o", data=data, priority=3)
    assert pushed.schedule_id is not None


async def test_switched_off_the_api_may_push_beside_a_dispatched_task(make_queues):
    queues = make_queues(one_task_per_schedule=False)
    data = boefje_data()
    await queues.push("boefje", organisation="o", data=data, priority=3)
    await queues.pop("boefje")
    assert (await queues.push("boefje", organisation="o", data=data, priority=3)).status == "queued"


async def test_concurrent_pushes_and_pops_of_one_schedule_never_hold_two_live_tasks(queues):
    data = boefje_data()

    async def push() -> bool:
        try:
            await queues.push("boefje", organisation="o", data=data, priority=3)
        except Conflict:
            return False
        return True

    async def pop_and_finish() -> int:
        popped = await queues.pop("boefje")
        for task in popped:
            await queues.patch(task.id, {"status": "completed"})
        return -len(popped)

    await push()  # one call first: the async cluster client's first connections do not race well
    live, accepted = 1, 1
    for _ in range(20):
        results = await asyncio.gather(*(push() for _ in range(5)), pop_and_finish(), *(push() for _ in range(5)))
        accepted += sum(r is True for r in results)
        live += sum(int(r) for r in results)  # accepted pushes minus finished tasks
        assert live <= 1
    assert accepted >= 10  # pushes got in again once each task finished
