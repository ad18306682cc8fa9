"""Push and pop against a real Redis: the contract's dedup, order, limit and batch rules."""

from __future__ import annotations

import uuid

import pytest

from redisched.errors import BadRequest, Conflict, NotFound, QueueFull
from redisched.filters import parse_filter_request
from tests.factories import boefje_data, normalizer_data, report_data
from tests.integration.conftest import QueueOptions


async def test_push_stores_a_queued_task_with_server_side_hash_and_a_new_schedule(queues):
    data = boefje_data(ooi="Hostname|internet|example.com", organization="org1")
    rec = await queues.push("boefje", organisation="org1", data=data, priority=10)
    task = rec.to_task()
    assert task.status == "queued" and task.priority == 10 and task.type == "boefje"
    assert task.hash == "74956880324db1838156e1ebf7847448"
    assert task.schedule_id is not None
    assert task.created_at == task.modified_at
    assert await queues.qsize("boefje") == 1
    assert (await queues.get(task.id)).id == str(task.id)


async def test_task_id_equals_data_id_and_disagreeing_or_missing_ids_are_both_replaced(queues):
    data_id = str(uuid.uuid4())
    kept = await queues.push(
        "boefje", organisation="o", data={**boefje_data(), "id": data_id}, priority=1, task_id=data_id
    )
    assert kept.id == data_id
    for task_id in (uuid.uuid4(), None):  # no id given counts as another one (mula's Task id defaults to a new uuid)
        replaced = await queues.push(
            "boefje", organisation="o", data={**boefje_data(), "id": data_id}, priority=1, task_id=task_id
        )
        assert replaced.id != data_id
        assert f'"id":"{replaced.id}"' in replaced.data


async def test_a_queued_twin_refuses_the_push_whatever_the_priority_until_it_is_popped(make_queues):
    queues = make_queues(one_task_per_schedule=False)  # mula 1.20.1's rule
    data = boefje_data()
    await queues.push("boefje", organisation="o", data=data, priority=10)
    for priority in (10, 3):
        with pytest.raises(Conflict) as raised:
            await queues.push("boefje", organisation="o", data=data, priority=priority)
        assert raised.value.message == "queue is not allowed to push items"
    [popped] = await queues.pop("boefje")
    again = await queues.push("boefje", organisation="o", data=data, priority=10)
    assert again.id != popped.id and again.hash == popped.hash


async def test_second_push_links_the_same_schedule(queues):
    data = boefje_data()
    first = await queues.push("boefje", organisation="o", data=data, priority=10)
    [popped] = await queues.pop("boefje")
    await queues.patch(popped.id, {"status": "completed"})
    second = await queues.push("boefje", organisation="o", data=data, priority=10)
    assert second.schedule_id == first.schedule_id


async def test_a_disabled_schedule_is_left_alone(queues, backend_redis):
    data = boefje_data()
    first = await queues.push("boefje", organisation="o", data=data, priority=10)
    mirror = queues.layout.for_hash("boefje", first.hash).schedules
    await backend_redis.hset(mirror, first.hash, f"{first.schedule_id}|0")
    await queues.pop("boefje")
    second = await queues.push("boefje", organisation="o", data=data, priority=10)
    assert second.schedule_id is None


async def test_normalizer_pushes_never_touch_schedules(queues, backend_redis):
    rec = await queues.push("normalizer", organisation="o", data=normalizer_data(), priority=2)
    assert rec.schedule_id is None
    assert await backend_redis.hlen(queues.commands.keys("normalizer").schedules) == 0


