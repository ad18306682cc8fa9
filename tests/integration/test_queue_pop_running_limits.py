"""Tasks popped running (``status="running"``) under the other rules of a pop: a limit
group's concurrency counts them as it counts dispatched ones and frees their slot on every
way out (finished, handed back to the queue, reaped); fairness serves them by its shares."""

from __future__ import annotations

import asyncio
import collections

from redisched.limit_rules import parse_rules
from tests.integration.test_queue_fairness import push_boefjes
from tests.integration.test_queue_limits import boefje_of, push_all, tasks_in_one_partition


async def _pop_running(queues, **options):
    popped = await queues.pop("boefje", limit=1, status="running", **options)
    assert all(record.status == "running" for record in popped)
    return popped[0] if popped else None


async def test_a_concurrency_group_counts_tasks_popped_running_and_frees_them_on_every_way_out(make_queues):
    rules = parse_rules([{"boefje": "nmap", "group": "nmap", "concurrency": 2}])
    queues = make_queues(limits=rules)
    await push_all(queues, tasks_in_one_partition(queues, "nmap", 8), priority=1)
    await push_all(queues, tasks_in_one_partition(queues, "dns-records", 8), priority=50)
    held = [await _pop_running(queues), await _pop_running(queues)]
    assert [boefje_of(r) for r in held] == ["nmap", "nmap"]
    assert boefje_of(await _pop_running(queues)) == "dns-records", "the group is full"
    assert boefje_of((await queues.pop("boefje", limit=1))[0]) == "dns-records", "for a dispatched pop too"

    for change in ({"status": "completed"}, {"status": "failed"}, {"status": "queued"}):
        await queues.patch(held[0].id, change)  # token-less, as OpenKAT's runners patch
        held = [held[1], await _pop_running(queues)]
        assert boefje_of(held[1]) == "nmap", change
        assert boefje_of(await _pop_running(queues)) == "dns-records", change

    done, [following] = await queues.pop_next(held[0].id, {"status": "completed"}, held[0].lease, status="running")
    assert done.status == "completed" and boefje_of(following) == "nmap" and following.status == "running"
    assert boefje_of(await _pop_running(queues)) == "dns-records"


async def test_a_group_slot_of_a_task_popped_running_is_freed_when_its_lease_is_reaped(make_queues):
    rules = parse_rules([{"boefje": "nmap", "group": "nmap", "concurrency": 1}])
    queues = make_queues(limits=rules, dispatch_lease_ms=60_000, running_lease_ms=50)
    await push_all(queues, tasks_in_one_partition(queues, "nmap", 3), priority=1)
    await push_all(queues, tasks_in_one_partition(queues, "dns-records", 3), priority=50)
    first = await _pop_running(queues)
    assert boefje_of(first) == "nmap" and boefje_of(await _pop_running(queues)) == "dns-records"
    await asyncio.sleep(0.15)  # the running lease (50 ms) ran out, not the dispatch one (60 s)
    requeued = sum([(await queues.reap("boefje"))[0]])
    assert requeued == 2
    again = await _pop_running(queues)
    assert boefje_of(again) == "nmap", "the reaped task's slot is free again"
    assert boefje_of(await _pop_running(queues)) == "dns-records", "and taken by the one popped now"


async def test_fairness_serves_tasks_popped_running_by_its_shares(make_queues):
    queues = make_queues(fairness="organisation")
    await queues.set_weights({"big": 1, "mid": 2})
    await push_boefjes(queues, "big", 60, priority=5)
    await push_boefjes(queues, "mid", 30, priority=50)
    await push_boefjes(queues, "small", 30, priority=90)
    popped = [await _pop_running(queues) for _ in range(40)]
    counts = collections.Counter(record.organisation for record in popped)
    assert counts == {"mid": 20, "big": 10, "small": 10}, counts
    for record in popped[:5]:
        assert (await queues.get(record.id)).status == "running"
