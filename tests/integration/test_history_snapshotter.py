"""The snapshotter on a real Redis and Postgres: event streams written by hand (as the queue
scripts write them) end up in Postgres, once, through crashes and Postgres outages."""

from __future__ import annotations

import asyncio
import time
import uuid

import msgspec
import pytest
import redis.asyncio as aredis
from psycopg_pool import AsyncConnectionPool

from redisched.queue.layout import QueueLayout
from redisched.history.db import open_pool
from redisched.history.migrate import migrate
from redisched.history.schedules import ScheduleStore
from redisched.history.snapshotter import GROUP, Snapshotter, stream_id, wait_caught_up
from redisched.history.tasks import TaskStore
from redisched.models import TaskStatus, payload_hash
from redisched.queue.commands import QueueCommands
from redisched.queue.keys import QueueKeys
from redisched.queue.queue import TaskQueues
from redisched.queue.records import TaskRecord, encode_record, priority_key

CLOSED_PORT_DSN = "postgresql://postgres@127.0.0.1:1/postgres?connect_timeout=1"


@pytest.fixture(scope="module")
async def dsn(pg_dsn):
    await migrate(pg_dsn)
    return pg_dsn


@pytest.fixture
async def pool(dsn):
    pool = await open_pool(dsn)
    yield pool
    await pool.close()


class ForgetRecorder:
    """Stands in for TaskQueues.forget_finished; can hold the snapshotter right after commit."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[tuple[str, str]]]] = []
        self.hold = asyncio.Event()
        self.held = asyncio.Event()
        self.hold.set()

    async def __call__(self, queue: str, items: list[tuple[str, str]], partition: int = 0) -> int:
        self.held.set()
        await self.hold.wait()
        self.calls.append((queue, items))
        return len(items)


def make_snapshotter(pool, redis, prefix, forget=None, **options) -> Snapshotter:
    return Snapshotter(
        redis,
        TaskStore(pool),
        ScheduleStore(pool, redis, QueueLayout(prefix)),
        layout=QueueLayout(prefix),
        forget=forget,
        block_ms=50,
        pg_timeout=0.3,
        **options,
    )


class Pusher:
    """Writes task versions to a queue's event stream the way the Lua scripts do."""

    def __init__(self, redis, prefix: str, queue: str = "boefje") -> None:
        self.redis, self.keys, self.rev = redis, QueueKeys(prefix, queue), 1_000

    def new(self, **fields) -> TaskRecord:
        task_id, now = str(uuid.uuid4()), int(time.time() * 1_000_000)
        data = {"id": task_id, "boefje": {"id": "dns"}, "input_ooi": f"Hostname|internet|{task_id}", "organization": "o1"}
        return TaskRecord(
            id=task_id, scheduler_id=self.keys.queue_id, organisation="o1", priority="7", status="queued",
            type=self.keys.queue_id, hash=payload_hash("boefje", data), data=msgspec.json.encode(data).decode(),
            created_at=str(now), modified_at=str(now), pk=priority_key(7), **fields,
        )

    async def emit(self, op: str, record: TaskRecord, status: str | None = None, sched: str | None = None) -> TaskRecord:
        self.rev += 1
        record = msgspec.structs.replace(record, status=status or record.status, rev=str(self.rev))
        fields = {"op": op, "rec": encode_record(record)} | ({"sched": sched} if sched else {})
        await self.redis.xadd(self.keys.events, fields)
        return record


async def eventually(check, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while not (result := await check()):
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)
    return result


async def rows(pool, ids) -> list[tuple]:
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT *, data::text FROM tasks WHERE id = ANY(%s) ORDER BY id", [list(ids)])
        return await cursor.fetchall()


async def test_events_reach_postgres_with_their_schedule_and_finished_tasks_leave_redis(pool, async_redis, key_prefix):
    pusher, forget = Pusher(async_redis, key_prefix), ForgetRecorder()
    schedule_id = str(uuid.uuid4())
    task = pusher.new(schedule_id=schedule_id)
    await pusher.emit("push", task, sched="new")
    await pusher.emit("pop", task, "dispatched")
    done = await pusher.emit("patch", task, "completed")
    other = await pusher.emit("push", pusher.new())
    runner = asyncio.create_task(make_snapshotter(pool, async_redis, key_prefix, forget).run())
    try:
        assert await wait_caught_up(async_redis, QueueLayout(key_prefix), timeout=5)
    finally:
        runner.cancel()

    tasks = TaskStore(pool)
    stored = await tasks.get(task.id)
    assert (stored.status, str(stored.schedule_id)) == (TaskStatus.COMPLETED, schedule_id)
    assert (await tasks.get(other.id)).status is TaskStatus.QUEUED
    schedule = await ScheduleStore(pool, async_redis, QueueLayout(key_prefix)).get(schedule_id)
    assert (schedule.hash, schedule.enabled, schedule.deadline_at is not None) == (task.hash, True, True)
    assert forget.calls == [("boefje", [(task.id, done.rev)])]
    keys = QueueKeys(key_prefix, "boefje")
    assert (await async_redis.xpending(keys.events, GROUP))["pending"] == 0


