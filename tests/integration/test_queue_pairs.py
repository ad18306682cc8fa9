"""The (boefje id, image) pair index (lua/includes/common.lua): a runner's filter, boefje id
in B and image in I, reads the heads of the pairs of B x I in one HMGET. A runner whose
plugin list names boefjes it has no image for pays nothing for their tasks, however many;
a queue of an earlier version, without the index, is served by the boefje index until
``index_pairs`` has built it; a head that names no live task is healed."""

from __future__ import annotations

import redis

from redisched.client import Client
from redisched.queue import commands as queue_commands
from redisched.queue.layout import QueueLayout
from tests.factories import boefje_data
from tests.support.servers import private_redis

IMAGE, OTHER_IMAGE = "ghcr.io/minvws/openkat/nmap:latest", "ghcr.io/minvws/openkat/udp:latest"


def runner_filter(plugins: list[str], images: list[str]) -> dict:
    return {
        "filters": [
            {"column": "data", "field": "boefje__oci_image", "operator": "in", "value": images},
            {"column": "data", "field": "boefje__id", "operator": "in", "value": plugins},
        ]
    }


# The runner has IMAGE only; its plugin list also names nmap-udp, whose tasks need OTHER_IMAGE.
MISMATCHED = runner_filter(["nmap-tcp", "nmap-udp", "dns-records"], [IMAGE])


def _commands_in_pops(client: redis.Redis, queue, pops: int) -> tuple[int, list]:
    """The Redis commands the scripts of ``pops`` pops ran, and the tasks popped."""
    client.config_resetstat()
    popped = [task for _ in range(pops) for task in queue.pop(MISMATCHED, limit=1)]
    stats = client.info("commandstats")
    inner = sum(v["calls"] for k, v in stats.items() if k not in ("cmdstat_fcall", "cmdstat_config", "cmdstat_info"))
    return inner, popped


def _push_unpoppable(client: redis.Redis, commands, count: int, priority: int) -> None:
    pipe = client.pipeline(transaction=False)
    for _ in range(count):
        call = commands.push("boefje", organisation="o", data=boefje_data("nmap-udp", oci_image=OTHER_IMAGE), priority=priority)
        pipe.execute_command(*call.command())
    pipe.execute()


def test_a_runner_pays_nothing_for_the_tasks_of_plugins_whose_image_it_lacks():
    with private_redis() as url:
        client = redis.Redis.from_url(url)
        layout = QueueLayout(prefix="pairs")
        direct = Client(client, layout)
        direct.load_functions()
        queue = direct.queue("boefje")
        wanted = [
            queue.push(organisation="o", data=boefje_data("nmap-tcp", oci_image=IMAGE), priority=100 + i) for i in range(40)
        ]
        _push_unpoppable(client, direct.commands, 20, priority=1)  # ahead of every poppable task
        few, popped = _commands_in_pops(client, queue, 10)
        _push_unpoppable(client, direct.commands, 2_000, priority=1)
        many, popped_later = _commands_in_pops(client, queue, 10)
        assert [t.id for t in popped + popped_later] == [t.id for t in wanted[:20]]
        # the same, but for one HSET: the first pop of a 10-second rates bucket writes its slot
        # anew (common.lua, count_bucket), and either run may hold it
        assert abs(many - few) <= 1, f"{few} Redis commands in 10 pops with 20 unpoppable tasks ahead, {many} with 2,020"
        client.close()


async def test_an_earlier_versions_queue_is_served_then_indexed_in_bounded_steps(queues, backend_sync_redis, monkeypatch):
    pushed = [
        await queues.push("boefje", organisation="o", data=boefje_data(b, oci_image=image), priority=10 + i)
        for i, (b, image) in enumerate([("nmap-tcp", IMAGE), ("nmap-udp", OTHER_IMAGE), ("dns-records", IMAGE)] * 8)
    ]
    for keys in queues.layout.of("boefje"):  # as an earlier version left it: no pair index,
        backend_sync_redis.delete(keys.pairs, keys.heads)  # a boefje and an image index
        backend_sync_redis.hdel(keys.meta, "pairs")
    for task in pushed:
        keys = queues.layout.for_hash("boefje", task.hash)
        backend_sync_redis.zadd(keys.index("boefje"), {task.ix["boefje"].encode() + b"\0" + task.order: 0})
        backend_sync_redis.zadd(keys.index("image"), {task.ix["image"].encode() + b"\0" + task.order: 0})
    runnable = [t.id for t in pushed if t.ix["image"] == IMAGE]

    first = await queues.pop("boefje", MISMATCHED, limit=1)  # the boefje index serves it meanwhile
    assert [t.id for t in first] == runnable[:1] or queues.layout.partitions > 1
    monkeypatch.setattr(queue_commands, "INDEX_PAIRS_BATCH", 5)
    steps = await queues.index_pairs()
    assert steps >= 2  # 24 boefje index members, 5 a step
    for keys in queues.layout.of("boefje"):  # the pair index replaces the other two
        assert backend_sync_redis.hget(keys.meta, "pairs") == b"ready"
        assert backend_sync_redis.exists(keys.index("boefje"), keys.index("image")) == 0
    assert await queues.index_pairs() == 1  # ready: nothing left to do

    rest = []
    while popped := await queues.pop("boefje", MISMATCHED, limit=1):
        rest += popped
    assert sorted(t.id for t in first + rest) == sorted(runnable)
    assert len(await queues.peek("boefje", limit=100)) == 8  # the nmap-udp tasks stay queued
    for keys in queues.layout.of("boefje"):  # only they are left in the pair index
        assert all(b"nmap-udp" in member for member in backend_sync_redis.zrange(keys.pairs, 0, -1))


