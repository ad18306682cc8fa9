"""One logical queue spread over three hash-tagged partitions, on the single Redis (where the
pipeliner batches) and on the 3-master cluster (one partition per master): the partitions
each keep strict order, a task's twins always meet in one partition, and every operation
finds a task wherever it is."""

from __future__ import annotations

import asyncio
from itertools import count
from typing import Any

import pytest
import redis
import redis.asyncio as aredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from redisched.errors import Conflict, QueueFull
from redisched.models import payload_hash
from redisched.queue.keys import QueueKeys
from redisched.queue.layout import QueueLayout, QueueOptions
from redisched.queue.queue import TaskQueues
from tests.factories import boefje_data, normalizer_data, report_data
from tests.integration.conftest import FACADES, facade_maker

PARTITIONS = 3


@pytest.fixture(params=["redis", "cluster"])
def backend(request, redis_url):
    return request.param, redis_url if request.param == "redis" else request.getfixturevalue("cluster_url")


@pytest.fixture
async def redis_client(backend):
    kind, url = backend
    client = aredis.Redis.from_url(url) if kind == "redis" else AsyncRedisCluster.from_url(url)
    yield client
    await client.aclose()


@pytest.fixture
def sync_client(backend):
    kind, url = backend
    client = redis.Redis.from_url(url) if kind == "redis" else redis.RedisCluster.from_url(url)
    yield client
    client.close()


@pytest.fixture(params=FACADES)
def make_queues(request, backend, key_prefix):
    """Queues of PARTITIONS partitions through each facade (asyncio and sync)."""
    layout_of = lambda **options: QueueLayout(prefix=key_prefix, partitions=PARTITIONS, **options)  # noqa: E731
    return facade_maker(request, request.param, layout_of, clients=("redis_client", "sync_client"))


@pytest.fixture
def queues(make_queues) -> TaskQueues:
    return make_queues()


def data_in(queues: TaskQueues, scheduler_id: str, partition: int, make=normalizer_data, **kwargs: Any) -> dict:
    """A payload whose hash puts it in ``partition``."""
    while True:
        data = make(**kwargs)
        if queues.layout.for_hash(scheduler_id, payload_hash(scheduler_id, data)).partition == partition:
            return data


def partition_of(queues: TaskQueues, record) -> int:
    return queues.layout.for_hash(record.scheduler_id, record.hash).partition


def test_one_partition_keeps_the_plain_tag_and_three_land_on_three_masters(cluster_url):
    assert QueueKeys("rs", "boefje").queue == "rs:{boefje}:queue"
    cluster = redis.RedisCluster.from_url(cluster_url)
    try:
        keys = [keys.queue for keys in QueueLayout("rs", PARTITIONS).of("boefje")]
        nodes = {cluster.get_node_from_key(key).name for key in keys}
    finally:
        cluster.close()
    assert len(nodes) == PARTITIONS, "each partition on its own master"


async def test_tasks_spread_over_every_partition_and_each_pops_in_strict_order(queues):
    pushed = [
        await queues.push("normalizer", organisation="o", data=normalizer_data(), priority=priority)
        for priority in [5, 3, 9, 1, 3, 7, 2, 8, 1, 6] * 3
    ]
    assert {partition_of(queues, r) for r in pushed} == set(range(PARTITIONS))
    assert await queues.qsize("normalizer") == len(pushed)

    popped = []
    while batch := await queues.pop("normalizer", limit=1):
        popped += batch
    assert sorted(r.id for r in popped) == sorted(r.id for r in pushed), "each task exactly once"
    for partition in range(PARTITIONS):
        mine = [r for r in popped if partition_of(queues, r) == partition]
        expected = sorted((r for r in pushed if partition_of(queues, r) == partition), key=lambda r: r.order)
        assert [r.id for r in mine] == [r.id for r in expected], f"partition {partition} in queue order"


async def test_a_pop_with_a_limit_gathers_from_every_partition(queues):
    for partition in range(PARTITIONS):
        await queues.push("normalizer", organisation="o", data=data_in(queues, "normalizer", partition), priority=1)
    assert len(await queues.pop("normalizer", limit=10)) == PARTITIONS
    assert await queues.pop("normalizer", limit=10) == []