async def test_wait_caught_up_is_bounded_and_true_for_empty_streams(async_redis, key_prefix):
    assert await wait_caught_up(async_redis, QueueLayout(key_prefix), timeout=0.05)
    pusher = Pusher(async_redis, key_prefix, "report")
    await pusher.emit("push", pusher.new())

    started = time.monotonic()
    assert not await wait_caught_up(async_redis, QueueLayout(key_prefix), timeout=0.1)
    assert time.monotonic() - started < 0.5


async def test_a_crash_between_commit_and_ack_replays_to_identical_rows(pool, async_redis, key_prefix):
    pusher, forget = Pusher(async_redis, key_prefix), ForgetRecorder()
    records = [pusher.new() for _ in range(20)]
    for record in records:
        await pusher.emit("push", record)
        await pusher.emit("patch", record, "failed")
    forget.hold.clear()  # the first run stops right after its commit, before acking
    first = asyncio.create_task(make_snapshotter(pool, async_redis, key_prefix, forget, consumer="c1").run())
    await asyncio.wait_for(forget.held.wait(), 5)
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    committed = await rows(pool, [r.id for r in records])
    keys = QueueKeys(key_prefix, "boefje")
    assert len(committed) == 20
    assert (await async_redis.xpending(keys.events, GROUP))["pending"] == 40
    assert await async_redis.hget(keys.meta, "applied") is None

    forget.hold.set()
    second = asyncio.create_task(make_snapshotter(pool, async_redis, key_prefix, forget, consumer="c1").run())
    try:
        assert await wait_caught_up(async_redis, QueueLayout(key_prefix), timeout=5)
    finally:
        second.cancel()

    assert await rows(pool, [r.id for r in records]) == committed
    assert (await async_redis.xpending(keys.events, GROUP))["pending"] == 0
    assert {task_id for _, items in forget.calls for task_id, _ in items} == {r.id for r in records}


async def test_entries_of_a_vanished_consumer_are_claimed(pool, async_redis, key_prefix):
    pusher = Pusher(async_redis, key_prefix)
    record = await pusher.emit("push", pusher.new())
    keys = QueueKeys(key_prefix, "boefje")
    await async_redis.xgroup_create(keys.events, GROUP, id="0", mkstream=True)
    await async_redis.xreadgroup(GROUP, "gone", {keys.events: ">"})  # read, never acked

    runner = asyncio.create_task(make_snapshotter(pool, async_redis, key_prefix, claim_idle_ms=100).run())
    try:
        assert await wait_caught_up(async_redis, QueueLayout(key_prefix), timeout=5)
    finally:
        runner.cancel()
    assert (await TaskStore(pool).get(record.id)).status is TaskStatus.QUEUED


async def test_postgres_down_keeps_events_in_redis_until_it_is_back(dsn, async_redis, key_prefix, caplog):
    target = {"dsn": CLOSED_PORT_DSN}

    async def conninfo() -> str:
        return target["dsn"]

    pool = AsyncConnectionPool(conninfo, min_size=1, timeout=0.3, open=False)
    await pool.open(wait=False)
    pusher = Pusher(async_redis, key_prefix)
    records = [await pusher.emit("push", pusher.new()) for _ in range(30)]
    keys = QueueKeys(key_prefix, "boefje")
    runner = asyncio.create_task(make_snapshotter(pool, async_redis, key_prefix).run())
    try:
        await asyncio.sleep(1.0)
        assert await async_redis.xlen(keys.events) == 30
        assert await async_redis.hget(keys.meta, "applied") is None
        assert sum("Postgres unavailable" in r.message for r in caplog.records) == 1

        target["dsn"] = dsn
        assert await wait_caught_up(async_redis, QueueLayout(key_prefix), timeout=15)
    finally:
        runner.cancel()
        await pool.close()
    check = await open_pool(dsn)
    assert len(await rows(check, [r.id for r in records])) == 30
    await check.close()
    assert any("Postgres back" in r.message for r in caplog.records)