async def test_a_head_that_names_no_live_task_is_passed_over_and_moved_on(queues, backend_sync_redis, one_partition):
    tasks = [
        await queues.push("boefje", organisation="o", data=boefje_data("nmap-tcp", oci_image=IMAGE), priority=p)
        for p in (1, 2, 3)
    ]
    keys = queues.layout.of("boefje")[0]
    backend_sync_redis.hdel(keys.tasks, str(tasks[0].id))  # its record vanished: the head is a stray
    popped = await queues.pop("boefje", MISMATCHED, limit=1)
    assert [t.id for t in popped] == [tasks[1].id]
    [head] = backend_sync_redis.hvals(keys.heads)
    assert head == tasks[2].order
    assert backend_sync_redis.zcard(keys.pairs) == 1
    assert int(backend_sync_redis.hget(keys.meta, "stray_members")) >= 1


def _only(field: str, values: list[str]) -> dict:
    return {"filters": [{"column": "data", "field": field, "operator": "in", "value": values}]}


async def test_a_filter_on_the_boefje_id_or_the_image_alone_is_served_by_the_pairs_in_queue_order(queues, one_partition):
    kinds = [("nmap-tcp", IMAGE), ("nmap-udp", OTHER_IMAGE), ("dns-records", None), ("nmap-tcp", OTHER_IMAGE)]
    pushed = [
        await queues.push("boefje", organisation="o", data=boefje_data(b, oci_image=image), priority=50 - i)
        for i, (b, image) in enumerate(kinds * 5)
    ]
    by_queue_order = sorted(pushed, key=lambda t: t.order)
    for body, wanted in (
        (_only("boefje__id", ["nmap-tcp", "dns-records"]), lambda t: t.ix["boefje"] in ("nmap-tcp", "dns-records")),
        (_only("boefje__oci_image", [OTHER_IMAGE]), lambda t: t.ix.get("image") == OTHER_IMAGE),
    ):
        found = await queues.peek("boefje", body, limit=100)
        assert [t.id for t in found] == [t.id for t in by_queue_order if wanted(t)]
    popped = []
    while batch := await queues.pop("boefje", _only("boefje__oci_image", [IMAGE, OTHER_IMAGE]), limit=1):
        popped += batch
    assert [t.id for t in popped] == [t.id for t in by_queue_order if t.ix.get("image")]
    [left] = {t.ix["boefje"] for t in await queues.peek("boefje", limit=100)}
    assert left == "dns-records"  # no image: no image filter takes it


def test_past_the_pairs_a_search_may_list_the_queue_itself_is_walked():
    with private_redis() as url:
        client = redis.Redis.from_url(url)
        direct = Client(client, QueueLayout(prefix="many"))
        direct.load_functions()
        pipe = client.pipeline(transaction=False)
        for i in range(1_100):  # more pairs than a search lists (candidates.lua, PAIRS_LISTED)
            call = direct.commands.push("boefje", organisation="o", data=boefje_data(f"b{i}", oci_image=IMAGE), priority=10)
            pipe.execute_command(*call.command())
        pipe.execute()
        best = direct.queue("boefje").push(organisation="o", data=boefje_data("b7", oci_image=IMAGE), priority=1)
        assert [t.id for t in direct.queue("boefje").pop(_only("boefje__id", ["b7"]), limit=1)] == [best.id]
        client.close()


async def test_a_boefje_id_beyond_ascii_names_its_pair_alike_in_python_and_lua(queues):
    task = await queues.push("boefje", organisation="o", data=boefje_data("nmap-é日", oci_image=IMAGE), priority=3)
    assert [t.id for t in await queues.pop("boefje", runner_filter(["nmap-é日"], [IMAGE]), limit=1)] == [task.id]
