"""Scenario 3: Redis goes away under load.

- with AOF (``appendfsync always``): kill -9 and restart on the same folder; nothing lost, no
  reconciliation needed;
- without persistence: kill -9 and restart empty; once the snapshotter had drained,
  ``reconcile`` puts back every live task from Postgres;
- ``FLUSHALL`` on the running server: the same.

The load pauses for the drain before the data loss (reconciliation restores what Postgres has:
a push acknowledged inside the snapshot lag just before the loss would be gone), and resumes
at once afterwards; reconciliation then runs under load."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from redisched.history.reconcile import reconcile
from tests.faults.audit import audit, report
from tests.faults.background import Background
from tests.faults.common import FAIR_LIMITED, layout
from tests.faults.load import DirectRunner, Ledger, Load
from tests.faults.servers import RestartableRedis

pytestmark = pytest.mark.timeout(60, method="thread")

LEASE_MS = 2000


def prefill(runner: DirectRunner, ledger: Ledger, count: int = 300) -> None:
    for _ in range(count):
        task_id = str(uuid.uuid4())
        assert runner.push(task_id) == "ok"
        ledger.pushed[task_id] = time.monotonic()


def scenario(server: RestartableRedis, dsn: str, prefix: str, name: str, lose_data, features=None) -> None:
    ledger = Ledger()
    runner = DirectRunner(server.url, prefix, ledger, lease_ms=LEASE_MS, features=features)
    with Background(server.url, dsn, prefix, lease_ms=LEASE_MS, features=features) as background:
        prefill(runner, ledger)
        # Pops slower than pushes: a backlog of queued tasks builds up to lose.
        load = Load(ledger, runner.push, runner.pop_and_complete, push_rate=150, pop_rate=100, max_seconds=30).start()
        try:
            time.sleep(1.5)
            fault_start = time.monotonic()
            restored = lose_data(load, background, runner)
            fault_end = time.monotonic()
            time.sleep(LEASE_MS / 1000 + 2.5)  # restored leases expire, the tasks are done again
        finally:
            load.stop()
        result = audit(name, ledger, background, server.url, dsn, prefix)
    runner.close()
    if restored is not None:
        result.extra["reconciled"] = restored
    report(result, ledger, fault_start, fault_end, 1)
    assert ledger.ops_between(fault_end, fault_end + 2, "complete") > 0, "the load did not resume"
    result.check()


def test_redis_killed_with_aof_always_loses_nothing(dsn, prefix):
    with RestartableRedis("--appendonly", "yes", "--appendfsync", "always") as server:

        def crash(load: Load, background: Background, runner: DirectRunner) -> None:
            server.kill()
            time.sleep(0.5)
            server.start()

        scenario(server, dsn, prefix, "redis kill -9, AOF always", crash)


def drain_then(load: Load, background: Background, runner: DirectRunner, lose) -> dict:
    """Runners hold tasks across the loss (dispatched in Postgres): after reconciliation their
    tokens are stale (Postgres keeps no token), so those tasks expire and are done again."""
    held = []
    for _ in range(10):
        held.extend(runner.queue.pop(limit=1))
    for record in held:
        runner.ledger.pops[record.id] += 1
        runner.ledger.flight(1)
    load.pause()
    queued = runner.queue.qsize()
    assert background.drained(20), "the snapshotter did not drain before the data loss"
    lose()
    load.resume()
    time.sleep(0.5)
    result = background.call(reconcile(background.queues, background.tasks, background.schedules))
    for record in held:
        runner.complete(record.id, record.lease)
    refused = sum(1 for record in held if runner.ledger.complete_refused[record.id])
    assert result.restored >= queued + len(held), f"restored {result.restored}, expected {queued} queued + {len(held)} held"
    return {"restored": result.restored, "queued_at_loss": queued, "held": len(held), "held_refused_after": refused}


def test_redis_restarted_without_persistence_is_reconciled_from_postgres(private_redis_server, dsn, prefix):
    server = private_redis_server

    def restart_empty() -> None:
        server.kill()
        time.sleep(0.3)
        server.start()
        # Nothing of the queue survived. The snapshotter recreates its consumer groups as soon
        # as Redis answers (XGROUP CREATE MKSTREAM: an empty events stream per queue), so those
        # streams may already be back, empty; any other key would be data that outlived the loss.
        client = server.client()
        streams = {keys.events.encode() for keys in layout(prefix).every()}
        survivors = set(client.keys("*")) - streams
        assert not survivors, f"keys survived a restart without persistence: {sorted(survivors)}"
        assert all(client.xlen(stream) == 0 for stream in streams), "events survived the restart"

    scenario(server, dsn, prefix, "redis restart, no persistence", lambda load, bg, runner: drain_then(load, bg, runner, restart_empty))


@pytest.mark.parametrize("features", [None, FAIR_LIMITED], ids=["plain", "fair-limited"])
def test_flushall_is_reconciled_from_postgres(private_redis_server, dsn, prefix, features):
    """fair-limited: fairness on, a cooldown and a concurrency rule; the audit also holds
    every restored boefje task in its group and each group's count to its leased tasks."""
    server = private_redis_server
    flushall = lambda: server.client().flushall()  # noqa: E731
    name = "redis FLUSHALL" + (", fair and limited" if features else "")
    scenario(server, dsn, prefix, name, lambda load, bg, runner: drain_then(load, bg, runner, flushall), features)


def test_reconcile_under_load_does_not_bring_back_a_task_finished_meanwhile(private_redis_server, dsn, prefix):
    """The race the scenarios above run into, made deterministic: reconciliation reads the live
    tasks from Postgres, and before it restores one, a runner pops and completes it and the
    snapshotter drops it from Redis (it is finished). Redis lacking it must not mean "lost":
    restoring it puts a completed task back in the queue, to be run again."""
    server = private_redis_server
    ledger = Ledger()
    runner = DirectRunner(server.url, prefix, ledger, lease_ms=LEASE_MS)
    with Background(server.url, dsn, prefix, lease_ms=LEASE_MS) as background:
        server.client().flushall()  # Redis lost its data; afterwards work goes on
        task_id = str(uuid.uuid4())
        assert runner.push(task_id) == "ok"
        assert background.drained(10)  # Postgres: queued

        tasks = background.tasks
        read_live = tasks.live

        async def live_then_work_goes_on(scheduler_id):
            found = await read_live(scheduler_id)
            if scheduler_id == "boefje":  # between the read and the restore
                [record] = await background.queues.pop("boefje", limit=1)
                await background.queues.patch(record.id, {"status": "completed"}, token=record.lease)
                for _ in range(500):
                    if not await background.redis.hexists(f"{prefix}:{{boefje}}:tasks", task_id):
                        break
                    await asyncio.sleep(0.01)
            return found

        tasks.live = live_then_work_goes_on
        try:
            result = background.call(reconcile(background.queues, tasks, background.schedules))
        finally:
            tasks.live = read_live
        assert background.drained(10)
        back = server.client().hget(f"{prefix}:{{boefje}}:tasks", task_id)
        print(f"[faults] reconcile vs a task completed meanwhile: restored={result.restored}, "
              f"Redis now holds it: {back is not None}", flush=True)
        assert back is None, f"a task completed after reconcile read Postgres was restored: {back!r}"
        assert result.restored == 0
    runner.close()
