"""Many pushes in one script run (lua/push.lua): ``push_many`` and concurrent pushes merged by
the pipeliner. Each push gets the answer it would get alone, in order: a later push sees the
earlier ones of its run."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from redisched import limits
from redisched.errors import BadRequest, Conflict, QueueFull
from redisched.queue.commands import PUSH_MERGE_MAX_BYTES, PUSHES_PER_RUN
from redisched.queue.records import TaskRecord
from tests.factories import boefje_data, normalizer_data, report_data
from tests.integration.conftest import QueueOptions


def _script_runs_sent(queues):
    """Every script call that reaches Redis from now on, as (script name, its ARGV); None where
    calls are not merged (the sync facade, the cluster client)."""
    pipeliner = getattr(queues.driver, "_pipeliner", None)
    if pipeliner is None:
        return None
    runs, send = [], pipeliner._send_pipeline

    async def counted(wire, calls):
        runs.extend((getattr(getattr(call, "script", None), "name", None), list(call.args)) for call in calls)
        return await send(wire, calls)

    pipeliner._send_pipeline = counted
    return runs


async def test_push_many_answers_each_push_as_alone_twins_included(make_queues):
    queues = make_queues(one_task_per_schedule=False)
    first, second, third = boefje_data(), boefje_data(), boefje_data()
    tasks = [
        {"organisation": "o", "data": first, "priority": 10},
        {"organisation": "o", "data": second, "priority": 10},
        {"organisation": "o", "data": first, "priority": 3},  # a twin of the first, queued by now
        {"organisation": "o", "data": third, "priority": 0},  # malformed: the contract's 400
        {"organisation": "o", "data": third, "priority": 7},
    ]
    outcomes = await queues.push_many("boefje", tasks)
    assert [type(outcome) for outcome in outcomes] == [TaskRecord, TaskRecord, Conflict, BadRequest, TaskRecord]
    assert outcomes[2].message == "queue is not allowed to push items"
    assert len({outcomes[i].schedule_id for i in (0, 1, 4)}) == 3
    assert await queues.qsize("boefje") == 3
    for pushed in (outcomes[0], outcomes[1], outcomes[4]):
        stored = await queues.get(pushed.id)
        assert stored.status == "queued" and stored.data == pushed.data and int(stored.priority) == int(pushed.priority)
    again = await queues.push_many("boefje", [{"organisation": "o", "data": second, "priority": 10}])
    assert isinstance(again[0], Conflict)


async def test_a_twin_earlier_in_the_run_is_updated_in_place_when_the_options_allow(make_queues):
    queues = make_queues(options={"boefje": QueueOptions(allow_priority_updates=True)})
    data = boefje_data()
    outcomes = await queues.push_many("boefje", [
        {"organisation": "o", "data": data, "priority": 10},
        {"organisation": "o", "data": data, "priority": 4},
        {"organisation": "o", "data": data, "priority": 2},
    ])  # fmt: skip
    assert len({outcome.id for outcome in outcomes}) == 1
    assert [int(outcome.priority) for outcome in outcomes] == [10, 4, 2]
    assert await queues.qsize("boefje") == 1
    [popped] = await queues.pop("boefje")
    assert int(popped.priority) == 2 and popped.created_at == outcomes[0].created_at


async def test_a_queue_that_fills_mid_run_refuses_the_rest_but_priority_one(make_queues, one_partition):
    queues = make_queues(options={"report": QueueOptions(maxsize=3)})
    await queues.push("report", organisation="o", data=report_data(), priority=5)
    priorities = [5, 5, 5, 1, 5, -2]
    outcomes = await queues.push_many(
        "report", [{"organisation": "o", "data": report_data(), "priority": p} for p in priorities]
    )
    assert [type(outcome) for outcome in outcomes] == [TaskRecord, TaskRecord, QueueFull, TaskRecord, QueueFull, TaskRecord]
    assert await queues.qsize("report") == 5


async def test_a_live_id_is_refused_in_its_own_slot(queues, one_partition):
    live = await queues.push("report", organisation="o", data=report_data(), priority=5)
    outcomes = await queues.push_many("report", [
        {"organisation": "o", "data": report_data(), "priority": 5},
        {"organisation": "o", "data": report_data(), "priority": 5, "task_id": live.id},
        {"organisation": "o", "data": report_data(), "priority": 5, "task_id": live.id},
    ])  # fmt: skip
    assert isinstance(outcomes[0], TaskRecord)
    assert [str(o) for o in outcomes[1:]] == ["a live task already has this id"] * 2
    assert await queues.qsize("report") == 2


async def test_pushes_of_one_run_keep_their_order_within_a_priority(queues, one_partition):
    outcomes = await queues.push_many(
        "normalizer", [{"organisation": "o", "data": normalizer_data(), "priority": 5} for _ in range(20)]
    )
    assert [t.created_at for t in outcomes] == sorted(t.created_at for t in outcomes)
    assert len({t.created_at for t in outcomes}) == 20
    popped = await queues.pop("normalizer")
    assert [t.id for t in popped] == [t.id for t in outcomes]


async def test_one_task_per_schedule_holds_per_push_within_a_run(make_queues):
    queues = make_queues(one_task_per_schedule=True)
    data = boefje_data()
    first = await queues.push("boefje", organisation="o", data=data, priority=5)
    [leased] = await queues.pop("boefje")
    outcomes = await queues.push_many("boefje", [
        {"organisation": "o", "data": data, "priority": 5},  # the schedule's task is dispatched
        {"organisation": "o", "data": boefje_data(), "priority": 5},
    ])  # fmt: skip
    assert isinstance(outcomes[0], Conflict) and isinstance(outcomes[1], TaskRecord)
    await queues.patch(leased.id, {"status": "completed"})
    [linked] = await queues.push_many("boefje", [{"organisation": "o", "data": data, "priority": 5}])
    assert linked.schedule_id == first.schedule_id


async def test_push_many_of_more_than_a_run_goes_in_runs_and_pushes_every_task(queues, partitions):
    count = PUSHES_PER_RUN * 2 + 10
    tasks = [{"organisation": f"o{i % 7}", "data": normalizer_data(), "priority": 2 + i % 9} for i in range(count)]
    outcomes = await queues.push_many("normalizer", tasks)
    assert all(isinstance(outcome, TaskRecord) for outcome in outcomes)
    assert await queues.qsize("normalizer") == count
    assert {t.id for t in await queues.pop("normalizer", None, 1000)} == {t.id for t in outcomes}


async def test_concurrent_api_pushes_of_a_partition_are_one_script_run(queues, partitions):
    runs = _script_runs_sent(queues)
    data = normalizer_data()
    pushes = [queues.push("normalizer", organisation="o", data=normalizer_data(), priority=5) for _ in range(30)]
    twins = [queues.push("normalizer", organisation="o", data=data, priority=5) for _ in range(3)]
    outcomes = await asyncio.gather(*pushes, *twins, return_exceptions=True)
    assert all(isinstance(outcome, TaskRecord) for outcome in outcomes[:30])
    assert sorted(type(outcome).__name__ for outcome in outcomes[30:]) == ["Conflict", "Conflict", "TaskRecord"]
    assert await queues.qsize("normalizer") == 31
    if runs is not None and partitions == 1:
        assert [name for name, _ in runs if name] == ["push"], "the concurrent pushes were merged into one run"


def _largest_mergeable_data(queues, organisation: str) -> dict:
    """Boefje data whose push is as large as may still merge: record + data at the bound."""
    data = boefje_data(organization=organisation)
    call = queues.commands.push("boefje", organisation=organisation, data=data, priority=5)
    data["dispatches"] = ["x" * (PUSH_MERGE_MAX_BYTES - len(call.args[0]) - len(call.args[1]) - 4)]
    return data


async def test_the_largest_merged_run_stays_bounded(queues, partitions):
    """The hostile case: as many concurrent pushes as the pipeliner merges, each as large as
    still merges, and pushes of the largest record and data the validators take (organisation
    1 KiB, input_ooi 2 KiB, data 1 MiB): those run alone. No run holds more than
    PUSHES_PER_RUN pushes or PUSHES_PER_RUN x PUSH_MERGE_MAX_BYTES of records and data."""
    runs = _script_runs_sent(queues)
    datas = [_largest_mergeable_data(queues, "o" * 100) for _ in range(PUSHES_PER_RUN + 20)]
    pushes = [queues.push("boefje", organisation="o" * 100, data=data, priority=5) for data in datas]
    largest = "o" * limits.MAX_COLUMN_BYTES
    big = {**boefje_data(organization=largest), "dispatches": ["y" * (limits.MAX_DATA_BYTES - 4000)]}
    large = [
        queues.push("boefje", organisation=largest, priority=5, data={
            **big, "input_ooi": f"Hostname|internet|{uuid.uuid4()}".ljust(limits.MAX_INDEXED_STRING_BYTES, "h")})
        for _ in range(2)
    ]  # fmt: skip
    if runs is not None:
        outcomes = await asyncio.gather(*pushes, *large)
    else:  # not merged (the sync facade, the cluster client, whose pool this many at once would exhaust)
        outcomes = [await push for push in [*pushes, *large]]
    assert all(isinstance(outcome, TaskRecord) for outcome in outcomes)
    assert await queues.qsize("boefje") == len(outcomes)
    if runs is None:
        return
    push_runs = [args for name, args in runs if name == "push"]
    sizes = [len(args) // 12 for args in push_runs]
    assert max(sizes) <= PUSHES_PER_RUN and sum(sizes) == len(outcomes)
    for args in push_runs:
        if len(args) > 12:
            records_and_data = sum(len(args[at]) + len(args[at + 1]) for at in range(0, len(args), 12))
            assert records_and_data <= PUSHES_PER_RUN * PUSH_MERGE_MAX_BYTES
    large_runs = [args for args in push_runs if len(args[1]) > limits.MAX_DATA_BYTES // 2]
    assert len(large_runs) == 2 and all(len(args) == 12 for args in large_runs), "a large push runs alone"
    if partitions == 1:
        assert max(sizes) == PUSHES_PER_RUN, "the ones at the bound were merged"


async def test_push_many_refuses_an_unknown_queue_and_checks_each_task(queues):
    from redisched.errors import NotFound

    with pytest.raises(NotFound):
        await queues.push_many("nope", [])
    outcomes = await queues.push_many("boefje", [
        {"organisation": "o", "data": {"boefje": "not an object"}, "priority": 5},
        {"organisation": "o\0", "data": boefje_data(), "priority": 5},
        {"organisation": "o", "data": boefje_data(), "priority": 5},
    ])  # fmt: skip
    assert [type(o).__mro__[0] is TaskRecord for o in outcomes] == [False, False, True]
    assert all(isinstance(o, BadRequest) for o in outcomes[:2])
    assert await queues.qsize("boefje") == 1


async def test_limited_pushes_of_a_run_follow_the_rules_each_and_a_stale_run_is_pushed_again(make_queues):
    from redisched.limit_rules import parse_rules

    first, second = make_queues(), make_queues()  # two processes, no rules at start
    await first.replace_limits(parse_rules([{"boefje": "nmap", "group": "nmap:{organisation}", "concurrency": 1}]))
    tasks = [{"organisation": "org1", "data": boefje_data("nmap", organization="org1"), "priority": 5} for _ in range(4)]
    tasks.append({"organisation": "org1", "data": boefje_data("dns-records", organization="org1"), "priority": 5})
    outcomes = await second.push_many("boefje", tasks)  # with older rules: sent back, read them, pushed again
    assert all(isinstance(outcome, TaskRecord) for outcome in outcomes)
    assert [outcome.lg for outcome in outcomes] == ["nmap:org1"] * 4 + [None]
    assert second.commands.rules.current.rules == first.commands.rules.current.rules
    popped = [task for _ in range(6) for task in await first.pop("boefje", None, 1)]
    assert sorted(task.lg or "-" for task in popped) == ["-", "nmap:org1"], "the group's concurrency of 1 held"