async def test_the_queue_scripts_events_reach_postgres_and_finished_tasks_leave_redis(pool, async_redis, key_prefix):
    """End to end with the real queue core: push (creating a schedule), pop, complete."""
    from redisched.queue.queue import TaskQueues

    queues = TaskQueues(async_redis, QueueLayout(prefix=key_prefix))
    data = {"boefje": {"id": "dns"}, "input_ooi": f"Hostname|internet|{uuid.uuid4().hex}", "organization": "o1"}
    pushed = await queues.push("boefje", organisation="o1", data=data, priority=3)
    [popped] = await queues.pop("boefje")
    await queues.patch(popped.id, {"status": "completed"})
    runner = asyncio.create_task(make_snapshotter(pool, async_redis, key_prefix, queues.forget_finished).run())
    try:
        assert await wait_caught_up(async_redis, QueueLayout(key_prefix), timeout=5)
    finally:
        runner.cancel()

    stored = await TaskStore(pool).get(pushed.id)
    assert (stored.status, str(stored.schedule_id)) == (TaskStatus.COMPLETED, pushed.schedule_id)
    schedule = await ScheduleStore(pool, async_redis, QueueLayout(key_prefix)).get(pushed.schedule_id)
    assert schedule.hash == pushed.hash and schedule.deadline_at is not None
    assert await queues.get(pushed.id) is None


async def test_a_task_popped_running_reaches_postgres_running_then_finished(pool, async_redis, key_prefix):
    """Popped running, and handed out running by a finish and fetch: its rows in Postgres say
    running (never dispatched), then completed, and its history says which call did each."""
    queues = TaskQueues(async_redis, QueueLayout(prefix=key_prefix))
    pushed = []
    for n in range(2):
        data = {"boefje": {"id": "dns"}, "input_ooi": f"Hostname|internet|r{n}{uuid.uuid4().hex}", "organization": "o1"}
        pushed.append(await queues.push("boefje", organisation="o1", data=data, priority=3 + n))

    async def snapshot() -> None:
        runner = asyncio.create_task(make_snapshotter(pool, async_redis, key_prefix, queues.forget_finished).run())
        try:
            assert await wait_caught_up(async_redis, QueueLayout(key_prefix), timeout=5)
        finally:
            runner.cancel()

    [first] = await queues.pop("boefje", limit=1, status="running")
    await snapshot()
    assert (await TaskStore(pool).get(first.id)).status is TaskStatus.RUNNING
    done, [second] = await queues.pop_next(first.id, {"status": "completed"}, None, status="running")
    await snapshot()
    store = TaskStore(pool)
    assert [(await store.get(task.id)).status for task in (first, second)] == [TaskStatus.COMPLETED, TaskStatus.RUNNING]
    assert [(c.op, c.status) for c in await store.history(first.id)] == [
        ("push", "queued"), ("pop", "running"), ("patch", "completed")
    ]
    assert [(c.op, c.status) for c in await store.history(second.id)] == [("push", "queued"), ("pop", "running")]
    assert await queues.get(first.id) is None and (await queues.get(second.id)).status == "running"


async def test_applied_stays_below_an_entry_another_consumer_still_holds(pool, async_redis, key_prefix):
    pusher = Pusher(async_redis, key_prefix)
    for _ in range(3):
        await pusher.emit("push", pusher.new())
    keys = QueueKeys(key_prefix, "boefje")
    await async_redis.xgroup_create(keys.events, GROUP, id="0", mkstream=True)
    [[_, [(held_id, _)]]] = await async_redis.xreadgroup(GROUP, "busy", {keys.events: ">"}, count=1)

    runner = asyncio.create_task(make_snapshotter(pool, async_redis, key_prefix).run())
    try:
        applied = await eventually(lambda: async_redis.hget(keys.meta, "applied"))
        assert stream_id(applied) < stream_id(held_id)
        assert not await wait_caught_up(async_redis, QueueLayout(key_prefix), timeout=0.1)
    finally:
        runner.cancel()


class CountingConnection(aredis.Connection):
    """Counts what it writes to Redis: one command, or one whole pipeline, is one round trip."""

    round_trips = 0

    async def send_packed_command(self, command, check_health: bool = True) -> None:
        type(self).round_trips += 1
        await super().send_packed_command(command, check_health)


@pytest.fixture
async def counted_redis(redis_url):
    connection_class = type("Counted", (CountingConnection,), {"round_trips": 0})
    pool = aredis.BlockingConnectionPool.from_url(redis_url, connection_class=connection_class, max_connections=50)
    client = aredis.Redis(connection_pool=pool)
    yield client, connection_class
    await client.aclose()