@pytest.mark.parametrize(
    ("policy", "change", "allowed"),
    [
        ({}, "priority", False),
        ({"allow_priority_updates": True}, "priority", True),
        ({"allow_priority_updates": True}, "data", False),
        ({"allow_updates": True}, "data", True),
        ({"allow_updates": True}, "priority", False),
        ({"allow_replace": True}, "priority", True),
        ({"allow_replace": True}, "data", True),
    ],
)
async def test_twin_options_update_the_queued_task_in_place(make_queues, policy, change, allowed):
    queues = make_queues(options={"boefje": QueueOptions(**policy)})
    data = boefje_data()
    original = await queues.push("boefje", organisation="o", data=data, priority=10)
    changed_data = {**data, "boefje": {**data["boefje"], "name": "renamed"}} if change == "data" else data
    priority = 5 if change == "priority" else 10
    if not allowed:
        with pytest.raises(Conflict):
            await queues.push("boefje", organisation="o", data=changed_data, priority=priority)
        return
    updated = await queues.push("boefje", organisation="o", data=changed_data, priority=priority)
    assert updated.id == original.id and await queues.qsize("boefje") == 1
    [popped] = await queues.pop("boefje")
    assert int(popped.priority) == priority
    assert ("renamed" in popped.data) == (change == "data")


async def test_maxsize_refuses_with_queue_full_but_priority_one_always_gets_in(make_queues, one_partition):
    queues = make_queues(options={"report": QueueOptions(maxsize=2)})
    for _ in range(2):
        await queues.push("report", organisation="o", data=report_data(), priority=5)
    with pytest.raises(QueueFull):
        await queues.push("report", organisation="o", data=report_data(), priority=5)
    await queues.push("report", organisation="o", data=report_data(), priority=1)
    await queues.push("report", organisation="o", data=report_data(), priority=-3)
    assert await queues.qsize("report") == 4


async def test_pop_returns_lowest_priority_first_then_oldest(queues, one_partition):
    ids = {}
    for priority in (10, 5, 1, 3, 5):
        rec = await queues.push("normalizer", organisation="o", data=normalizer_data(), priority=priority)
        ids.setdefault(priority, []).append(rec.id)
    popped = await queues.pop("normalizer", limit=10)
    assert [r.id for r in popped] == ids[1] + ids[3] + ids[5] + ids[10]
    assert all(r.status == "dispatched" and r.lease for r in popped)
    assert await queues.pop("normalizer") == []


async def test_boefje_pop_returns_one_task_whatever_the_limit_without_dedup_keys(queues):
    for _ in range(3):
        await queues.push("boefje", organisation="o", data=boefje_data(), priority=5)
    assert len(await queues.pop("boefje", limit=10)) == 1


async def test_boefje_dedup_key_batch_comes_first_and_whole(queues, one_partition):
    key = str(uuid.uuid4())
    await queues.push("boefje", organisation="o", data=boefje_data(), priority=1)
    batch = [await queues.push("boefje", organisation="o", data=boefje_data(deduplication_key=key), priority=p) for p in (7, 5, 9)]
    await queues.push("boefje", organisation="o", data=boefje_data(deduplication_key=str(uuid.uuid4())), priority=8)
    popped = await queues.pop("boefje", limit=10)
    assert [r.id for r in popped] == [batch[1].id, batch[0].id, batch[2].id]
    assert len(await queues.pop("boefje", limit=1)) == 1


async def test_normalizer_pop_without_limit_returns_every_match(queues):
    for _ in range(5):
        await queues.push("normalizer", organisation="o", data=normalizer_data(), priority=3)
    assert len(await queues.pop("normalizer")) == 5


async def test_indexed_filters_pop_only_matching_tasks_in_order(queues, one_partition):
    pushed = []
    for i in range(30):
        data = boefje_data(f"b{i % 3}", oci_image=f"img{i % 2}" if i % 5 else None)
        pushed.append(await queues.push("boefje", organisation=f"org{i % 4}", data=data, priority=30 - i))
    request = {
        "filters": [
            {"column": "data", "field": "boefje__oci_image", "operator": "in", "value": ["img1"]},
            {"column": "data", "field": "boefje__id", "operator": "in", "value": ["b0", "b2"]},
        ]
    }
    node = parse_filter_request(request)
    expected = [r for r in pushed if '"oci_image":"img1"' in r.data and ('"id":"b0"' in r.data or '"id":"b2"' in r.data)]
    expected.sort(key=lambda r: int(r.priority))
    got = []
    while popped := await queues.pop("boefje", node, limit=1):
        got.extend(popped)
    assert [r.id for r in got] == [r.id for r in expected]
    by_org = parse_filter_request({"filters": [{"column": "organisation", "operator": "eq", "value": "org3"}]})
    org_popped = await queues.pop("boefje", by_org)
    assert org_popped and all(r.organisation == "org3" for r in org_popped)