async def test_twins_always_meet_in_one_partition(queues):
    # Four payloads whose hash falls in each partition (12 random ones missed one ~2 % of runs).
    datas = [data_in(queues, "boefje", i % PARTITIONS, make=boefje_data) for i in range(12)]
    first = [await queues.push("boefje", organisation="o", data=data, priority=5) for data in datas]
    assert {partition_of(queues, r) for r in first} == set(range(PARTITIONS))
    for data in datas:
        with pytest.raises(Conflict):
            await queues.push("boefje", organisation="o", data=data, priority=4)
    assert await queues.qsize("boefje") == len(datas)


async def test_peek_shows_the_best_tasks_across_partitions_in_queue_order(queues):
    pushed = [
        await queues.push("normalizer", organisation="o", data=normalizer_data(), priority=p)
        for p in (9, 4, 7, 1, 8, 2, 6, 3, 5)
    ]
    peeked = await queues.peek("normalizer", limit=4)
    assert [r.id for r in peeked] == [r.id for r in sorted(pushed, key=lambda r: r.order)[:4]]


async def test_get_patch_extend_and_reap_find_a_task_in_any_partition(make_queues):
    queues = make_queues(dispatch_lease_ms=40)
    recs = [
        await queues.push("normalizer", organisation="o", data=data_in(queues, "normalizer", p), priority=1)
        for p in range(PARTITIONS)
    ]
    for rec in recs:
        assert (await queues.get(rec.id)).id == rec.id
        assert (await queues.locate(rec.id)).partition == partition_of(queues, rec)
    popped = await queues.pop("normalizer", limit=10)
    assert len(popped) == PARTITIONS
    keep, finish, lapse = popped
    await queues.extend_lease("normalizer", keep.id, keep.lease, 60)
    assert (await queues.patch(finish.id, {"status": "completed"}, token=finish.lease)).status == "completed"
    await asyncio.sleep(0.06)
    assert await queues.reap("normalizer") == (1, 0), "only the lapsed lease is taken back"
    assert (await queues.get(lapse.id)).status == "queued"
    assert (await queues.get(keep.id)).status == "dispatched"
    assert await queues.last_activity_us("normalizer") is not None


async def test_a_boefje_pop_returns_one_task_from_one_partition(queues):
    for partition in range(PARTITIONS):
        await queues.push("boefje", organisation="o", data=data_in(queues, "boefje", partition, boefje_data), priority=3)
    for remaining in range(PARTITIONS, 0, -1):
        assert len(await queues.pop("boefje", limit=10)) == 1
        assert await queues.qsize("boefje") == remaining - 1


async def test_maxsize_is_shared_out_between_partitions(make_queues):
    queues = make_queues(options={"report": QueueOptions(maxsize=2 * PARTITIONS)})
    for _ in range(2):
        await queues.push("report", organisation="o", data=data_in(queues, "report", 0, report_data), priority=5)
    with pytest.raises(QueueFull):
        await queues.push("report", organisation="o", data=data_in(queues, "report", 0, report_data), priority=5)
    await queues.push("report", organisation="o", data=data_in(queues, "report", 1, report_data), priority=5)
    await queues.push("report", organisation="o", data=data_in(queues, "report", 0, report_data), priority=1)


async def test_concurrent_pops_hand_out_each_task_once(queues):
    pushed = {(await queues.push("normalizer", organisation="o", data=normalizer_data(), priority=i % 7 + 1)).id for i in range(300)}
    ids = count()

    async def popper() -> list[str]:
        got = []
        while (batch := await queues.pop("normalizer", limit=1)) and next(ids) < 10_000:
            got += [r.id for r in batch]
        return got

    results = await asyncio.gather(*(popper() for _ in range(20)))
    popped = [task_id for got in results for task_id in got]
    assert len(popped) == len(set(popped)) == len(pushed)
    assert set(popped) == pushed


async def test_the_partition_count_cannot_change_under_queued_tasks(redis_client, key_prefix):
    three = TaskQueues(redis_client, QueueLayout(prefix=key_prefix, partitions=3))
    two = TaskQueues(redis_client, QueueLayout(prefix=key_prefix, partitions=2))
    await three.check_layout()
    rec = await three.push("normalizer", organisation="o", data=normalizer_data(), priority=1)
    with pytest.raises(RuntimeError, match="hold tasks in 3 partitions"):
        await two.check_layout()
    await three.check_layout()  # the same count is fine
    await three.patch(rec.id, {"status": "completed"})
    await three.forget_finished("normalizer", [(rec.id, (await three.get(rec.id)).rev)])
    await two.check_layout()  # empty now: the new count takes over
    await two.push("normalizer", organisation="o", data=normalizer_data(), priority=1)
    with pytest.raises(RuntimeError, match="hold tasks in 2 partitions"):
        await three.check_layout()