async def test_concurrent_waits_for_the_history_share_their_redis_round_trips(counted_redis, async_redis, key_prefix):
    """A listener's prefetched messages each wait for the history: 200 readers waiting
    cost about one pipeline per poll between them, not one each per poll (that crowded the
    loop the snapshotter shares in the worker)."""
    client, counted = counted_redis
    pusher = Pusher(async_redis, key_prefix, "report")
    await pusher.emit("push", pusher.new())  # nothing applies it: every reader times out
    readers = 200
    outcomes = await asyncio.gather(*(wait_caught_up(client, QueueLayout(key_prefix), timeout=0.1) for _ in range(readers)))
    assert outcomes == [False] * readers
    assert counted.round_trips < readers / 2  # each polling alone: at least 2 each


async def test_a_wait_ends_when_its_own_streams_are_caught_up_while_others_still_wait(async_redis, key_prefix):
    report, normalizer = Pusher(async_redis, key_prefix, "report"), Pusher(async_redis, key_prefix, "normalizer")
    await report.emit("push", report.new())
    await normalizer.emit("push", normalizer.new())
    layout = QueueLayout(key_prefix)
    behind = asyncio.create_task(wait_caught_up(async_redis, layout, ("normalizer",), timeout=5))
    on_report = asyncio.create_task(wait_caught_up(async_redis, layout, ("report",), timeout=5))
    [(newest, _)] = await async_redis.xrevrange(report.keys.events, count=1)
    await async_redis.hset(report.keys.meta, "applied", newest)
    assert await asyncio.wait_for(on_report, 2)
    assert not behind.done()
    [(newest, _)] = await async_redis.xrevrange(normalizer.keys.events, count=1)
    await async_redis.hset(normalizer.keys.meta, "applied", newest)
    assert await asyncio.wait_for(behind, 2)


async def test_a_batch_costs_two_redis_round_trips_while_no_task_is_quarantined(counted_redis, async_redis, pool, key_prefix):
    """The read brings the quarantine's size along: with no task held back, a batch is its
    read and its ack (three round trips before: the read, a look at which of its tasks are
    held, the ack). Counted over 10 batches after the snapshotter's start."""
    client, counted = counted_redis
    pusher = Pusher(async_redis, key_prefix)
    batches, batch_size = 10, 20

    async def emit_batches() -> None:
        async with async_redis.pipeline(transaction=True) as pipe:  # one wake-up of the blocked read
            for _ in range(batches * batch_size):
                pusher.rev += 1
                record = msgspec.structs.replace(pusher.new(), rev=str(pusher.rev))
                pipe.xadd(pusher.keys.events, {"op": "push", "rec": encode_record(record)})
            await pipe.execute()

    snapshotter = make_snapshotter(pool, client, key_prefix, queues=("boefje",), batch_size=batch_size)
    snapshotter.block_ms = 10_000  # blocked across the gap: no idle read counted
    runner = asyncio.create_task(snapshotter.run())
    try:
        await emit_batches()
        assert await wait_caught_up(async_redis, QueueLayout(key_prefix), timeout=15)
        started = counted.round_trips
        await emit_batches()
        assert await wait_caught_up(async_redis, QueueLayout(key_prefix), timeout=15)
        used = counted.round_trips - started
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    assert used <= 2 * batches + 1, used  # + 1: the next read, sent or not yet when counted


async def test_the_events_stream_is_trimmed_as_the_snapshotter_acks(pool, async_redis, key_prefix):
    """Redis holds the events Postgres has not applied, not the history: after 1,000 pushes
    are applied the stream keeps at most its last node (stream-node-max-entries, 100 by
    default: XTRIM MINID ~ drops whole nodes). A push event in the stored record's compact
    form (no modified_at and rev: they equal created_at) reaches Postgres in full."""
    pusher = Pusher(async_redis, key_prefix)
    pipe = async_redis.pipeline(transaction=False)
    for _ in range(1_000):
        pusher.rev += 1
        record = msgspec.structs.replace(pusher.new(), rev=str(pusher.rev))
        pipe.xadd(pusher.keys.events, {"op": "push", "rec": encode_record(record)})
    await pipe.execute()
    compact = pusher.new()
    fields = msgspec.json.decode(encode_record(compact))
    assert "m" not in fields  # the event form leaves out modified_at (= created_at)
    await async_redis.xadd(pusher.keys.events, {"op": "push", "rec": msgspec.json.encode(fields)})
    assert await async_redis.xlen(pusher.keys.events) == 1_001
    runner = asyncio.create_task(make_snapshotter(pool, async_redis, key_prefix).run())
    try:
        assert await wait_caught_up(async_redis, QueueLayout(key_prefix), timeout=15)
    finally:
        runner.cancel()
    assert await async_redis.xlen(pusher.keys.events) <= 100
    stored = await TaskStore(pool).get(compact.id)
    assert stored.status is TaskStatus.QUEUED and stored.modified_at == stored.created_at