async def test_a_null_oci_image_matches_no_in_filter(queues):
    await queues.push("boefje", organisation="o", data=boefje_data(oci_image=None), priority=1)
    node = parse_filter_request({"filters": [{"column": "data", "field": "boefje__oci_image", "operator": "in", "value": ["x"]}]})
    assert await queues.pop("boefje", node) == []


async def test_unindexed_filter_is_evaluated_by_a_bounded_scan(make_queues, one_partition):
    queues = make_queues(scan_budget=50)
    for i in range(120):
        await queues.push("normalizer", organisation="o", data=normalizer_data(f"n{i}"), priority=1)
    near = parse_filter_request({"filters": [{"column": "data", "field": "normalizer__id", "operator": "eq", "value": "n10"}]})
    far = parse_filter_request({"filters": [{"column": "data", "field": "normalizer__id", "operator": "eq", "value": "n100"}]})
    assert len(await queues.pop("normalizer", near)) == 1
    assert await queues.pop("normalizer", far) == []  # beyond the budget: not found in this call


async def test_unknown_scheduler_and_bad_pushes_raise_and_leave_redis_unchanged(queues, backend_redis, key_prefix):
    await queues.push("boefje", organisation="o", data=boefje_data(), priority=3)
    all_keys = [key for sid in ("boefje", "normalizer", "report") for key in queues.commands.keys(sid).all]
    snapshot = {k: await backend_redis.dump(k) for k in all_keys}
    with pytest.raises(NotFound, match="Scheduler nope not found"):
        await queues.push("nope", organisation="o", data=boefje_data(), priority=1)
    with pytest.raises(NotFound):
        await queues.pop("nope")
    bad = [
        dict(data=boefje_data(), priority=None),
        dict(data=boefje_data(), priority=0),
        dict(data=boefje_data(), priority=1 << 70),
        dict(data={"foo": "bar"}, priority=1),
        dict(data={**boefje_data(), "boefje": {"id": "x\0y"}}, priority=1),
        dict(data=boefje_data(), priority=1, item_scheduler_id="normalizer"),
    ]
    for kwargs in bad:
        with pytest.raises(BadRequest):
            await queues.push("boefje", organisation="o", **kwargs)
    with pytest.raises(BadRequest):
        await queues.push("boefje", organisation="a\0b", data=boefje_data(), priority=1)
    assert {k: await backend_redis.dump(k) for k in all_keys} == snapshot


async def test_a_dispatched_twin_lets_the_api_push_but_not_a_scheduler(make_queues):
    queues = make_queues(one_task_per_schedule=False)  # mula 1.20.1's rule
    data = boefje_data()
    await queues.push("boefje", organisation="o", data=data, priority=3)
    [dispatched] = await queues.pop("boefje")
    with pytest.raises(Conflict):
        await queues.push("boefje", organisation="o", data=data, priority=3, refuse_live_twin=True)
    second = await queues.push("boefje", organisation="o", data=data, priority=3)
    with pytest.raises(Conflict):  # now a queued twin refuses everyone
        await queues.push("boefje", organisation="o", data=data, priority=3)
    await queues.patch(dispatched.id, {"status": "completed"})
    [popped] = await queues.pop("boefje")
    assert popped.id == second.id
    await queues.patch(second.id, {"status": "failed"})
    assert await queues.push("boefje", organisation="o", data=data, priority=3, refuse_live_twin=True)
