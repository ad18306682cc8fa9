"""Many processes against one Redis: every task is handed out exactly once (without and with
the fair pop across organisations), and of many concurrent pushes of one hash exactly one wins."""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any

import pytest

from redisched.client import Client
from redisched.errors import Conflict
from redisched.queue.commands import QueueCommands
from tests.conftest import REDIS_URL
from tests.factories import boefje_data, normalizer_data
from tests.integration.conftest import make_layout

TASKS = 20_000
POPPERS = 8


def _pop_until_empty(prefix: str, batch: int, out: mp.Queue, fairness: str = "none") -> None:
    import redis

    queue = Client(redis.Redis.from_url(REDIS_URL), make_layout(prefix, fairness=fairness)).queue("normalizer")
    ids, deadline, empty_in_a_row = [], time.monotonic() + 60, 0
    while time.monotonic() < deadline and empty_in_a_row < 3:
        popped = queue.pop(limit=batch)
        empty_in_a_row = 0 if popped else empty_in_a_row + 1
        ids.extend(r.id for r in popped)
    out.put(ids)


LIMITED_TASKS = 1200  # boefje pops hand out one task each: a pop and a PATCH per task
LIMITS = [{"boefje": "*", "group": "org:{organisation}", "concurrency": 2}]


def _pop_and_finish_limited(prefix: str, out: mp.Queue, ready: Any, fairness: str = "none") -> None:
    import redis

    from redisched.limit_rules import parse_rules

    layout = make_layout(prefix, limits=parse_rules(LIMITS), fairness=fairness)
    client = redis.Redis.from_url(REDIS_URL)
    queue = Client(client, layout).queue("boefje")
    ready.wait(timeout=60)  # all start together: a process slow to spawn on a busy machine still pops
    ids, over, deadline, empty_in_a_row = [], 0, time.monotonic() + 60, 0
    while time.monotonic() < deadline and empty_in_a_row < 20:
        popped = queue.pop(limit=1)
        empty_in_a_row = 0 if popped else empty_in_a_row + 1
        for record in popped:
            held = int(client.hget(layout.of("boefje")[0].limits, f"{record.lg}\0n") or 0)
            over += held > 2
            ids.append(record.id)
            queue.patch(record.id, {"status": "completed"})
    out.put((ids, over))


FINISHING_PROCESSES, FINISHING_WORKERS, FINISHED_TASKS = 4, 10, 3_000


def _finish_and_fetch(prefix: str, out: mp.Queue, ready: Any) -> None:
    """Ten asyncio runners in one process, each: pop once, then PATCH running and pop_next
    (completed + the next task) until the queue is empty; their concurrent pop_next calls
    merge into one script run (queue/pipeliner.py)."""
    import asyncio

    from redisched.client import AsyncClient

    async def main() -> list[str]:
        client = AsyncClient.from_url(REDIS_URL, make_layout(prefix), cluster=False)
        ids: list[str] = []

        async def runner() -> None:
            got = await client.pop("normalizer", None, limit=1)
            while got:
                [task] = got
                ids.append(str(task.id))
                await client.patch(task.id, {"status": "running"}, token=task.lease)
                _, got = await client.pop_next(task.id, {"status": "completed"}, task.lease)

        await asyncio.gather(*(runner() for _ in range(FINISHING_WORKERS)))
        await client.close()
        return ids

    ready.wait(timeout=60)
    out.put(asyncio.run(main()))


def _push_same_hash(prefix: str, data: dict, out: mp.Queue) -> None:
    import redis

    queue = Client(redis.Redis.from_url(REDIS_URL), make_layout(prefix)).queue("boefje")
    try:
        queue.push(organisation="o", data=data, priority=5)
        out.put("won")
    except Conflict:
        out.put("conflict")


def _fill(sync_redis, prefix: str, count: int, fairness: str = "none") -> set[str]:
    commands = QueueCommands(make_layout(prefix, fairness=fairness))
    calls = [
        commands.push("normalizer", organisation=f"org{i % 50}", data=normalizer_data(organization=f"org{i % 50}"),
                      priority=2 + i % 50)
        for i in range(count)
    ]  # fmt: skip
    pushed = set()
    for start in range(0, count, 1000):
        pipe = sync_redis.pipeline(transaction=False)
        chunk = calls[start : start + 1000]
        for call in chunk:
            pipe.eval(call.script.source, len(call.keys), *call.keys, *call.args)
        pushed.update(call.parse(reply).id for call, reply in zip(chunk, pipe.execute()))
    return pushed


