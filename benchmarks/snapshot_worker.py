"""The snapshotter in its own process, timing every event: for each stream entry it applies,
lag = the moment its batch is committed, forgotten and acked − the entry id's time. Used by
bench_snapshot.py; prints "ready" once following, and on SIGTERM (or after --seconds) writes
the lags (ms) as JSON to --out.

    python -m benchmarks.snapshot_worker --redis URL --dsn DSN --prefix P --out lags.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time

import redis.asyncio as aredis

from redisched.history.db import open_pool
from redisched.history.schedules import ScheduleStore
from redisched.history.snapshotter import Snapshotter, stream_id
from redisched.history.tasks import TaskStore
from redisched.queue.commands import QueueCommands
from redisched.queue.layout import QueueLayout
from redisched.queue.queue import TaskQueues


class TimedSnapshotter(Snapshotter):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lags_ms: list[float] = []
        self.batches: list[int] = []

    async def _apply(self, keys, batch) -> None:  # type: ignore[override]
        await super()._apply(keys, batch)
        now_ms = time.time() * 1000
        self.lags_ms.extend(now_ms - stream_id(entry_id)[0] for entry_id, _ in batch.entries)
        self.batches.append(len(batch.entries))


async def main(args: argparse.Namespace) -> None:
    redis = aredis.Redis.from_url(args.redis)
    pool = await open_pool(args.dsn)
    await pool.wait(timeout=10)
    queues = TaskQueues(redis, QueueLayout(prefix=args.prefix))
    snapshotter = TimedSnapshotter(
        redis, TaskStore(pool), ScheduleStore(pool, redis, queues.layout), layout=queues.layout,
        forget=queues.forget_finished, queues=("boefje",), consumer="bench",
    )
    task = asyncio.create_task(snapshotter.run())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    try:
        await asyncio.wait_for(stop.wait(), timeout=args.seconds)
    except TimeoutError:
        pass
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    with open(args.out, "w") as out:
        json.dump({"lags_ms": snapshotter.lags_ms, "batches": snapshotter.batches}, out)
    await pool.close()
    await redis.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--prefix", default="rs")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seconds", type=float, default=120)
    arguments = parser.parse_args()
    try:
        import uvloop

        uvloop.run(main(arguments))
    except ImportError:
        asyncio.run(main(arguments))
    sys.exit(0)