def _run(workers: list, out, timeout: float = 120) -> list:
    """Start the processes, take one result from each (bounded), and reap them."""
    for worker in workers:
        worker.start()
    results = [out.get(timeout=timeout) for _ in workers]
    for worker in workers:
        worker.join(timeout=10)
    return results


# With fairness on, 5,000 here to keep the suite short; 20,000 passed the same way (README,
# "Fair pop across organisations").
@pytest.mark.parametrize(("fairness", "tasks"), [("none", TASKS), ("organisation", 5_000)])
def test_eight_processes_popping_twenty_thousand_tasks_get_each_exactly_once(sync_redis, key_prefix, fairness, tasks):
    pushed = _fill(sync_redis, key_prefix, tasks, fairness)
    out = mp.get_context("spawn").Queue()
    workers = [
        mp.get_context("spawn").Process(target=_pop_until_empty, args=(key_prefix, 1 + i % 3, out, fairness))
        for i in range(POPPERS)
    ]
    results = _run(workers, out)
    popped = [task_id for ids in results for task_id in ids]
    assert len(popped) == len(set(popped)), "a task was handed out twice"
    assert set(popped) == pushed, "a task was lost"
    assert all(len(ids) > 0 for ids in results), "a popper got nothing: no real concurrency"


@pytest.mark.parametrize("fairness", ["none", "organisation"])
def test_eight_processes_with_limits_on_get_each_task_once_and_no_group_over_its_cap(sync_redis, key_prefix, fairness):
    from redisched.limit_rules import parse_rules

    layout = make_layout(key_prefix, limits=parse_rules(LIMITS), fairness=fairness)
    queue = Client(sync_redis, layout).queue("boefje")
    pushed = {queue.push(organisation=f"org{i % 10}", data=boefje_data(organization=f"org{i % 10}"), priority=1 + i % 50).id
              for i in range(LIMITED_TASKS)}  # fmt: skip
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    ready = ctx.Barrier(POPPERS)
    workers = [ctx.Process(target=_pop_and_finish_limited, args=(key_prefix, out, ready, fairness)) for _ in range(POPPERS)]
    results = _run(workers, out)
    popped = [task_id for ids, _ in results for task_id in ids]
    assert len(popped) == len(set(popped)), "a task was handed out twice"
    assert set(popped) == pushed, "a task was lost (or stranded in a group)"
    assert sum(over for _, over in results) == 0, "a group held more than its concurrency"
    assert all(ids for ids, _ in results), "a popper got nothing: no real concurrency"


def test_concurrent_pushes_of_one_hash_let_exactly_one_win(key_prefix):
    data = boefje_data()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    workers = [ctx.Process(target=_push_same_hash, args=(key_prefix, data, out)) for _ in range(POPPERS)]
    outcomes = sorted(_run(workers, out, timeout=60))
    assert outcomes == ["conflict"] * (POPPERS - 1) + ["won"]


def test_processes_of_concurrent_finish_and_fetch_runners_get_and_finish_each_task_once(sync_redis, key_prefix):
    pushed = _fill(sync_redis, key_prefix, FINISHED_TASKS)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    ready = ctx.Barrier(FINISHING_PROCESSES)
    workers = [ctx.Process(target=_finish_and_fetch, args=(key_prefix, out, ready)) for _ in range(FINISHING_PROCESSES)]
    results = _run(workers, out)
    popped = [task_id for ids in results for task_id in ids]
    assert len(popped) == len(set(popped)), "a task was handed out twice"
    assert set(popped) == {str(task_id) for task_id in pushed}, "a task was lost"
    assert all(results), "a process got nothing: no real concurrency"
    client = Client(sync_redis, make_layout(key_prefix))
    assert {client.get(task_id).status for task_id in popped} == {"completed"}
